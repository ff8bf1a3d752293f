"""Prepare a run once: resolve the model and the task, build and check the attack, fix the
run's config (its fingerprint) and info, and load the surrogates of a transfer attack.

Why: everything here happens before the first batch and writes nothing, so a bad request
stops with one line before a run directory exists; what it returns (Prepared) is what every
process of the run attacks with (loop.py, distributed.py). `run_config` is the one place that
builds run.json's config and info.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import torch
from torch import nn

from ..attacks import Attack, build
from ..attacks.core import threat_model
from ..attacks.declarations import declarations
from ..attacks.victim import make_victim, victim_class
from ..errors import AttackError, ConfigError, TaskError
from ..models.base import VLModel
from ..models.predict import images_of
from ..runtime.devices import module_device as _device
from ..tasks.base import Example, Task
from ..tasks.kinds import refusal
from ..tasks.open_classes import other_classes
from .request import EvalRequest, surrogate_list

# ----------------------------------------------------------------------------- what a run attacks with


@dataclass
class Setup:
    """What an evaluation runs, shared by Prepared and the loop's Ctx made from it."""

    vl: bool
    task: Task
    attack: Attack
    eps: list[float]
    seed: int
    samples: int


@dataclass
class Prepared(Setup):
    module: nn.Module
    out: Path | None
    config: dict
    info: dict
    model_name: str
    threat: Any = None  # attacks.core.ThreatModel (a TransferThreat around it for transfer runs)
    attack_batch: int | str = "auto"  # examples attacked together (loop.window_size); not in the fingerprint

    @property
    def n(self) -> int:
        return len(self.task)

    @property
    def batch_size(self) -> int:
        return int(self.config["batch_size"])

    def n_batches(self) -> int:
        return math.ceil(self.n / self.batch_size)


# ----------------------------------------------------------------------------- fingerprints


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
            meta = json.loads((path / meta_file).read_text())
            if "base" in meta:
                info["base"] = meta["base"]
        except Exception:
            pass
    return info


_MODEL_META = (
    "name",
    "method",
    "task",
    "tuning",
    "trainable_params",
    "total_params",
    "trainable_fraction",
    "clean_metrics",
    "identity",  # how the checkpoint was made (base hash, task, tuning, schedule)
    "adversarial",  # adversarially tuned: the settings (tuning/adversarial.py)
    "tuned_from",  # the built-in base it was tuned from, as given (builtin:base-small-robust, ...)
    "base_adversarial",  # that base's own adversarial settings (a robust base)
    "noise_sigma",  # tuned on noisy inputs (tuning/noise.py): its sigma
    "train_seconds",
)


def run_config(
    module, vl: bool, model_name: str, ckpt_info: dict, task_id: dict, atk, eps_list, batch_size, seed: int
) -> tuple[dict, dict]:
    """run.json's config (the run's fingerprint: model, task, attack identity, eps, batch size, seed;
    byte-identical for the same inputs, so a run resumes) and its info (what the report shows)."""
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
    info = {
        "model_name": model_name,
        "model_meta": {k: meta[k] for k in _MODEL_META if k in meta},
        "checkpoint": ckpt_info,
        "attack_preset": atk.spec.to_dict(),
    }
    return config, info


# ----------------------------------------------------------------------------- model and task


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


def resolve_model(model, load: dict | None = None) -> tuple[nn.Module, dict, str]:
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


def _tensor_task(model: nn.Module, task, limit: int | None) -> tuple[Task, dict]:
    """(images, labels) tensors for a plain classifier: an in-memory closed task (tasks/tensor.py)."""
    from ..tasks.tensor import tensor_task

    if isinstance(model, VLModel):
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


def _named_task(model: VLModel, task: str, trained, split: str, limit: int | None, task_seed: int) -> Task:
    from ..tasks import load_task, named

    if named.lookup(task) is None:
        load_task(task, split=split, limit=1)  # raises the one-line "unknown task" error
    source = named.lookup(task)
    if source is not None:  # a model that cannot serve the task's kind at all says so first
        _refuse(model, SimpleNamespace(name=task, kind=source.kind))
    if trained and task != trained and not (source is not None and other_classes(source.kind, trained)):
        raise TaskError(
            f"model {model.display_name} was tuned on {trained}, not {task}; attack it on "
            f"--task {trained} or pass a checkpoint tuned on {task}"
        )
    # real datasets are resized as the model's processor does (robust_pt/tasks/formats/)
    resize = {"resize": model.resize_mode} if ":" in task and getattr(model, "resize_mode", None) else {}
    return load_task(task, split=split, limit=limit, seed=task_seed, size=model.image_size, **resize)


def _given_task(model: VLModel, t: Task, trained, limit: int | None) -> Task:
    if t.image_size != model.image_size and t.at_size is not None:  # loaded without a size: the model's
        t = t.at_size(model.image_size, getattr(model, "resize_mode", None))
    _refuse(model, t)
    if trained and t.name != trained and not other_classes(t.kind, trained):
        raise TaskError(
            f"model {model.display_name} was tuned on {trained}, not {t.name}; attack it on "
            f"{trained} or pass a checkpoint tuned on {t.name}"
        )
    if limit is not None and limit < len(t):
        t = _Limited(t, limit)
    return t


def _refuse(model: VLModel, t) -> None:
    why = refusal(model, t)  # the kinds a model serves, and what a task's kind needs of a model
    if why is not None:
        raise TaskError(why)


def _check_served(model: VLModel, t: Task) -> None:
    _refuse(model, t)
    classes = getattr(model, "class_refusal", None)  # a model that scores only some class names (a linear probe)
    why = classes(t.answers) if classes is not None and t.answers else None
    if why is not None:
        raise TaskError(why)
    if t.image_size != model.image_size:
        raise TaskError(
            f"task {t.name} has {t.image_size}px images but the model expects {model.image_size}px; "
            f"load it with rpt.load_task({t.name!r}, split={t.split!r}, size={model.image_size}) "
            f"(or without size=: evaluate then uses the model's)"
        )
    if len(t) == 0:
        raise TaskError(f"task {t.name} has no examples")


def resolve_task(model: nn.Module, task, split: str, limit: int | None, task_seed: int) -> tuple[Task, dict]:
    """(the task, its identity in the run's config)."""
    if isinstance(task, (tuple, list)) and len(task) == 2 and not isinstance(task[0], str):
        return _tensor_task(model, task, limit)
    if not isinstance(model, VLModel):
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
        t = _named_task(model, task, trained, split, limit, task_seed)
    elif isinstance(task, Task):
        t = _given_task(model, task, trained, limit)
    else:
        raise TaskError(f"task must be a task name, a Task or (images, labels) tensors, got {type(task).__name__}")
    _check_served(model, t)
    return t, {
        "name": t.name,
        "split": t.split,
        "seed": t.seed,
        "n": len(t),
        "image_size": t.image_size,
        "kind": t.kind,
    }


# ----------------------------------------------------------------------------- prepare


def _build_attack(req: EvalRequest, sources: list) -> Attack:
    atk = build(req.attack, **req.overrides)
    if sources:
        from ..attacks.transfer import CRAFTING, check_attack

        check_attack(atk.spec, len(sources))
        atk = build(atk, **CRAFTING)
    return atk


def _check_attack_fits(atk: Attack, sources: list, victim, t: Task) -> None:
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


WORD_ATTACKS = ("text", "joint", "text-corruption")  # threats that change the words of the instruction


def _check_reads_text(atk: Attack, module) -> None:
    """A model whose learned prompt replaces the text it is given (CoOp, MaPLe, a linear probe) has no words a
    text attack could change: refused in one line rather than reported as perfectly robust."""
    if atk.kind in WORD_ATTACKS and not getattr(module, "reads_text", True):
        raise AttackError(
            f"{atk.describe()} changes the words of the prompt, but {getattr(module, 'display_name', 'this model')} "
            f"reads a learned prompt instead of them; attack its image (or its prompt's embeddings with emb-pgd)"
        )


def prepare(req: EvalRequest, world: int = 1, device: Any = None) -> Prepared:
    """Load the model and task, build and check the attack, fix the run's config (no writes).
    `device`: this rank's device, where it differs from the request's (distributed runs)."""
    from ..runtime.distributed import check_world

    sources = surrogate_list(req.surrogate)
    atk = _build_attack(req, sources)
    eps_list = atk.eps_grid(req.eps)
    load = {**req.load_options(), **({"device": device} if device is not None else {})}
    module, ckpt_info, model_name = resolve_model(req.model, load)
    vl = isinstance(module, VLModel)
    threat = threat_model(atk.kind)
    threat.check_model(atk, vl, type(module).__name__)
    t, task_id = resolve_task(module, req.task, req.split, req.limit, req.task_seed)
    victim = victim_class(module, t)
    threat.check_task(atk, victim, t)
    _check_attack_fits(atk, sources, victim, t)
    _check_reads_text(atk, module)
    check_world(world, len(t))
    batch_size = req.batch_size
    if batch_size == "auto":
        batch_size = auto_batch_size(module, vl, t, req.out)
    config, info = run_config(module, vl, model_name, ckpt_info, task_id, atk, eps_list, batch_size, req.seed)
    if sources:
        threat = _transfer_threat(threat, sources, module, t, {"device": load["device"], "precision": req.precision})
        threat.store = _crafted_store(req.crafted, threat.surrogates, atk, req.seed, task_id)
        config["surrogates"] = [s.identity() for s in threat.surrogates]
        info["surrogates"] = [s.info for s in threat.surrogates]
    info["declares"] = declarations(threat, atk, t)  # what the report reads (attacks/declarations.py)
    return Prepared(
        threat=threat,
        module=module,
        vl=vl,
        task=t,
        attack=atk,
        eps=eps_list,
        seed=req.seed,
        samples=req.samples,
        out=req.out,
        config=config,
        info=info,
        model_name=model_name,
        attack_batch=req.attack_batch,
    )


# ----------------------------------------------------------------------------- surrogates


def _transfer_threat(inner, sources: list, target: nn.Module, t: Task, load: dict):
    """The run's threat model wrapped to craft on the loaded, checked surrogates."""
    from ..attacks.transfer import Surrogate, TransferThreat, check_surrogate, label_of

    surrogates = []
    for label, src in sources:
        module, info, name = resolve_model(src, load)
        module.eval()  # crafting as judging: no dropout, no batch-norm updates
        identity = (getattr(module, "meta", None) or {}).get("identity")
        info = {**info, **({"identity": identity} if identity else {})}  # how it was made (recipes compare)
        s = Surrogate(module, label or label_of(module, name), state_sha256(module), info)
        check_surrogate(s, target, t, isinstance(target, VLModel))
        surrogates.append(s)
    return TransferThreat(inner, surrogates)


def _crafted_store(crafted, surrogates: list, atk: Attack, seed: int, task_id: dict):
    """Where crafted inputs are kept: keyed by what crafting depends on (never by the target)."""
    from ..attacks.transfer import CraftedStore, store_key

    return CraftedStore(Path(crafted) if crafted else None, store_key(surrogates, atk.spec.identity, seed, task_id))


# ----------------------------------------------------------------------------- batch size auto


def auto_batch_size(module: nn.Module, vl: bool, t: Task, out: Path | None) -> int:
    """--batch-size auto: the stored one when resuming, probed on CUDA, a default on CPU."""
    from ..runtime import memory
    from ..store import RUN_JSON

    if out is not None and (out / RUN_JSON).exists():
        try:
            stored = json.loads((out / RUN_JSON).read_text())["config"]["batch_size"]
            if isinstance(stored, int) and stored > 0:
                return stored
        except (OSError, ValueError, KeyError, TypeError):
            pass  # RunStore reports an unreadable run directory
    if _device(module).type != "cuda":
        return memory.CPU_BATCH
    limit = 1 << max(0, (len(t) - 1).bit_length())  # no point probing past the examples
    return memory.probe_batch_size(fits_fn(module, vl, t), limit=min(limit, 1024))


def fits_fn(module: nn.Module, vl: bool, t: Task) -> Callable[[int], None]:
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
