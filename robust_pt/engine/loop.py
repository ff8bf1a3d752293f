"""The evaluation loop: clean pass, attack the survivors, sweep eps, stream records.

    run = evaluate(model, task, attack="pgd", eps=[1/255, 2/255, 4/255, 8/255], seed=0, out="runs/x")
    run.summary   # one row per (model, task, attack, eps)
    run.records   # one row per (example, eps)

The engine knows no attack kind and no task kind. A run is prepared once: the attack's
threat model (attacks/core.py: image, embedding, text, joint, or any registered one)
checks what it needs, the victim (attacks/victim.py: classifier, closed-answer VL,
generative VL) is chosen by model and task, and the sweep (sweep.py) by the threat
model's `nested` and the victim's `binary` declarations. Then for every fixed batch of
examples (deterministic order, so a resumed run meets the same batches) sweep.run_batch
makes the clean pass, perturbs at each eps what the sweep says, lets the victim judge,
and the batch's records for all eps are appended to records.jsonl together (store.py);
an interrupted run resumes at the first batch without records. Random starts, library
attacks and text attacks are seeded per example (attacks/threats.py), so results do not
depend on resuming.

Scale (robust_pt/runtime/distributed.py): under torchrun, or with nproc > 1, rank k of W attacks
the batches b with b % W == k into runs/<id>/shards/rank-K/ and rank 0 merges them into
the single-process records and summary. Examples are generated or read one batch at a
time and a run store with a directory keeps no records in memory, so memory during the
loop does not grow with the number of examples (Run.records, built at the end, does).
An out-of-memory error halves the examples per forward pass (the batch, its seeds and
records stay the same) and retries; batch_size="auto" probes the largest that fits on CUDA.

`evaluate` also accepts any torch image classifier (nn.Module, (N,C,H,W) in [0,1] ->
logits) with `(images, labels)` tensors: they become a small in-memory closed task.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..attacks import Attack, build
from ..attacks.core import threat_model
from ..attacks.threats import derive_seed  # noqa: F401  (re-exported: engine.derive_seed, one definition)
from ..attacks.victim import corpus_summary, make_victim, verdict_traits, victim_class
from ..errors import AttackError, ConfigError, RobustPTError, TaskError
from ..models.base import VLModel
from ..models.predict import images_of
from ..runformat import (
    RECORD_COLUMNS,  # noqa: F401  (re-exported: engine.RECORD_COLUMNS)
    SUMMARY_COLUMNS,
    TEXT_SUMMARY_COLUMNS,
    at_eps,
    eps_label,  # noqa: F401  (re-exported: engine.eps_label)
    eps_stats,
    records_frame,
    rel_drop,
    sample_name,
    sample_tag,
    target_rate,
)
from ..runformat import safe_id as _safe  # noqa: F401
from ..runtime.devices import module_device as _device
from ..runtime.locking import hold
from ..store import RunStore
from ..tasks.base import CLOSED, Example, Task

# oneDNN keeps a compiled primitive per input shape. The engine's batches shrink as examples
# break, so the cache fills with one-off shapes and the process grew with every batch (+50 MB
# over 1024 examples in benchmarks/scale.py); without it memory stays flat at the same speed.
# Read by oneDNN when it first runs, so it only helps a process that has not run a conv yet.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "0")


@dataclass
class Run:
    """The result of `evaluate`: summary and records as DataFrames, plus where they live."""

    summary: Any  # pandas.DataFrame
    records: Any  # pandas.DataFrame
    config: dict
    path: Path | None
    stats: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"Run(path={self.path}, rows={len(self.summary)}, records={len(self.records)})"


# ----------------------------------------------------------------------------- helpers


def state_sha256(module: nn.Module) -> str:
    """sha256 over a module's state dict (names and raw bytes, sorted by name)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _checkpoint_info(path: Path) -> dict:
    from ..tuning import checkpoint as ckpt

    info: dict[str, Any] = {"path": str(path)}
    weights = [f for f in (ckpt.WEIGHTS, "adapter_model.safetensors", "delta_model.safetensors") if (path / f).exists()]
    if weights:  # a built-in or Hugging Face model, a peft adapter, a robust-pt delta on a Hugging Face base
        info["sha256"] = {f: ckpt.sha256_file(path / f) for f in weights}
    for meta_file in (ckpt.META, "delta_config.json"):
        try:
            import json

            meta = json.loads((path / meta_file).read_text())
            if "base" in meta:
                info["base"] = meta["base"]
        except Exception:
            pass
    return info


class TensorTask(Task):
    """An in-memory closed task over (images, labels) for plain image classifiers."""


def tensor_task(images, labels, n_classes: int) -> Task:
    x = torch.as_tensor(images).detach().float().cpu()
    y = torch.as_tensor(labels).detach().long().cpu().reshape(-1)
    if x.dim() != 4:
        raise TaskError(f"images must be a (N, C, H, W) tensor, got shape {tuple(x.shape)}")
    if x.shape[0] != y.shape[0]:
        raise TaskError(f"{x.shape[0]} images but {y.shape[0]} labels")
    if x.numel() and (float(x.min()) < 0 or float(x.max()) > 1):
        raise TaskError("images must lie in [0, 1] (normalise inside the model, not before)")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise TaskError(f"labels must lie in 0..{n_classes - 1} (the classifier has {n_classes} outputs)")
    arr = x.numpy()
    exs = [Example(id=str(i), image=arr[i], text="", target=str(int(y[i])), label=int(y[i])) for i in range(x.shape[0])]
    h = hashlib.sha256(arr.tobytes())
    h.update(y.numpy().tobytes())
    t = TensorTask(
        name="tensors",
        kind=CLOSED,
        split="-",
        metric="accuracy",
        answers=[str(k) for k in range(n_classes)],
        image_size=int(x.shape[-1]),
        _examples=exs,
    )
    t.sha256 = h.hexdigest()  # type: ignore[attr-defined]
    return t


class _Limited(Task):
    """The first `n` examples of another task."""

    def __init__(self, base: Task, n: int):
        super().__init__(
            name=base.name,
            kind=base.kind,
            split=base.split,
            metric=base.metric,
            answers=base.answers,
            image_size=base.image_size,
            seed=base.seed,
        )
        self._base, self._n = base, n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> Example:
        if not 0 <= i < self._n:
            raise IndexError(i)
        return self._base[i]

    def example_scores(self, examples, predictions):
        return self._base.example_scores(examples, predictions)

    def corpus_metrics(self, examples, predictions):
        return self._base.corpus_metrics(examples, predictions)


def _positive_int(name: str, value, error=ConfigError) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) <= 0:
        raise error(f"{name} must be a positive integer, got {value!r}")
    return int(value)


# ----------------------------------------------------------------------------- resolution


def _resolve_model(model, load: dict | None = None) -> tuple[nn.Module, dict, str]:
    """(module, checkpoint info, display name); `load`: device, precision, base for load_model."""
    load = {k: v for k, v in (load or {}).items() if v is not None}
    if isinstance(model, (str, Path)):
        from ..models.loading import load_model
        from ..tuning.checkpoint import checkpoint_dir

        m = load_model(model, **load)
        path = Path(str(model))
        where = checkpoint_dir(model)  # builtin:NAME -> the package's directory, for its hashes
        info = {**_checkpoint_info(where), "path": str(model)} if where.is_dir() else {"path": str(model)}
        name = path.name if path.is_dir() else str(model)
        return m, info, name
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a checkpoint directory or a torch nn.Module, got {type(model).__name__}")
    if isinstance(model, VLModel):
        return model, {}, model.display_name
    return model, {}, type(model).__name__


def _resolve_task(model: nn.Module, task, split: str, limit: int | None, task_seed: int) -> tuple[Task, dict]:
    vl = isinstance(model, VLModel)
    if isinstance(task, (tuple, list)) and len(task) == 2 and not isinstance(task[0], str):
        if vl:
            raise TaskError(
                "a vision-language model needs a task with questions (e.g. shapes-vqa), not (images, labels) tensors"
            )
        images, labels = task
        x = torch.as_tensor(images)
        with torch.no_grad():
            was = model.training
            model.eval()
            n_classes = int(model(x[:1].float().to(_device(model))).shape[-1])
            model.train(was)
        t = tensor_task(images, labels, n_classes)
        if limit is not None:
            t = _Limited(t, min(limit, len(t)))
        return t, {"name": "tensors", "n": len(t), "sha256": t._base.sha256 if isinstance(t, _Limited) else t.sha256}
    if not vl:
        raise TaskError(
            "a plain image classifier is evaluated on (images, labels) tensors: "
            "evaluate(classifier, (images, labels), ...)"
        )
    trained = model.trained_task
    if task is None:
        if not trained:
            raise TaskError(f"model {model.display_name} was not tuned on a task; pass a task (e.g. --task shapes-vqa)")
        task = trained
    if isinstance(task, str):
        from ..tasks import TASKS, load_task

        if task not in TASKS:
            load_task(task, split=split, limit=1)  # raises the one-line "unknown task" error
        if trained and task != trained:
            raise TaskError(
                f"model {model.display_name} was tuned on {trained}, not {task}; attack it on "
                f"--task {trained} or pass a checkpoint tuned on {task}"
            )
        # real datasets are resized as the model's processor does (robust_pt/tasks/formats.py)
        resize = {"resize": model.resize_mode} if ":" in task and getattr(model, "resize_mode", None) else {}
        t = load_task(task, split=split, limit=limit, seed=task_seed, size=model.image_size, **resize)
    elif isinstance(task, Task):
        t = task
        if t.image_size != model.image_size and t.at_size is not None:  # loaded without a size: the model's
            t = t.at_size(model.image_size, getattr(model, "resize_mode", None))
        if trained and t.name != trained:
            raise TaskError(
                f"model {model.display_name} was tuned on {trained}, not {t.name}; attack it on "
                f"{trained} or pass a checkpoint tuned on {t.name}"
            )
        if limit is not None and limit < len(t):
            t = _Limited(t, limit)
    else:
        raise TaskError(f"task must be a task name, a Task or (images, labels) tensors, got {type(task).__name__}")
    kinds = getattr(model, "task_kinds", None)  # Hugging Face models say which task kinds they serve
    if kinds is not None and t.kind not in kinds:
        raise TaskError(
            f"{getattr(model, 'architecture', None) or model.display_name} cannot serve the {t.kind} task "
            f"{t.name}; it serves {', '.join(kinds)} tasks"
        )
    if t.image_size != model.image_size:
        raise TaskError(
            f"task {t.name} has {t.image_size}px images but the model expects {model.image_size}px; "
            f"load it with rpt.load_task({t.name!r}, split={t.split!r}, size={model.image_size}) "
            f"(or without size=: evaluate then uses the model's)"
        )
    if len(t) == 0:
        raise TaskError(f"task {t.name} has no examples")
    return t, {
        "name": t.name,
        "split": t.split,
        "seed": t.seed,
        "n": len(t),
        "image_size": t.image_size,
        "kind": t.kind,
    }


# ----------------------------------------------------------------------------- context


@dataclass
class _Setup:
    """What an evaluation runs, shared by _Prepared and the _Ctx made from it."""

    vl: bool
    task: Task
    attack: Attack
    eps: list[float]
    seed: int
    samples: int


@dataclass
class _Ctx(_Setup):
    """One process's run: the victim, the threat model bound to it, the sweep (sweep.py reads these)."""

    model: nn.Module
    store: RunStore
    device: Any
    victim: Any = None  # attacks.victim.Victim
    bound: Any = None  # attacks.core.Bound
    sweep: Any = None  # sweep.Survivors / WorstSoFar / EveryLevel
    sample_counts: dict = field(default_factory=dict)
    chunk: int | None = None  # examples per pass after an out-of-memory error (None: the whole batch)
    stats: dict = field(
        default_factory=lambda: {
            "grad_evals": 0,
            "fwd_evals": 0,
            "gen_evals": 0,
            "clean_seconds": 0.0,
            "attack_seconds": 0.0,
            "batches_run": 0,
            "examples_run": 0,
        }
    )

    @property
    def early_stop(self) -> bool:
        return bool(self.attack.spec.early_stop and self.victim.early_stop_allowed)

    @property
    def backend(self) -> str:
        return self.attack.spec.backend

    def save_samples(self, eps: float, examples, x0: torch.Tensor, new: dict[int, dict]) -> None:
        if self.samples:
            _save_samples(self, eps, examples, x0, new)


# ----------------------------------------------------------------------------- one batch


def _run_batch(ctx: _Ctx, b: int, start: int, examples: list[Example]) -> tuple[list[dict], int]:
    """All records (every eps) of batch b; also returns how many survive the largest eps (sweep.py)."""
    from .sweep import run_batch

    return run_batch(ctx, b, start, examples)


def _save_samples(ctx: _Ctx, eps: float, examples, x0: torch.Tensor, new: dict[int, dict]) -> None:
    folder = ctx.store.samples_dir()
    if folder is None:
        return
    unit = ctx.attack.spec.eps_unit
    tag = sample_tag(eps, unit)
    if tag not in ctx.sample_counts:
        ctx.sample_counts[tag] = len(list(folder.glob(f"{tag}_*.png")))
    left = ctx.samples - ctx.sample_counts[tag]
    if left <= 0:
        return
    order = sorted(new, key=lambda i: (not new[i]["broken"], i))
    for i in order[:left]:
        adv = new[i]["_adv"]
        if adv is None:
            continue
        name = sample_name(eps, examples[i].id, new[i]["broken"], unit)
        save_triptych(folder / name, x0[i], adv)
        ctx.sample_counts[tag] += 1


def save_triptych(path: Path, clean: torch.Tensor, adv: torch.Tensor) -> None:
    """clean | adversarial | amplified difference, side by side, as a PNG."""
    from PIL import Image

    c = clean.detach().cpu().float().clamp(0, 1)
    a = adv.detach().cpu().float().clamp(0, 1)
    d = a - c
    m = float(d.abs().max())
    amp = 0.5 + d / (2 * m) if m > 0 else torch.full_like(d, 0.5)
    H, W = c.shape[-2:]
    scale = max(1, 128 // max(H, W))
    gap = torch.ones(c.shape[0], H, 2)
    img = torch.cat([c, gap, a, gap, amp.clamp(0, 1)], -1)
    arr = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    if arr.shape[-1] == 1:
        arr = arr[..., 0]
    im = Image.fromarray(arr)
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    im.save(path)


# ----------------------------------------------------------------------------- summary


def summarize(
    records,
    *,
    model: str,
    task: Task,
    attack: Attack,
    eps: list[float],
    seed: int,
    n: int,
    surrogate: str | None = None,
) -> Any:
    """One row per eps from the records (what run.summary holds); the statistics are runformat's.
    `surrogate`: the label of the model(s) a transfer attack crafted on (a `surrogate` column)."""
    import pandas as pd

    spec = attack.spec
    binary, stops = verdict_traits(task)
    text_fields = bool(threat_model(spec.kind).record_fields)
    df = records if isinstance(records, pd.DataFrame) else pd.DataFrame(records)
    rows = []
    for e in eps:
        d = df[at_eps(df["eps"], e)] if len(df) else df
        clean = float(d["clean_score"].mean()) if len(d) else math.nan
        robust = float(d["score"].mean()) if len(d) else math.nan
        st = eps_stats(d, binary)
        rows.append(
            {
                "model": model,
                "task": task.name,
                "attack": spec.name,
                "eps": e,
                "eps_label": eps_label(e, spec.eps_unit),
                "n": len(d),
                "metric": task.metric,
                "clean": clean,
                "robust": robust,
                "drop": clean - robust,
                "rel_drop": rel_drop(clean, robust),
                **{k: st[k] for k in ("success_rate", "mean_linf", "mean_l2", "n_attacked", "n_broken", "mean_steps")},
                "backend": spec.backend,
                "norm": spec.norm,
                "kind": spec.kind,
                "early_stop": bool(spec.early_stop and stops),
                "seed": seed,
            }
        )
        if text_fields:
            rows[-1].update({k: st[k] for k in TEXT_SUMMARY_COLUMNS})
        rows[-1].update(corpus_summary(task, d))
        if surrogate:
            rows[-1]["surrogate"] = surrogate
        if getattr(spec, "target", ""):
            rows[-1].update(target=spec.target, target_success=target_rate(d))
    out = pd.DataFrame(rows)
    cols = SUMMARY_COLUMNS + [c for c in out.columns if c not in SUMMARY_COLUMNS]
    return out[[c for c in cols if c in out.columns]]


# ----------------------------------------------------------------------------- evaluate


def evaluate(
    model,
    task=None,
    attack: str | Path | Attack = "pgd",
    eps=None,
    seed: int = 0,
    out: str | Path | None = None,
    *,
    batch_size: int | str = 32,
    limit: int | None = None,
    split: str = "test",
    task_seed: int = 0,
    samples: int = 8,
    progress: bool = True,
    on_batch: Callable[[int], None] | None = None,
    device=None,
    precision: str | None = None,
    base=None,
    nproc: int | None = None,
    surrogate=None,
    crafted: str | Path | None = None,
    **overrides,
) -> Run:
    """Attack `model` on `task` at every eps; returns a Run (summary, records).

    model: a checkpoint directory, a VLModel, or any torch image classifier.
    task: a task name (loaded at the model's image size), a Task, (images, labels)
      tensors for a classifier, or None for the task the model was tuned on.
    attack: a preset name, a path to a preset file, or an Attack; **overrides
      (steps=, backend=, random_start=, early_stop=, restarts=, queries=, ...) adjust it.
    eps: a number, a list, or a string such as "1/255,2/255"; default: the preset's grid.
    out: a run directory; records stream there and a re-run resumes. None: in memory.
    batch_size: examples per batch (the resume unit), or "auto": probed on CUDA (the largest
      power of two whose forward+backward fits), 32 on CPU, the stored one when resuming.
      An out-of-memory error halves the examples per forward pass and retries the batch.
    on_batch: called with the batch index after each batch is stored (progress hooks;
      raising from it stops the run, which a re-run then resumes).
    device, precision, base: how a checkpoint directory is loaded (robust_pt.load_model):
      auto/cpu/cuda, auto/fp32/bf16, and a peft adapter's base directory.
    nproc: > 1 runs the batches on that many local processes (torch.distributed, one
      shard each, merged into `out`); under torchrun the ranks are found from its variables
      and nproc is left out. See robust_pt/runtime/distributed.py and docs/distributed.md.
    surrogate, crafted: a transfer attack crafted on this model (a directory or module; a list,
      "A,B" or {label: dir}: an ensemble) and judged on `model`; crafted inputs kept in
      `crafted` for every target (robust_pt/attacks/transfer.py).
    """
    from ..outputs import require_writable_dir
    from ..runtime import distributed as dd

    if out is not None:  # before the model, the task or the attack is touched
        require_writable_dir(out, "run directory")
    if crafted is not None and surrogate is not None:
        require_writable_dir(crafted, "crafted-inputs directory", "--crafted")
    if nproc is not None:
        nproc = _positive_int("nproc", nproc)
    where = dd.place()
    args = dict(
        model=model,
        task=task,
        attack=attack,
        eps=eps,
        seed=seed,
        out=out,
        batch_size=batch_size,
        limit=limit,
        split=split,
        task_seed=task_seed,
        samples=samples,
        device=device,
        precision=precision,
        base=base,
        surrogate=surrogate,
        crafted=crafted,
        overrides=overrides,
    )
    if nproc is not None and nproc > 1:
        if where.distributed:
            raise ConfigError("nproc > 1 launches its own processes; under torchrun leave --nproc out")
        return _launch(nproc, **args, progress=progress, on_batch=on_batch)
    if where.distributed:
        return _evaluate_distributed(where, args, progress, on_batch)
    prep = _prepare(**args)
    if prep.out is None:
        return _evaluate_single(prep, progress, on_batch)
    with hold(prep.out):  # one writer per run directory (a second process: LockedError, exit 2)
        return _evaluate_single(prep, progress, on_batch)


@dataclass
class _Prepared(_Setup):
    module: nn.Module
    out: Path | None
    config: dict
    info: dict
    model_name: str
    threat: Any = None  # attacks.core.ThreatModel (a TransferThreat around it for transfer runs)

    @property
    def n(self) -> int:
        return len(self.task)

    @property
    def batch_size(self) -> int:
        return int(self.config["batch_size"])

    def n_batches(self) -> int:
        return math.ceil(self.n / self.batch_size)


def _check_options(seed, batch_size, limit, samples) -> tuple[int, int | str, int | None]:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    if limit is not None:
        limit = _positive_int("limit", limit)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
        raise ConfigError(f"samples must be a non-negative integer, got {samples!r}")
    return int(seed), batch_size, limit


def _run_config(
    module, vl: bool, model_name: str, ckpt_info: dict, task_id: dict, atk, eps_list, batch_size, seed: int
) -> tuple[dict, dict]:
    """The run's config (its fingerprint: model, task, attack identity, eps, batch size, seed) and info."""
    meta = dict(getattr(module, "meta", None) or {}) if vl else {}
    model_id = {
        "name": meta.get("name") if vl else type(module).__name__,
        "class": type(module).__name__,
        "method": meta.get("method"),
        "trained_task": module.trained_task if vl else None,
        "state_sha256": state_sha256(module),
    }
    config = {
        "model": model_id,
        "task": task_id,
        "attack": atk.spec.identity,
        "eps": eps_list,
        "batch_size": batch_size,
        "seed": seed,
    }
    model_meta = {
        k: meta[k]
        for k in (
            "name",
            "method",
            "task",
            "tuning",
            "trainable_params",
            "total_params",
            "trainable_fraction",
            "clean_metrics",
            "identity",  # how the checkpoint was made (base hash, task, tuning, schedule)
        )
        if k in meta
    }
    info = {
        "model_name": model_name,
        "model_meta": model_meta,
        "checkpoint": ckpt_info,
        "attack_preset": atk.spec.to_dict(),
    }
    return config, info


def _prepare(
    *,
    model,
    task,
    attack,
    eps,
    seed,
    out,
    batch_size,
    limit,
    split,
    task_seed,
    samples,
    device,
    precision,
    base,
    overrides,
    surrogate=None,
    crafted=None,
    world: int = 1,
) -> _Prepared:
    """Validate everything, load the model and task, and fix the run's config (no writes)."""
    from ..runtime.distributed import check_world
    from ..runtime.memory import parse_batch_size

    seed, batch_size, limit = _check_options(seed, parse_batch_size(batch_size), limit, samples)
    sources = _surrogate_list(surrogate)
    atk = build(attack, **overrides)
    if sources:
        from ..attacks.transfer import CRAFTING, check_attack

        check_attack(atk.spec, len(sources))
        atk = build(atk, **CRAFTING)
    eps_list = atk.eps_grid(eps)
    module, ckpt_info, model_name = _resolve_model(model, {"device": device, "precision": precision, "base": base})
    vl = isinstance(module, VLModel)
    threat = threat_model(atk.kind)
    threat.check_model(atk, vl, type(module).__name__)
    t, task_id = _resolve_task(module, task, split, limit, task_seed)
    victim = victim_class(module, t)
    threat.check_task(atk, victim, t)
    if atk.spec.target:
        from ..attacks.targeted import check_task as check_target

        if sources:
            raise AttackError("a targeted attack runs white-box here; leave out the surrogate or the target")
        check_target(atk.spec, t)
    if not victim.has_logits and atk.needs_logits:
        raise AttackError(
            f"{atk.describe()} needs logits over candidate answers, which the {t.kind} task {t.name} "
            f"does not have; use pgd, pgd-l2, fgsm, emb-fgsm or emb-pgd with the ours backend"
        )
    check_world(world, len(t))
    out = Path(out) if out is not None else None
    if batch_size == "auto":
        batch_size = _auto_batch_size(module, vl, t, out)

    config, info = _run_config(module, vl, model_name, ckpt_info, task_id, atk, eps_list, batch_size, seed)
    if sources:
        threat = _transfer_threat(threat, sources, module, t, {"device": device, "precision": precision})
        threat.store = _crafted_store(crafted, threat.surrogates, atk, seed, task_id)
        config["surrogates"] = [s.identity() for s in threat.surrogates]
        info["surrogates"] = [s.info for s in threat.surrogates]
    return _Prepared(
        threat=threat,
        module=module,
        vl=vl,
        task=t,
        attack=atk,
        eps=eps_list,
        seed=seed,
        samples=samples,
        out=out,
        config=config,
        info=info,
        model_name=model_name,
    )


def _surrogate_list(surrogate) -> list:
    """The surrogates asked for, as (label or None, source) pairs: None, a path or module, an "A,B"
    string, a list of those, or a {label: source} mapping (labels name them in summaries and reports)."""
    if surrogate is None:
        return []
    if isinstance(surrogate, dict):
        out = [(str(k), v) for k, v in surrogate.items()]
    else:
        items = surrogate if isinstance(surrogate, (list, tuple)) else [surrogate]
        out = []
        for s in items:
            out += [(None, p.strip()) for p in s.split(",") if p.strip()] if isinstance(s, str) else [(None, s)]
    if not out:
        raise ConfigError("surrogate is empty; give one or more checkpoint directories (A or A,B)")
    return out


def _transfer_threat(inner, sources: list, target: nn.Module, t: Task, load: dict):
    """The run's threat model wrapped to craft on the loaded, checked surrogates."""
    from ..attacks.transfer import Surrogate, TransferThreat, check_surrogate, label_of

    surrogates = []
    for label, src in sources:
        module, info, name = _resolve_model(src, load)
        module.eval()  # crafting as judging: no dropout, no batch-norm updates
        identity = (getattr(module, "meta", None) or {}).get("identity")
        info = {**info, **({"identity": identity} if identity else {})}  # how it was made (recipes compare)
        s = Surrogate(module, label or label_of(module, name), state_sha256(module), info)
        check_surrogate(s, target, t, isinstance(target, VLModel))
        surrogates.append(s)
    return TransferThreat(inner, surrogates)


def _jsonable_surrogates(surrogate) -> dict | None:
    """The surrogates as {label: path} for other processes (a module cannot travel: ConfigError)."""
    pairs = _surrogate_list(surrogate)
    if any(not isinstance(src, (str, Path)) for _, src in pairs):
        raise ConfigError("nproc > 1: pass surrogates as checkpoint directories, not modules")
    if not pairs:
        return None
    if all(label is None for label, _ in pairs):
        return [str(src) for _, src in pairs]
    return {label or Path(src).name: str(src) for label, src in pairs}


def _crafted_store(crafted, surrogates: list, atk: Attack, seed: int, task_id: dict):
    """Where crafted inputs are kept: keyed by what crafting depends on (never by the target)."""
    from ..attacks.transfer import CraftedStore, store_key

    return CraftedStore(Path(crafted) if crafted else None, store_key(surrogates, atk.spec.identity, seed, task_id))


def _auto_batch_size(module: nn.Module, vl: bool, t: Task, out: Path | None) -> int:
    """--batch-size auto: the stored one when resuming, probed on CUDA, a default on CPU."""
    from ..runtime import memory
    from ..store import RUN_JSON

    if out is not None and (out / RUN_JSON).exists():
        try:
            import json

            stored = json.loads((out / RUN_JSON).read_text())["config"]["batch_size"]
            if isinstance(stored, int) and stored > 0:
                return stored
        except (OSError, ValueError, KeyError, TypeError):
            pass  # RunStore reports an unreadable run directory
    if _device(module).type != "cuda":
        return memory.CPU_BATCH
    limit = 1 << max(0, (len(t) - 1).bit_length())  # no point probing past the examples
    return memory.probe_batch_size(_fits_fn(module, vl, t), limit=min(limit, 1024))


def _fits_fn(module: nn.Module, vl: bool, t: Task) -> Callable[[int], None]:
    """fits(b): one forward and input-gradient pass on b examples (what an attack step costs)."""
    dev = _device(module)
    pool = [t[i] for i in range(min(len(t), 64))]
    victim = make_victim(module, t, dev, {})

    def fits(b: int) -> None:
        exs = [pool[i % len(pool)] for i in range(b)]
        x = images_of(exs, dev).requires_grad_(True)
        was = module.training
        module.eval()
        try:
            with torch.enable_grad():
                loss = victim.image_objective(exs).loss([x], torch.arange(b, device=dev))[0].float().sum()
                torch.autograd.grad(loss, x)
        finally:
            module.train(was)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    return fits


def _new_ctx(prep: _Prepared, store: RunStore, samples: int) -> _Ctx:
    from .sweep import choose

    ctx = _Ctx(
        model=prep.module,
        vl=prep.vl,
        task=prep.task,
        attack=prep.attack,
        eps=prep.eps,
        seed=prep.seed,
        samples=samples,
        store=store,
        device=_device(prep.module),
    )
    ctx.victim = make_victim(prep.module, prep.task, ctx.device, ctx.stats)
    threat = prep.threat or threat_model(prep.attack.kind)
    ctx.bound = threat.bind(ctx.victim, prep.attack.spec, prep.seed)
    ctx.sweep = choose(threat.nested, ctx.victim.binary, bool(prep.attack.spec.target))  # the sweep, chosen once
    return ctx


def _attack_batch(ctx: _Ctx, b: int, start: int, examples: list[Example]) -> tuple[list[dict], int]:
    """_run_batch, split into smaller forward passes after an out-of-memory error: the
    batch (the resume unit, its seeds and records) stays the same, only the examples per
    pass halve, for this and every later batch. The records keep the unsplit order."""
    from ..runtime.memory import free_memory, is_oom

    while True:
        size = min(ctx.chunk or len(examples), len(examples))
        try:
            recs: list[dict] = []
            surv = 0
            for off in range(0, len(examples), size):
                r, sv = _run_batch(ctx, b, start + off, examples[off : off + size])
                recs += r
                surv += sv
            break
        except Exception as err:  # noqa: BLE001 - only out-of-memory is retried
            if not is_oom(err):
                raise
            free_memory()
            if size <= 1:
                raise AttackError(
                    "out of memory with a single example per pass; use a smaller model, fewer "
                    "restarts or a device with more memory"
                ) from None
            ctx.chunk = size // 2
            ctx.stats["oom_retries"] = ctx.stats.get("oom_retries", 0) + 1
            ctx.stats["pass_size"] = ctx.chunk
            _warn(f"out of memory with {size} examples per pass; retrying batch {b} with {ctx.chunk}")
    if size < len(examples):
        order = {e: k for k, e in enumerate(ctx.eps)}
        recs.sort(key=lambda r: (order[r["eps"]], r["index"]))
    return recs, surv


def _warn(msg: str) -> None:
    import os
    import sys

    if os.environ.get("ROBUST_PT_QUIET") != "1":
        print(f"warning: {msg}", file=sys.stderr)


def _stored_survivors(store: RunStore, eps: float) -> int:
    """Survivors at the last eps among the records an earlier sitting stored (so a resumed run's progress
    line counts the whole run, not this sitting only): not broken there and not wrong before the attack,
    as every sweep's survivors() counts them."""

    def at(r) -> bool:
        e = r.get("eps")
        return isinstance(e, (int, float)) and abs(float(e) - eps) < 1e-12

    return sum(1 for r in store.records if at(r) and r.get("broken_at") is None and r.get("clean_correct") is not False)


def _run_batches(
    ctx: _Ctx,
    todo: list[tuple[int, int]],
    n: int,
    batch_size: int,
    store: RunStore,
    bar_label: str | None,
    total: int,
    done_examples: int,
    hooks: Sequence[Callable[[int], None]],
) -> None:
    """Attack these (batch, start) pairs in order; each batch's records go to `store`."""
    from ..runtime.progress import progress_bar

    module = ctx.model
    t = ctx.task
    was_training = module.training
    module.eval()
    t_start = time.perf_counter()
    bar = progress_bar(bar_label, total=total, unit="examples") if bar_label and todo else nullcontext(None)
    survivors = _stored_survivors(store, ctx.eps[-1]) if bar_label and todo and done_examples else 0
    try:
        with bar as advance:
            if advance is not None and done_examples:
                advance(done_examples, resumed=done_examples)
            for b, s in todo:
                # examples are generated (or read) lazily, one batch at a time
                examples = [t[i] for i in range(s, min(n, s + batch_size))]
                recs, surv = _attack_batch(ctx, b, s, examples)
                store.append_batch(b, recs)
                del recs, examples
                survivors += surv
                ctx.stats["batches_run"] += 1
                ctx.stats["examples_run"] += min(batch_size, n - s)
                if advance is not None:
                    advance(min(batch_size, n - s), survivors=f"{survivors}@{eps_label(ctx.eps[-1])}")
                for hook in hooks:
                    hook(b)
    finally:
        module.train(was_training)
        ctx.stats["wall_seconds"] = time.perf_counter() - t_start


def _finish(prep: _Prepared, store: RunStore, stats: dict) -> Run:
    """Summary from the completed records (sorted by example and eps, so it does not depend
    on which process or run wrote which batch), written to the run directory."""
    frame = records_frame(store.records, prep.model_name, prep.task.name, prep.attack.name)
    surrogate = "+".join(s["label"] for s in prep.config.get("surrogates", [])) or None
    summary = summarize(
        frame,
        model=prep.model_name,
        task=prep.task,
        attack=prep.attack,
        eps=prep.eps,
        seed=prep.seed,
        n=prep.n,
        surrogate=surrogate,
    )
    store.finish(summary.to_dict(orient="records"), stats, summary.to_csv(index=False))
    return Run(summary=summary, records=frame, config=prep.config, path=store.path, stats=dict(stats))


def _evaluate_single(prep: _Prepared, progress: bool, on_batch) -> Run:
    from ..runtime.distributed import merge, shard_dirs

    store = RunStore(prep.out, prep.config, prep.info)
    reorder = bool(store.done)
    if prep.out is not None and shard_dirs(prep.out):  # the shards of an interrupted distributed run
        merge(prep.out)
        store = RunStore(prep.out, prep.config, prep.info)
        reorder = True
    n, bs = prep.n, prep.batch_size
    todo = [(b, s) for b, s in enumerate(range(0, n, bs)) if b not in store.done]
    done_examples = n - sum(min(bs, n - s) for _, s in todo)
    ctx = _new_ctx(prep, store, prep.samples)
    label = f"{prep.model_name} {prep.attack.name} {prep.task.name}" if progress else None
    _run_batches(ctx, todo, n, bs, store, label, n, done_examples, [on_batch] if on_batch is not None else [])
    if prep.out is not None and reorder:  # resumed: put the batches back in order
        merge(prep.out)
        store = RunStore(prep.out, prep.config, prep.info)
    return _finish(prep, store, ctx.stats)


def _merge_stats(all_stats: list[dict]) -> dict:
    out: dict = {}
    for st in all_stats:
        for k, v in st.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[k] = max(out.get(k, 0), v) if k in ("wall_seconds", "pass_size") else out.get(k, 0) + v
    out["world"] = len(all_stats)
    out["ranks"] = all_stats
    return out


def _evaluate_distributed(where, args: dict, progress: bool, on_batch) -> Run:
    """One rank of a torch.distributed run (see robust_pt/runtime/distributed.py for the protocol)."""
    from ..runtime import distributed as dd

    if args["out"] is None:
        raise ConfigError("a distributed run writes its shards to a run directory; pass --out (out=...)")
    created = dd.init(dd.rank_device(args["device"], where))
    locks = ExitStack()  # rank 0: the run directory for the whole run; every rank: its shard while it writes
    try:
        prep = _dist_prepare(where, args)
        done = _dist_open_run(where, prep, locks)
        shard_lock = ExitStack()
        locks.enter_context(shard_lock)
        store = _dist_open_shard(where, prep, shard_lock, done)
        stats = _dist_attack(where, prep, store, shard_lock, done, progress, on_batch)
        return _dist_merge(where, prep, stats)
    finally:
        locks.close()
        dd.finish(created)


def _dist_prepare(where, args: dict) -> _Prepared:
    """1. prepare on every rank; agree on the batch size and the config."""
    from ..runtime import distributed as dd
    from ..runtime.memory import parse_batch_size
    from ..store import fingerprint

    prep, err = None, None
    try:
        prep = _prepare(**{**args, "device": dd.rank_device(args["device"], where)}, world=where.world)
    except RobustPTError as e:
        err = e
    sts = dd.gather(dd.status(err, batch_size=prep.batch_size if prep else None, config=prep.config if prep else None))
    dd.raise_first(sts, where, err)
    assert prep is not None
    auto = parse_batch_size(args["batch_size"]) == "auto"
    if auto:  # every rank probed its own device: the smallest answer fits them all
        prep.config["batch_size"] = min(st["batch_size"] for st in sts)
    configs = [{**st["config"], "batch_size": prep.config["batch_size"]} if auto else st["config"] for st in sts]
    dd.check_config([{"fingerprint": fingerprint(c), "config": c} for c in configs])
    return prep


def _dist_open_run(where, prep: _Prepared, locks: ExitStack) -> set[int]:
    """2. rank 0 locks and opens (or creates) the run directory; the batches it and stale shards hold."""
    from ..runtime import distributed as dd

    err, held = None, []
    if where.main:
        try:
            locks.enter_context(hold(prep.out))
            main = RunStore(prep.out, prep.config, prep.info)
            held = sorted(main.done)
            for r, d in dd.shard_dirs(prep.out):
                if r >= where.world:
                    held += sorted(dd.done_batches(d))
        except RobustPTError as e:
            err = e
    sts = dd.gather(dd.status(err, done=held))
    dd.raise_first(sts, where, err)
    return set(sts[0]["done"])


def _dist_open_shard(where, prep: _Prepared, shard_lock: ExitStack, done: set[int]) -> RunStore:
    """3. every rank locks and opens its shard (resuming it) and says which batches it holds (added to done)."""
    from ..runtime import distributed as dd

    err, store = None, None
    try:
        shard_lock.enter_context(hold(dd.shard_dir(prep.out, where.rank)))
        store = RunStore(dd.shard_dir(prep.out, where.rank), prep.config, {**prep.info, **dd.shard_info(where)})
        store.set_status(**dd.shard_info(where))
    except RobustPTError as e:
        err = e
    sts = dd.gather(dd.status(err, done=sorted(store.done) if store else []))
    dd.raise_first(sts, where, err)
    assert store is not None
    for st in sts:
        done |= set(st["done"])
    return store


def _dist_attack(
    where, prep: _Prepared, store: RunStore, shard_lock: ExitStack, done: set[int], progress: bool, on_batch
) -> dict:
    """4. attack this rank's batches; release the shard; the merged stats of all ranks."""
    from ..runtime import distributed as dd

    n, bs = prep.n, prep.batch_size
    mine = [(b, b * bs) for b in dd.shard(prep.n_batches(), where)]
    todo = [(b, s) for b, s in mine if b not in done]
    total = sum(min(bs, n - s) for _, s in mine)
    done_examples = total - sum(min(bs, n - s) for _, s in todo)
    ctx = _new_ctx(prep, store, dd.sample_quota(prep.samples, where))
    hooks = [h for h in (on_batch, dd.kill_hook(where)) if h is not None]
    label = (
        f"{prep.model_name} {prep.attack.name} {prep.task.name} [rank 0 of {where.world}]"
        if progress and where.main
        else None
    )
    err = None
    try:
        _run_batches(ctx, todo, n, bs, store, label, total, done_examples, hooks)
    except Exception as e:  # noqa: BLE001 - every rank must reach the next collective
        err = e
    shard_lock.close()  # written: rank 0 may now merge and remove the shards
    sts = dd.gather(dd.status(err, stats=ctx.stats))
    dd.raise_first(sts, where, err)
    return _merge_stats([st["stats"] for st in sts])


def _dist_merge(where, prep: _Prepared, stats: dict) -> Run:
    """5. rank 0 merges the shards into the run directory and writes the summary."""
    from ..runtime import distributed as dd

    run, err = None, None
    if where.main:
        try:
            have = dd.merge(prep.out)
            missing = sorted(set(range(prep.n_batches())) - have)
            if missing:
                raise dd.DistributedError(
                    f"batches {missing[:5]} have no records after the merge; run the same command again"
                )
            run = _finish(prep, RunStore(prep.out, prep.config, prep.info), stats)
        except RobustPTError as e:
            err = e
    sts = dd.gather(dd.status(err))
    dd.raise_first(sts, where, err)
    return run if run is not None else load_run(prep.out)


def _launch(
    nproc: int,
    *,
    model,
    task,
    attack,
    eps,
    seed,
    out,
    batch_size,
    limit,
    split,
    task_seed,
    samples,
    progress,
    on_batch,
    device,
    precision,
    base,
    overrides,
    surrogate=None,
    crafted=None,
) -> Run:
    """evaluate(..., nproc=N) outside torchrun: start N local ranks, then read the merged run."""
    from ..runtime import distributed as dd

    if out is None:
        raise ConfigError("nproc > 1 writes each process's shard to a run directory; pass --out (out=...)")
    if on_batch is not None:
        raise ConfigError("on_batch cannot reach other processes; leave it out with nproc > 1")
    if limit is not None:
        dd.check_world(nproc, _positive_int("limit", limit))
    if isinstance(attack, Attack):
        raise ConfigError("nproc > 1: pass the attack as a preset name or file, not an Attack object")
    dd.launch(
        nproc,
        dict(
            model=model,
            task=task,
            attack=attack,
            eps=eps,
            seed=seed,
            out=str(out),
            batch_size=batch_size,
            limit=limit,
            split=split,
            task_seed=task_seed,
            samples=samples,
            progress=progress,
            device=device,
            precision=precision,
            base=base,
            surrogate=_jsonable_surrogates(surrogate),
            crafted=str(crafted) if crafted else None,
            **overrides,
        ),
    )
    return load_run(out)


def load_run(path: str | Path) -> Run:
    """A completed run directory as a Run (summary, records, config, stats)."""
    import pandas as pd

    from ..store import read_run

    meta, recs = read_run(path)
    if meta.get("status") != "complete":
        raise ConfigError(f"{path} holds an unfinished run; run the same command again to complete it")
    cfg = meta["config"]
    summary = pd.DataFrame(meta["summary"])
    frame = records_frame(recs, meta.get("model_name", ""), cfg["task"]["name"], cfg["attack"]["name"])
    return Run(summary=summary, records=frame, config=cfg, path=Path(path), stats=dict(meta.get("stats", {})))
