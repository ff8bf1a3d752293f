"""`robust-pt train --base HF_DIR --method lora|prompt|ia3|finetune --task ...`.

Tunes a Hugging Face model (any family robust-pt loads, robust_pt/models/hf/) on a task
through peft and saves it in the standard formats, so the result loads in plain
transformers / peft too:

* finetune: every weight; saved with `save_pretrained` (config.json, model.safetensors)
  together with the base's processor files.
* lora, ia3: peft's LoraConfig / IA3Config on the attention (and, for IA3, feed-forward)
  projections (each family's peft_targets, robust_pt/models/loading.py); prompt: peft's
  PromptTuningConfig where the family declares the task type whose plain-peft forward prepends
  the virtual tokens (HFFamily.prompt_tuning: ViLT as SEQ_CLS, the generative VLMs as CAUSAL_LM;
  BLIP and CLIP declare none, so plain peft would silently ignore the prompts). Saved with the
  PeftModel's `save_pretrained` (adapter_config.json naming the base directory,
  adapter_model.safetensors). The base's VQA head stays frozen (peft's SEQ_CLS keeps a
  copy of it in the adapter; the copy is not trained), so only the method's own
  parameters change.

Each method's part lives in its own module (tuning/<method>.py, `hf=OnHF(...)`; see
tuning/registry.py): its default rate, the options it reads and its peft config (None:
every weight trains); what a method needs from a family (`hf.needs`) and everything that differs
between families (label head, task kinds, ...) are the family's declarations (HFFamily): nothing
here tests a method's or an architecture's name.

Losses, the ones evaluation uses: ViLT and CLIP on closed tasks, cross-entropy over the
task's candidate logits; BLIP and the generative VLMs, the answer (or caption) sequence's token
cross-entropy (the chat-templated prompt is not scored). Generative bases also train on the
shapes pretraining mix (`--task shapes-pretrain`: every example's target is text), as a base.
A family with a label head (ViLT) answers with its id2label: lora / ia3 / prompt keep the
head, train on the examples whose answer it has (at least half of the task's answers must be
among its labels); finetune appends the missing answers to the head (new rows, the known rows
kept: the family class's `grow_head`).
Evaluation after training: the built-in tasks' test split, a real dataset's val split.

robust-pt adds robust_pt.json (method, task, schedule, clean metrics, parameter counts,
the identity that makes a re-run with the same settings reuse the directory); plain
transformers and peft ignore it. AdamW with linear warm-up and cosine decay, as the
built-in tuning (robust_pt/tuning/train.py), in float32.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, ConfigError, TaskError
from ..outputs import require_writable_dir
from . import registry
from .checkpoint import WEIGHTS_SHA, looks_builtin, sha256_file, weights_sha256

#: Default peak learning rate per Hugging Face method (each method's `hf.lr`, tuning/registry.py).
DEFAULT_LR = registry.Live(lambda: {m.name: m.hf.lr for m in registry.hf_methods()})


_SCHEDULE_HEAD = ("method", "steps", "batch_size", "lr", "warmup", "weight_decay")  # then the method's options
_SCHEDULE_TAIL = ("seed", "train_size", "eval_size")


@dataclass(frozen=True)
class HFTrainConfig:
    """Method, its options (`options`: {option: value} or the method's options dataclass; only those it
    reads on Hugging Face bases, `hf.options`, count) and the training schedule."""

    method: str = "lora"
    steps: int = 300
    batch_size: int = 16
    lr: float | None = None  # None: the method's default there (DEFAULT_LR)
    warmup: float = 0.06
    weight_decay: float = 0.01
    seed: int = 0
    train_size: int | None = None  # None: the whole train split
    eval_size: int = 1000
    threads: int | None = None
    device: str = "auto"
    options: Any = None  # None: the method's defaults
    adversarial: Any = None  # an AdversarialConfig (tuning/adversarial.py): tune on the engine's attacks
    noise_sigma: float | None = None  # Gaussian data augmentation (tuning/noise.py)

    def __post_init__(self):
        from .noise import check_sigma

        spec = registry.hf_method(self.method)
        object.__setattr__(self, "noise_sigma", check_sigma(self.noise_sigma, self.adversarial))
        for name in ("steps", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ConfigError(f"{name.replace('_', ' ')} must be a positive integer, got {v!r}")
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"learning rate must be > 0, got {self.lr}")
        opts = self.options
        if opts is None or isinstance(opts, dict):
            opts = spec.make_options(opts)
        elif not isinstance(opts, spec.options):
            raise ConfigError(
                f"options of {self.method} must be a dict or {spec.options.__name__}, got {type(opts).__name__}"
            )
        object.__setattr__(self, "options", opts)

    @property
    def spec(self) -> registry.TuningMethod:
        return registry.get(self.method)

    def method_options(self) -> dict:
        """The options the method reads on Hugging Face bases, with their values (an option it came to read
        later, `hf.later`, only where it is not at its default: checkpoints made before keep their identity)."""
        hf = self.spec.hf
        default = self.spec.make_options({}) if hf.later else None
        return {
            k: getattr(self.options, k)
            for k in hf.options
            if k not in hf.later or getattr(self.options, k) != getattr(default, k)
        }

    def identity(self) -> dict:
        """What makes a re-run reuse the directory: the schedule and the options the method reads."""
        return {
            **{k: getattr(self, k) for k in _SCHEDULE_HEAD},
            **self.method_options(),
            **{k: getattr(self, k) for k in _SCHEDULE_TAIL},
            **({"adversarial": self.adversarial.record()} if self.adversarial is not None else {}),
            **({"noise_sigma": self.noise_sigma} if self.noise_sigma else {}),
        }

    def relevant(self) -> dict:
        """The method and the options it reads: robust_pt.json's `tuning` (as a built-in checkpoint's meta)."""
        return {"method": self.method, **self.method_options()}

    def record(self) -> dict:
        """robust_pt.json's `train`: the identity plus threads and device (and the adversarial settings)."""
        return {**self.identity(), "threads": self.threads, "device": self.device}


def is_hf_dir(path) -> bool:
    """A Hugging Face model or peft adapter directory (not a robust-pt built-in checkpoint)."""
    p = Path(str(path))
    return (
        p.is_dir()
        and not (p / "meta.json").exists()
        and not looks_builtin(p)  # a built-in checkpoint that lost its meta.json
        and any((p / f).exists() for f in ("config.json", "adapter_config.json", "delta_config.json"))
    )


def _check_out(out: Path, identity: dict, overwrite: bool) -> dict | None:
    """The saved meta when `out` already holds this very training run; None when free to write."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise CheckpointError(f"--out {out} is a file; choose a directory")
    side = out / "robust_pt.json"
    if side.exists():
        try:
            meta = json.loads(side.read_text())
        except ValueError:
            meta = {}
        if meta.get("identity") == identity and any(
            (out / f).exists() for f in ("model.safetensors", "adapter_model.safetensors", "delta_model.safetensors")
        ):
            return meta
    if not any(out.iterdir()):
        return None
    known = any(
        (out / f).exists()
        for f in ("robust_pt.json", "config.json", "adapter_config.json", "delta_config.json", "meta.json")
    )
    if not known:
        raise CheckpointError(f"--out {out} is a non-empty directory that holds no checkpoint; choose another --out")
    if not overwrite:
        raise CheckpointError(
            f"--out {out} holds a different checkpoint; pass --overwrite to replace it or choose another --out"
        )
    return None


def _full_method() -> str:
    """The Hugging Face method that trains every weight (finetune)."""
    return next((m.name for m in registry.hf_methods() if m.hf.full), registry.REFERENCE)


def _tunable(arch: str, cfg: HFTrainConfig, net, tok=None):
    """(the module to train, its PeftModel or None): every weight (full), peft's model with the method's
    peft config, or `net` with the method's own modules attached (tuning/<method>.py)."""
    from ..models.hf.delta import context

    hf = cfg.spec.hf
    if hf.full:
        for p in net.parameters():
            p.requires_grad_(True)
        return net, None
    if hf.attach is not None:
        hf.attach(cfg.options, context(arch, net, tok))
        return net, None
    import peft

    pm = peft.get_peft_model(net, hf.peft_config(cfg.options, context(arch, net)))
    for n, p in pm.named_parameters():
        if "modules_to_save" in n:  # peft's SEQ_CLS head copy: kept, not trained
            p.requires_grad_(False)
    return pm, pm


def _loss(model, arch: str, task, batch, answerable, inner=None, step: int = 0, noise=(None, 0)):
    """The batch's training loss (on its adversarial inputs with `inner`, tuning/adversarial.py; on noisy
    ones with noise = (sigma, seed), tuning/noise.py), or None."""
    from ..models.predict import images_of
    from ..tasks.kinds import kind_of
    from .adversarial import adversarial_loss

    if kind_of(task).candidates and not model.trains_on_answer_text:  # a label over the task's answers
        batch = [ex for ex in batch if ex.label >= 0 and answerable[ex.label]]
        if not batch:
            return None
        labels = torch.tensor([ex.label for ex in batch], device=model.device)

        def loss(e):
            return torch.nn.functional.cross_entropy(model.candidate_logits_from_embeds(e, task.answers), labels)
    else:
        targets = [ex.target for ex in batch]

        def loss(e):
            return model.sequence_loss_from_embeds(e, targets).mean()

    from .noise import noisy

    images = noisy(images_of(batch, model.device), noise[0], noise[1], step)
    return adversarial_loss(model, task, inner, batch, images, [ex.text for ex in batch], loss, step)


def _save(tmp: Path, cfg: HFTrainConfig, net, pm, tok, trained: list[str], identity: dict, base_dir: Path) -> None:
    """The tuned model in its format: a peft adapter, a robust-pt delta (models/hf/delta.py) or every weight."""
    if pm is not None:
        pm.save_pretrained(tmp, safe_serialization=True)
    elif cfg.spec.hf.attach is not None:
        from ..models.hf.delta import save_delta

        state = dict(net.named_parameters())
        save_delta(
            {n: state[n] for n in trained},
            tmp,
            method=cfg.method,
            options=cfg.method_options(),
            arch=identity["architecture"],
            base_dir=base_dir,
        )
    else:
        net.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        for f in ("preprocessor_config.json", "processor_config.json", "video_preprocessor_config.json"):
            if (base_dir / f).exists():
                shutil.copy2(base_dir / f, tmp / f)
        _unpin(base_dir, tmp)


def _unpin(base_dir: Path, tmp: Path) -> None:
    """The saved config.json gets back what robust-pt pins at load time (LLaVA-NeXT's tile grid,
    models/hf/llava.py), so that plain transformers reads the finetuned model as the base's kind."""
    base_cfg = json.loads((base_dir / "config.json").read_text())
    if "image_grid_pinpoints" in base_cfg:
        cfg = json.loads((tmp / "config.json").read_text())
        cfg["image_grid_pinpoints"] = base_cfg["image_grid_pinpoints"]
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2))


def check_method(method: str, arch: str, base) -> None:
    """A one-line ConfigError when `method` cannot tune `arch` (before anything is loaded; recipes too):
    its family lacks the capability the method needs (`hf.needs`), or the method's own check refuses."""
    from ..models.loading import hf_families, hf_family

    hf = registry.hf_method(method).hf
    if hf.needs is not None and not getattr(hf_family(arch), hf.needs):
        able = [f.architecture for f in hf_families() if getattr(f, hf.needs)]
        raise ConfigError(
            f"--method {method} supports {', '.join(able)} among Hugging Face bases, not {arch} "
            f"({base}: its family declares no {hf.needs.replace('_', ' ')}); use --method lora or ia3 there"
        )
    if hf.check is not None:
        hf.check(arch)


def _check_base_dir(base, base_dir: Path) -> str:
    """The architecture of a Hugging Face model directory to tune (an adapter or no model: one line)."""
    from ..models.loading import architecture_of, hf_architectures

    if (base_dir / "adapter_config.json").exists():
        raise CheckpointError(
            f"{base} is a peft adapter; train on a model directory ({', '.join(hf_architectures())} saved with "
            f"save_pretrained)"
        )
    if not (base_dir / "config.json").exists():
        raise CheckpointError(f"{base} holds no Hugging Face model (no config.json)")
    return architecture_of(base_dir)


def _fit_head(family, net, task, cfg: HFTrainConfig, task_name: str) -> list[str]:
    """A family with a label head answers with its labels: a full method appends the task's missing
    answers (returned), any other keeps the labels and needs at least half of the task's answers among them."""
    if not family.label_head or not task.answers:
        return []
    if cfg.spec.hf.full:
        return family.model_class.grow_head(net, task.answers)
    from ..models.hf.base import norm_answer

    have = {norm_answer(v) for v in family.model_class.head_labels(net)}
    missing = [a for a in task.answers if norm_answer(a) not in have]
    if len(missing) > len(task.answers) / 2:
        raise ConfigError(
            f"the base's id2label lacks {len(missing)} of the {len(task.answers)} answers "
            f"of {task_name} ({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}); "
            f"{cfg.method} keeps the base's label head, so use --method {_full_method()} (which "
            f"adds them) or a base whose id2label covers them"
        )
    return []


def _fit(model, arch: str, task, cfg: HFTrainConfig, answerable, lr: float) -> list[float]:
    """AdamW with warm-up and cosine decay over `cfg.steps` batches; the losses of the steps that had one."""
    from ..runtime.progress import progress_bar
    from .adversarial import InnerAttack
    from .train import _schedule

    params = [p for p in model.parameters() if p.requires_grad]
    inner = InnerAttack(cfg.adversarial, model, task, cfg.seed) if cfg.adversarial is not None else None
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    sched = _schedule(opt, cfg.steps, cfg.warmup)
    rng = np.random.default_rng(cfg.seed)
    n = len(task)
    bs = min(cfg.batch_size, n)
    order, pos, losses = rng.permutation(n), 0, []
    model.train()
    with progress_bar(f"{cfg.method} {arch} {task.name}", total=cfg.steps, unit="steps") as advance:
        for step in range(cfg.steps):
            if pos + bs > n:
                order, pos = rng.permutation(n), 0
            batch = [task[int(i)] for i in order[pos : pos + bs]]
            pos += bs
            loss = _loss(model, arch, task, batch, answerable, inner, step, (cfg.noise_sigma, cfg.seed))
            if loss is not None:
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                losses.append(float(loss.detach()))
            sched.step()
            advance(1, loss=f"{np.mean(losses[-50:]) if losses else math.nan:.3f}")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return losses


def _clean_metrics(model, task_name: str, cfg: HFTrainConfig, split: str, size: int, resize: str):
    """(clean metrics, examples) after training: on the task's eval split, or, for a base trained on the
    pretraining mix, per downstream task (as the built-in base keeps them); (None, 0) with eval_size 0."""
    from ..models.predict import evaluate_clean
    from ..tasks import load_task
    from ..tasks.named import training_mix
    from .train import DOWNSTREAM

    if not cfg.eval_size:
        return None, 0

    def clean(name: str) -> tuple[dict, int]:
        test = load_task(name, split=split, limit=cfg.eval_size, seed=cfg.seed, size=size, resize=resize)
        return evaluate_clean(model, test, batch_size=32), len(test)

    if training_mix(task_name):  # a base: scored on each downstream task
        return {name: clean(name)[0] for name in DOWNSTREAM}, cfg.eval_size
    return clean(task_name)


def _write(out: Path, meta: dict, save) -> None:
    """save(tmp) then robust_pt.json into a fresh sibling directory, renamed over `out` when complete."""
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        save(tmp)
        meta = {**meta, WEIGHTS_SHA: weights_sha256(tmp)}  # checked when loading (tuning/checkpoint.py)
        (tmp / "robust_pt.json").write_text(json.dumps(meta, indent=1, default=str))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _identity(base_dir: Path, arch: str, task_name: str, cfg: HFTrainConfig) -> dict:
    """What makes a re-run reuse `out`: the base (and its weights' digest), the task and the schedule."""
    weights = base_dir / "model.safetensors"
    return {
        "kind": "hf-tune",
        "architecture": arch,
        "base": str(base_dir),
        "base_sha256": sha256_file(weights) if weights.exists() else None,  # the delta's check: hf/delta.py base_digest
        "task": task_name,
        "config": cfg.identity(),
    }


def _meta(cfg: HFTrainConfig, out: Path, identity: dict, task_name: str, train_task, run: dict) -> dict:
    """robust_pt.json: the method, task, schedule, clean metrics and parameter counts of a finished run."""
    from ..tasks.named import attackable

    losses, trainable, total = run["losses"], run["trainable"], run["total"]
    return {
        "format": "robust-pt-hf/1",
        "method": cfg.method,
        "name": out.name,
        "architecture": identity["architecture"],
        "task": task_name if attackable(task_name) else None,  # a base (a training mix) or a dataset: any task
        "task_spec": task_name,
        "kind": train_task.kind,
        "answers": train_task.answers,
        "base": identity["base"],
        "identity": identity,
        "tuning": cfg.relevant(),
        **({"adversarial": cfg.adversarial.record()} if cfg.adversarial is not None else {}),
        **({"noise_sigma": cfg.noise_sigma} if cfg.noise_sigma else {}),
        "lr": run["lr"],
        "train": cfg.record(),
        "clean_metrics": run["metrics"],
        "eval_split": run["eval_split"],
        "eval_size": run["eval_size"],
        "initial_loss": float(np.mean(losses[:10])) if losses else None,
        "final_loss": float(np.mean(losses[-10:])) if losses else None,
        "answers_added_to_head": run["added"],
        "train_seconds": run["seconds"],
        "trainable_params": trainable,
        "total_params": total,
        "trainable_fraction": trainable / total if total else None,
    }


def train_hf(
    base: str | Path, task_name: str, cfg: HFTrainConfig, out: str | Path, overwrite: bool = False, log=print
) -> dict:
    """Tune the Hugging Face model in `base` on `task_name` with `cfg.method`; save into `out`."""
    from ..models.hf.base import load_transformers, wrap
    from ..models.loading import hf_family
    from ..runtime.devices import resolve_device
    from ..tasks import load_task, named
    from ..tasks.kinds import kind_of
    from ..tasks.named import training_mix

    base_dir, out = Path(base).resolve(), Path(out)
    require_writable_dir(out, "checkpoint directory")  # before the base is read or trained
    arch = _check_base_dir(base, base_dir)
    family = hf_family(arch)
    check_method(cfg.method, arch, base)
    if training_mix(task_name) and not family.generative:
        raise TaskError(
            f"{task_name} is a pretraining mix, which only generative bases train on (every example's "
            f"target is text there); tune {arch} on one task (e.g. shapes-vqa)"
        )
    from .config import with_task_classes

    cfg = with_task_classes(cfg, task_name)
    dev = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    identity = _identity(base_dir, arch, task_name, cfg)
    reused = _check_out(out, identity, overwrite)
    if reused is not None:
        log(f"reusing {out} (same base, task, method and schedule)")
        return reused

    net, tok, ip = load_transformers(base_dir, arch)
    probe = wrap(arch, net, tok, ip, {})
    size, resize = probe.image_size, probe.resize_mode
    train_task = load_task(task_name, split="train", limit=cfg.train_size, seed=cfg.seed, size=size, resize=resize)
    if kind_of(train_task).victim is not None and train_task.kind not in family.task_kinds:
        raise TaskError(
            f"{arch} cannot serve the {train_task.kind} task {train_task.name}; it serves "
            f"{', '.join(family.task_kinds)} tasks"
        )
    from .adversarial import check_task

    cfg.spec.check_task(train_task)
    check_task(cfg.adversarial, train_task)
    added = _fit_head(family, net, train_task, cfg, task_name)
    torch.manual_seed(cfg.seed)
    trained_net, pm = _tunable(arch, cfg, net, tok)
    trained = [n for n, p in net.named_parameters() if p.requires_grad]  # what a delta keeps
    model = wrap(arch, trained_net, tok, ip, {"method": cfg.method})
    model.to(dev)
    answerable = [True] * len(train_task.answers or [])  # a label head: the answers it has
    if family.label_head and train_task.answers:
        answerable = (model.candidate_index(train_task.answers) >= 0).tolist()
    run = {
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "total": sum(p.numel() for p in model.parameters()),
        "lr": cfg.lr or cfg.spec.hf.lr,
        "added": added,
        "eval_split": "test" if named.lookup(task_name) is not None else "val",
    }
    t0 = time.time()
    run["losses"] = _fit(model, arch, train_task, cfg, answerable, run["lr"])
    run["metrics"], run["eval_size"] = _clean_metrics(model, task_name, cfg, run["eval_split"], size, resize)
    run["seconds"] = round(time.time() - t0, 1)
    meta = _meta(cfg, out, identity, task_name, train_task, run)
    model.to("cpu")
    _write(out, meta, lambda tmp: _save(tmp, cfg, net, pm, tok, trained, identity, base_dir))
    return meta
