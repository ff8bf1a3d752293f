"""CLI commands of the attack engine: `robust-pt attack` and `robust-pt list attacks`.

Thin: the options become one EvalRequest (robust_pt/engine/request.py, which checks them), the
work happens in robust_pt.engine.run.execute, and every RobustPTError becomes one line on stderr
and exit code 2.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer

from ..errors import ConfigError, RobustPTError
from .app import app, fail


def default_out(model: str, task: str | None, attack: str, fingerprint: str) -> Path:
    from ..runformat import slug

    return Path("runs") / f"{slug(Path(model).name)}_{slug(task or 'task')}_{slug(Path(attack).stem)}_{fingerprint[:8]}"


@app.command("attack")
def attack_cmd(
    model: str = typer.Option(..., "--model", help="Checkpoint directory (or builtin:NAME)."),
    attack: str = typer.Option(
        ..., "--attack", help="Attack preset name (see `robust-pt list attacks`) or a preset .yaml."
    ),
    task: Optional[str] = typer.Option(None, "--task", help="Task (default: the one the model was tuned on)."),
    eps: Optional[str] = typer.Option(
        None, "--eps", help="Comma-separated eps values, fractions allowed: 1/255,2/255."
    ),
    steps: Optional[int] = typer.Option(None, "--steps", help="Attack iterations (square: query budget)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Attack only the first N examples."),
    batch_size: str = typer.Option(
        "32",
        "--batch-size",
        help="Examples per stored batch (the resume unit), or auto: probed on CUDA, "
        "32 on CPU; an out-of-memory error halves the examples per pass.",
    ),
    attack_batch: str = typer.Option(
        "auto",
        "--attack-batch",
        help="Examples attacked together, or auto: probed for examples per second (at least a batch). "
        "Batches are pooled only where results do not depend on them (backend ours).",
    ),
    nproc: Optional[int] = typer.Option(
        None,
        "--nproc",
        help="Run on N local processes (torch.distributed; launches torchrun's "
        "elastic agent itself). Or start it with torchrun -m robust_pt attack.",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of random starts and library attacks."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Image attacks: ours, torchattacks or foolbox."),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Run directory (default: runs/<model>_<task>_<attack>_<hash>)."
    ),
    split: str = typer.Option("test", "--split", help="Task split."),
    early_stop: Optional[bool] = typer.Option(
        None, "--early-stop/--no-early-stop", help="Stop attacking an example once broken (default: the preset's)."
    ),
    samples: int = typer.Option(8, "--samples", help="Adversarial PNGs saved per eps."),
    queries: Optional[int] = typer.Option(
        None,
        "--queries",
        "--query-budget",
        help="Query budget: square's queries; text and joint attacks' most candidate texts scored per example.",
    ),
    embeddings: Optional[Path] = typer.Option(
        None, "--embeddings", help="textfooler, textbugger: counter-fitted word vectors ('word v1 v2 ...' lines)."
    ),
    mlm: Optional[Path] = typer.Option(
        None, "--mlm", help="bert-attack, bae: a local Hugging Face masked-LM directory."
    ),
    device: str = typer.Option("auto", "--device", help="auto (cuda if available), cpu, cuda or cuda:N."),
    precision: str = typer.Option(
        "auto",
        "--precision",
        help="Hugging Face models on CUDA: auto (bf16 autocast where supported), fp32 or bf16; "
        "images and the eps-ball stay float32.",
    ),
    base: Optional[Path] = typer.Option(
        None,
        "--base",
        help="peft adapter: its base model directory (default: base_model_name_or_path in adapter_config.json).",
    ),
    surrogate: Optional[str] = typer.Option(
        None,
        "--surrogate",
        help="Transfer attack: craft on this checkpoint (A,B: an ensemble, mean of their losses), judge on --model.",
    ),
    target: Optional[str] = typer.Option(
        None, "--target", help="Targeted attack (closed tasks): an answer, random or least-likely."
    ),
    target_text: Optional[str] = typer.Option(None, "--target-text", help="Targeted attack: the caption to produce."),
    target_box: Optional[str] = typer.Option(
        None, "--target-box", help="Targeted attack (grounding): the box x0,y0,x1,y1 (pixels) to produce."
    ),
    sigma: Optional[float] = typer.Option(
        None, "--sigma", help="Randomized smoothing (--attack smoothing): the noise scale sigma."
    ),
    settings: Optional[list[str]] = typer.Option(
        None,
        "--set",
        help="Any setting of the attack's method, KEY=VALUE (repeatable): --set n=1000 --set alpha=0.001.",
    ),
    crafted: Optional[Path] = typer.Option(
        None,
        "--crafted",
        help="With --surrogate: where crafted inputs are kept and reused by every target (default: crafted/ "
        "beside the run directory).",
    ),
):
    """Attack a checkpoint on a task at one or more eps; prints the summary, writes the run dir."""
    from ..engine.request import EvalRequest
    from ..engine.run import execute
    from ..runtime.distributed import place, reports_errors

    where = None
    try:
        where = place()
        if queries is not None and queries <= 0:
            raise ConfigError(f"--queries must be a positive integer, got {queries}")
        ov = {
            "steps": steps,
            "backend": backend,
            "early_stop": early_stop,
            "queries": queries,
            "embeddings": str(embeddings.expanduser().resolve()) if embeddings else None,
            "mlm": str(mlm.expanduser().resolve()) if mlm else None,
            "target": _one_target(target, target_text, target_box),
            "sigma": sigma,
            **_settings(settings or []),
        }
        req = EvalRequest(
            model,
            task,
            attack=attack,
            eps=eps,
            seed=seed,
            out=out,
            batch_size=batch_size,
            attack_batch=attack_batch,
            limit=limit,
            split=split,
            samples=samples,
            device=device,
            precision=precision,
            base=str(base) if base else None,
            nproc=nproc,
            surrogate=surrogate,
            crafted=crafted,
            overrides={k: v for k, v in ov.items() if v is not None},
            flags=True,
        )
        req = _with_default_dirs(req)
        out = req.out
        run = execute(req, progress=True)
    except RobustPTError as err:
        if where is not None and where.distributed and not reports_errors(where):
            raise typer.Exit(2)  # one line per run: local rank 0 prints it
        fail(err)
    except KeyboardInterrupt:
        if where is not None and where.distributed and not reports_errors(where):
            raise typer.Exit(130)  # one line per run: local rank 0 prints it
        interrupted(out)
    if where.distributed and not where.main:
        return  # rank 0 prints the merged summary
    _notes(run, limit)
    first = run.summary.iloc[0]
    how = (f" from {first['surrogate']}" if "surrogate" in first else "") + (
        f" (target {first['target']})" if "target" in first else ""
    )
    print_summary(run.summary, title=f"{first['model']} on {first['task']}: {first['attack']}{how}")
    typer.echo(f"run directory: {run.path}")


def _settings(items: list[str]) -> dict:
    """--set KEY=VALUE ... as overrides (typed and checked against the method's parameters when read)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set takes KEY=VALUE (a setting of the attack's method), got {item!r}")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def _with_default_dirs(req):
    """The request with the CLI's defaults: --out runs/<model>_<task>_<attack>_<hash> (stable per options,
    so re-running the command resumes it) and, for a transfer attack, --crafted crafted/ beside it."""
    from dataclasses import replace

    if req.out is None:
        key = {**req.overrides, **({"base": str(Path(req.base).resolve())} if req.base else {})}
        key.update(_surrogate_key(req.surrogate))
        out = _default_run_dir(
            req.model, req.task, req.attack, req.eps, req.limit, req.batch_size, req.seed, req.split, key
        )
        req = replace(req, out=out, flags=True)  # flags is not stored: errors keep naming --options
    if req.surrogate is not None and req.crafted is None:
        req = replace(req, crafted=Path(req.out).parent / "crafted", flags=True)
    return req


def _one_target(*given) -> str | None:
    """The target of --target, --target-text or --target-box (one of them at most)."""
    got = [g for g in given if g is not None]
    if len(got) > 1:
        raise ConfigError("give one of --target, --target-text and --target-box")
    return got[0] if got else None


def _surrogate_key(surrogate: str | None) -> dict:
    """What the default run directory of a transfer run adds: the surrogates' resolved paths."""
    if surrogate is None:
        return {}
    return {"surrogate": [str(Path(p.strip()).resolve()) for p in surrogate.split(",") if p.strip()]}


def _default_run_dir(model, task, attack, eps, limit, batch_size, seed, split, ov) -> Path:
    """A stable directory per (model, task, attack, options): re-running the command resumes it."""
    from ..store import fingerprint

    if task is None:  # name the directory after the task the checkpoint was tuned on
        try:
            import json

            task = json.loads((Path(model) / "meta.json").read_text()).get("task")
        except (OSError, ValueError):
            try:  # a Hugging Face directory tuned by `robust-pt train`
                task = json.loads((Path(model) / "robust_pt.json").read_text()).get("task")
            except (OSError, ValueError):
                task = None
    key = {
        "model": str(Path(model).resolve()) if Path(model).exists() else model,
        "task": task,
        "attack": attack,
        "eps": eps,
        "limit": limit,
        "batch_size": batch_size,
        "seed": seed,
        "split": split,
        **ov,
    }
    return default_out(model, task, attack, fingerprint(key))


def interrupted(out) -> None:
    """Ctrl-C: what is kept and how to go on (exit 130, the shell's code for SIGINT)."""
    if out is None:
        typer.echo("\ninterrupted before the run started", err=True)
    else:
        typer.echo(
            f"\ninterrupted: the finished batches are kept in {out}; re-run the same command to resume", err=True
        )
    raise typer.Exit(130)


def _notes(run, limit) -> None:
    """What the run did not say by itself: nothing re-attacked, fewer examples than --limit asked for."""
    if run.stats.get("batches_run") == 0 and run.path is not None:
        typer.echo(f"note: {run.path} was already complete; nothing was re-attacked (--out elsewhere to run again)")
    n = int(run.summary["n"].iloc[0]) if len(run.summary) else 0
    if limit is not None and n < limit:
        typer.echo(f"note: --limit {limit} is more than the task's {n} examples; all {n} were used")


def _fmt(v) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:.3f}"
    return str(v)


def _same(summary, a: str, b: str) -> bool:
    """Whether two columns hold the same numbers in every row (NaN where the other is NaN)."""
    import numpy as np

    if a not in summary.columns or b not in summary.columns or not len(summary) or not summary[a].astype(float).any():
        return False
    x, y = summary[a].to_numpy(float), summary[b].to_numpy(float)
    return bool(np.allclose(x, y, atol=1e-12, equal_nan=True))


def _unmeasured(summary, col: str) -> bool:
    """No row measured anything in `col` (absent, NaN or 0 everywhere): shown as nothing, not 0.000."""
    if col not in summary.columns:
        return True
    v = summary[col].astype(float)
    return bool(((v == 0) | v.isna()).all())


def print_summary(summary, title: str = "summary") -> None:
    """The summary DataFrame as a rich table."""
    import sys

    from rich import box
    from rich.console import Console
    from rich.table import Table

    cols = [
        "eps_label",
        "clean",
        "robust",
        "drop",
        "rel_drop",
        "success_rate",
        "mean_linf",
        "mean_l2",
        "n_attacked",
        "mean_steps",
    ]
    cols += [c for c in ("bleu4_clean", "bleu4_robust", "mean_words_changed", "mean_queries") if c in summary.columns]
    if "mean_words_changed" in summary.columns and (summary["kind"] == "text").all():
        cols = [c for c in cols if c not in ("mean_linf", "mean_l2", "mean_steps")]
    if all(_unmeasured(summary, c) for c in ("mean_linf", "mean_l2")):  # text corruptions: no pixel moved
        cols = [c for c in cols if c not in ("mean_linf", "mean_l2")]
    caption = None
    if _same(summary, "rel_drop", "success_rate"):  # a binary verdict: relative drop is the success rate
        cols.remove("rel_drop")
        caption = "succ = rel (relative drop) on a binary metric"
    heads = {
        "mean_words_changed": "words",
        "mean_queries": "queries",
        "eps_label": "eps",
        "rel_drop": "rel",
        "success_rate": "succ",
        "mean_linf": "linf",
        "mean_l2": "l2",
        "n_attacked": "att",
        "mean_steps": "steps",
        "bleu4_clean": "bleu4",
        "bleu4_robust": "bleu4 adv",
    }
    if len(summary):
        title += f" ({summary['metric'].iloc[0]}, n={int(summary['n'].iloc[0])})"
    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD, pad_edge=False)
    cells = [
        [f"{row[c]:.1f}" if c in ("mean_steps", "mean_queries") else _fmt(row[c]) for c in cols]
        for _, row in summary.iterrows()
    ]
    for k, c in enumerate(cols):
        width = max([len(heads.get(c, c))] + [len(r[k]) for r in cells])
        table.add_column(
            heads.get(c, c), justify="left" if c == "eps_label" else "right", no_wrap=True, min_width=width
        )
    for r in cells:
        table.add_row(*r)
    Console(width=None if sys.stdout.isatty() else 140).print(table)


@app.command("list")
def list_cmd(what: str = typer.Argument(..., help="What to list: attacks or recipes.")):
    """List attack presets or experiment recipes, with a one-line description each."""
    try:
        if what == "recipes":
            return _list_recipes()
        if what != "attacks":
            raise ConfigError(f"cannot list {what!r}; use `robust-pt list attacks` or `robust-pt list recipes`")
        from ..attacks import list_presets

        presets = list_presets()
    except RobustPTError as err:
        fail(err)
    from rich.console import Console
    from rich.table import Table

    table = Table(title="attack presets (attacks/*.yaml)")
    for c in ("name", "kind", "norm", "backend", "eps", "description"):
        table.add_column(c)
    from ..runformat import eps_label

    for s in presets:
        eps = ",".join(eps_label(e, s.eps_unit) for e in s.eps)
        table.add_row(s.name, s.kind, s.norm if s.eps_unit != "words" else "words", s.backend, eps, s.description)
    Console(width=200).print(table)


def _list_recipes() -> None:
    from rich.console import Console
    from rich.table import Table

    from ..recipe import list_recipes

    table = Table(title="recipes (recipes/*.yaml)")
    table.add_column("name")
    table.add_column("description")
    for name, desc in list_recipes():
        table.add_row(name, desc)
    Console(width=200).print(table)
