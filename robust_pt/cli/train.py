"""CLI commands that make and inspect checkpoints: pretrain, train, eval, demo."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import RobustPTError
from .app import app, fail

# --adversarial and its settings, shared by `pretrain` and `train` (tuning/adversarial.py): (parameter, type, help)
ADV_OPTIONS = (
    (
        "adversarial",
        str,
        "Train on adversarial inputs made by this gradient attack preset: pgd (PGD-AT), fgsm (FGSM-RS, fast "
        "adversarial training), pgd-l2, apgd-ce, emb-pgd (the paper's embedding threat), ...",
    ),
    ("adv_eps", str, "With --adversarial: the ball, e.g. 4/255 (the preset's unit)."),
    ("adv_steps", int, "With --adversarial: attack steps (default: the preset's)."),
    ("adv_step_size", str, "With --adversarial: step size (default 2.5 eps / steps; FGSM-RS: 1.25 eps)."),
    ("adv_loss", str, "With --adversarial: ce (PGD-AT) or trades (tasks with candidate answers)."),
    ("adv_beta", float, "With --adv-loss trades: the KL term's weight (default 6)."),
    ("adv_ratio", float, "With --adversarial: the share of each batch attacked (default 1)."),
)


def _adv_params() -> list:
    import inspect

    return [
        inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=typer.Option(None, help=text), annotation=Optional[typ]
        )
        for name, typ, text in ADV_OPTIONS
    ]


def adversarial_config(options: dict):
    """The AdversarialConfig the --adversarial / --adv-* options give (popped from `options`), or None; one
    line for a setting without --adversarial or --adversarial without --adv-eps."""
    from ..errors import ConfigError
    from ..tuning.adversarial import AdversarialConfig

    given = {name: options.pop(name, None) for name, _, _ in ADV_OPTIONS}
    attack = given.pop("adversarial")
    settings = {k[len("adv_") :]: v for k, v in given.items() if v is not None}
    if attack is None:
        if settings:
            flags = ", ".join(f"--adv-{k.replace('_', '-')}" for k in settings)
            raise ConfigError(
                f"{flags} only apply to adversarial training; add --adversarial ATTACK (e.g. pgd) or drop them"
            )
        return None
    if "eps" not in settings:
        raise ConfigError(f"--adversarial {attack} needs --adv-eps, the ball to train in (e.g. 4/255)")
    return AdversarialConfig(attack, **settings)


class _Command:
    """A command whose parameters are built when the command line is parsed (`signature()`), then `run(**kw)`."""

    def __init__(self, name: str, signature, run, doc: str):
        self.__name__, self._signature, self._run, self.__doc__ = name, signature, run, doc

    @property
    def __signature__(self):
        return self._signature()

    @property
    def __annotations__(self):
        return {p.name: p.annotation for p in self._signature().parameters.values()}

    def __call__(self, **kwargs):
        return self._run(**kwargs)


def _pretrain_signature():
    import inspect

    def opt(name, annotation, default):
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)

    return inspect.Signature(
        [
            opt("out", Path, typer.Option(..., help="Output checkpoint directory.")),
            opt("preset", str, typer.Option("small", help="Model size: tiny or small.")),
            opt(
                "arch",
                str,
                typer.Option(
                    "ofa",
                    help="ofa: the miniature OFA on the multi-task mix; clip: the miniature CLIP, contrastively "
                    "on ShapesWorld image-caption pairs (builtin:clip-small).",
                ),
            ),
            opt(
                "init",
                Optional[str],
                typer.Option(None, help="Continue from this pretrained base (e.g. builtin:base-small; its size)."),
            ),
            opt("steps", int, typer.Option(12000, help="Optimisation steps.")),
            opt("batch_size", int, typer.Option(64)),
            opt("lr", Optional[float], typer.Option(None, help="Peak learning rate (default 1e-3).")),
            opt("seed", int, typer.Option(0)),
            opt("threads", int, typer.Option(2, help="torch threads.")),
            opt("eval_size", int, typer.Option(300, help="Validation examples per downstream task.")),
            opt("overwrite", bool, typer.Option(False, help="Replace a different checkpoint in --out.")),
            *_adv_params(),
        ]
    )


def _pretrain(out, preset, arch, init, steps, batch_size, lr, seed, threads, eval_size, overwrite, **adv):
    from ..errors import ConfigError
    from ..outputs import require_writable_dir
    from ..tuning.clip_pretrain import pretrain_clip
    from ..tuning.config import TrainConfig
    from ..tuning.train import pretrain as run_pretrain

    try:
        if arch not in ("ofa", "clip"):
            raise ConfigError(f"unknown --arch {arch!r}; choose ofa or clip")
        require_writable_dir(out, "checkpoint directory")
        adversarial = adversarial_config(adv)
        if arch == "clip":
            tc = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed, threads=threads)
            meta = pretrain_clip(
                out, preset, tc, overwrite=overwrite, eval_size=eval_size, init=init, adversarial=adversarial
            )
        else:
            meta = run_pretrain(
                out,
                preset,
                TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed, threads=threads),
                overwrite=overwrite,
                eval_size=eval_size,
                init=init,
                adversarial=adversarial,
            )
    except RobustPTError as err:
        fail(err)
    _print_metrics(
        {f"base ({k})": {"method": "pretrain", "task": k, "clean_metrics": v} for k, v in meta["clean_metrics"].items()}
    )


pretrain = app.command("pretrain")(
    _Command(
        "pretrain",
        _pretrain_signature,
        _pretrain,
        "Pretrain the built-in miniature OFA on the multi-task ShapesWorld mix (--adversarial: a robust base).",
    )
)


def _train_signature():
    """`train`'s parameters: the shared ones, then every registered tuning method's options
    (tuning/registry.py; a bool option is a --x/--no-x flag). Rebuilt each time the command line is
    parsed, so a method registered later (a plugin, a test) has its options too. An option two
    methods share with different defaults defaults to None: each method's own."""
    import inspect

    from ..tuning import registry

    def opt(name, annotation, option):
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)

    builtin, hf = [m.name for m in registry.builtin_methods()], [m.name for m in registry.hf_methods()]
    params = [
        opt(
            "base",
            str,
            typer.Option(
                ...,
                help="Base checkpoint dir (or builtin:base-small), or a Hugging Face "
                "model directory (ViLT, BLIP, CLIP, LLaVA, LLaVA-NeXT, PaliGemma, Idefics3, Qwen2-VL; tuned "
                "through peft).",
            ),
        ),
        opt("task", str, typer.Option(..., help="Downstream task, e.g. shapes-vqa or vqav2:DIR.")),
        opt("method", str, typer.Option("prompt", help=f"{_either(builtin)}; Hugging Face bases: {_either(hf)}.")),
        opt("out", Path, typer.Option(..., help="Output checkpoint directory.")),
    ]
    for name, (typ, default, owners, text) in _method_options().items():
        decls = (f"--{name.replace('_', '-')}/--no-{name.replace('_', '-')}",) if typ is bool else ()
        params.append(
            opt(
                name,
                typ if default is not None else Optional[typ],
                typer.Option(
                    default, *decls, help=f"{', '.join(owners)}: {text}" if text else f"({', '.join(owners)})"
                ),
            )
        )
    params += [
        opt("steps", int, typer.Option(600)),
        opt("batch_size", int, typer.Option(64)),
        opt("lr", Optional[float], typer.Option(None, help="Peak learning rate (default per method).")),
        opt("train_size", int, typer.Option(20000)),
        opt("eval_size", int, typer.Option(1000)),
        opt("seed", int, typer.Option(0)),
        opt("threads", int, typer.Option(2)),
        opt("overwrite", bool, typer.Option(False, help="Replace a different checkpoint in --out.")),
        opt("device", str, typer.Option("auto", help="Hugging Face bases: auto, cpu, cuda or cuda:N.")),
        opt(
            "noise_sigma",
            Optional[float],
            typer.Option(
                None,
                help="Train on x + N(0, sigma^2) (Gaussian data augmentation, for randomized smoothing: "
                "--attack smoothing --sigma at the same value); every method, not with --adversarial.",
            ),
        ),
        *_adv_params(),
    ]
    return inspect.Signature(params)


def _either(names: list[str]) -> str:
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else "".join(names)


def _method_options() -> dict:
    """{option: (type, CLI default, [methods that take it], help)} over the registered methods, in order."""
    from dataclasses import MISSING, fields

    from ..tuning import registry

    out: dict = {}
    for m in registry.methods():
        types = registry.option_types(m.options)
        for f in fields(m.options):
            default = f.default if f.default is not MISSING else f.default_factory()
            if f.name not in out:
                out[f.name] = (types[f.name], default, [m.name], f.metadata.get("help", ""))
            else:
                typ, d, owners, text = out[f.name]
                out[f.name] = (typ, d if d == default else None, owners + [m.name], text or f.metadata.get("help", ""))
    return out


def _train(
    base: str,
    task: str,
    method: str,
    out: Path,
    steps: int,
    batch_size: int,
    lr: Optional[float],
    train_size: int,
    eval_size: int,
    seed: int,
    threads: int,
    overwrite: bool,
    device: str,
    **options,
):
    from ..outputs import require_writable_dir
    from ..tuning import registry
    from ..tuning.config import TrainConfig, TuningConfig
    from ..tuning.hf_train import is_hf_dir
    from ..tuning.train import tune

    noise_sigma = options.pop("noise_sigma", None)  # checked where it is used: tune() and HFTrainConfig
    try:
        require_writable_dir(out, "checkpoint directory")  # before the base is read or trained
        adversarial = adversarial_config(options)
    except RobustPTError as err:
        fail(err)

    def own(names) -> dict:  # the chosen method's options (None: not given, the method's default)
        return {k: options[k] for k in names if options.get(k) is not None}

    schedule = dict(
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        train_size=train_size,
        eval_size=eval_size,
        threads=threads,
    )  # the same on both paths
    if is_hf_dir(base):
        from ..tuning.hf_train import HFTrainConfig, train_hf

        try:
            spec = registry.hf_method(method)
            cfg = HFTrainConfig(
                method=method,
                **schedule,
                device=device,
                options=own(spec.hf.options),
                adversarial=adversarial,
                noise_sigma=noise_sigma,
            )
            meta = train_hf(base, task, cfg, out, overwrite=overwrite)
        except RobustPTError as err:
            fail(err)
        _print_metrics({str(out): meta})
        return
    try:
        spec = registry.builtin_method(method)
        tcfg = TuningConfig(method, **own(spec.option_names))
        meta = tune(
            base, task, tcfg, TrainConfig(**schedule), out, overwrite=overwrite, adversarial=adversarial,
            noise_sigma=noise_sigma,
        )  # fmt: skip
    except RobustPTError as err:
        fail(err)
    _print_metrics({str(out): meta})


train = app.command("train")(
    _Command(
        "train",
        _train_signature,
        _train,
        "Tune a base checkpoint on one task with one method; writes a checkpoint directory.\n\n"
        "Each method reads its own options (--prompt-length, --adapter-dim, ...) and ignores the others'; "
        "--adversarial ATTACK tunes on that attack's adversarial inputs (every method).",
    )
)


@app.command("eval")
def eval_(
    model: str = typer.Option(..., help="Checkpoint directory."),
    task: Optional[str] = typer.Option(None, help="Task (default: the one it was tuned on)."),
    split: str = typer.Option("test"),
    limit: Optional[int] = typer.Option(None),
    seed: int = typer.Option(0),
    batch_size: int = typer.Option(128),
):
    """Print the clean metric of a checkpoint on a task."""
    from ..api import load_model, load_task
    from ..errors import TaskError
    from ..models.predict import evaluate_clean

    try:
        m = load_model(model)
        name = task or m.meta.get("task")
        if not name:
            raise TaskError(f"{model} was not tuned on a task; pass --task")
        t = load_task(
            name,
            split=split,
            limit=limit,
            seed=seed,
            size=m.image_size,
            **({"resize": m.resize_mode} if ":" in name and getattr(m, "resize_mode", None) else {}),
        )
        metrics = evaluate_clean(m, t, batch_size=batch_size)
    except RobustPTError as err:
        fail(err)
    _print_metrics({model: {**m.meta, "task": name, "clean_metrics": metrics}})


@app.command()
def demo(
    out: Path = typer.Option(Path("reports/demo"), help="Where the demo report goes."),
    zoo_only: bool = typer.Option(False, help="Only build the checkpoints and print their clean metrics."),
):
    """Run recipes/demo.yaml: build or reuse the demo checkpoints, attack them, write the report."""
    import time

    from ..recipe import check_outputs, load_recipe, run_recipe
    from ..tuning.zoo import build_zoo

    t0 = time.time()
    try:
        recipe = load_recipe("demo")
        check_outputs(recipe, None if zoo_only else out)  # before any checkpoint is built
        _print_metrics({d.name: meta for d, meta in build_zoo(recipe).values()})
        print(f"[demo] checkpoints ready after {time.time() - t0:.0f} s", flush=True)
        if not zoo_only:
            run_recipe(recipe, out)
            print(f"[demo] total {time.time() - t0:.0f} s, tuning included", flush=True)
    except RobustPTError as err:
        fail(err)


@app.command("run")
def run(
    recipe: str = typer.Argument(..., help="A recipe file, or the name of a shipped one (see `list recipes`)."),
    out: Optional[Path] = typer.Option(None, help="Report directory (default reports/<recipe name>)."),
    only: Optional[str] = typer.Option(
        None,
        help="Comma-separated tuning entries: tune and attack only these; the report holds every run "
        "of the recipe already in the report directory (add a method without rebuilding the others).",
    ),
):
    """Run a recipe: tune what is missing, attack everything (resumable), write the report."""
    from ..recipe import run_recipe

    try:
        run_recipe(recipe, out, only=None if only is None else [n.strip() for n in only.split(",") if n.strip()])
    except RobustPTError as err:
        fail(err)
    except KeyboardInterrupt:
        typer.echo("\ninterrupted: finished checkpoints and attack batches are kept; re-run the same command "
                   "to resume", err=True)  # fmt: skip
        raise typer.Exit(130)


def _print_metrics(rows: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    def _flat(clean: dict) -> dict:  # a base pretrained on the mix keeps metrics per downstream task
        return {f"{k} {m}" if isinstance(v, dict) else k: x for k, v in clean.items()
                for m, x in (v.items() if isinstance(v, dict) else [(k, v)])}  # fmt: skip

    table = Table(title="clean metrics on the test split")
    for col in ("checkpoint", "method", "task", "metrics", "vs finetune", "trainable", "train s"):
        table.add_column(col)
    from ..tuning.registry import REFERENCE

    finetuned = {m.get("task"): m.get("clean_metrics") or {} for m in rows.values() if m.get("method") == REFERENCE}
    for name, meta in rows.items():
        clean = _flat(meta.get("clean_metrics") or {})
        n = meta.get("eval_size")
        metrics = ", ".join(f"{k}={v:.3f}" for k, v in clean.items()) + (f" (n={n})" if n else "")
        ref = finetuned.get(meta.get("task"), {})
        gap = ", ".join(f"{100 * (v - ref[k]):+.1f} pts" for k, v in clean.items() if k in ref)
        frac = meta.get("trainable_fraction")
        table.add_row(
            str(name),
            str(meta.get("method", "")),
            str(meta.get("task", "")),
            metrics,
            "" if meta.get("method") == REFERENCE else gap,
            "" if frac is None else f"{meta['trainable_params']:,} ({100 * frac:.2f}%)",
            str(meta.get("train_seconds", "")),
        )
    Console(width=max(120, Console().width)).print(table)


import_app = typer.Typer(no_args_is_help=True, help="Turn checkpoints made by other tools into robust-pt ones.")
app.add_typer(import_app, name="import")


@import_app.command("coop")
def import_coop_cmd(
    checkpoint: Path = typer.Argument(..., help="A CoOp prompt learner saved by Dassl (model.pth.tar-N)."),
    base: Path = typer.Option(..., help="The Hugging Face CLIP directory it was trained on."),
    out: Path = typer.Option(..., help="Output directory (a CoOp delta on --base)."),
    position: str = typer.Option("end", help="Where its class token went: end, middle or front (CoOp's default end)."),
):
    """Import a CoOp context (read with torch.load(weights_only=True) only) onto a Hugging Face CLIP."""
    from ..tuning.coop_import import import_coop

    try:
        meta = import_coop(checkpoint, base, out, position)
    except RobustPTError as err:
        fail(err)
    typer.echo(f"wrote {out}: CoOp context of {meta['tuning']['coop_context']} tokens on {base}")
