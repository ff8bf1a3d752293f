"""The public functions (re-exported lazily by robust_pt/__init__.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import CheckpointError


def load_model(path_or_module: Any, *, device: Any = None, precision: str | None = None, base: Any = None):
    """A VLModel from a checkpoint directory, or the given nn.Module unchanged (any image
    classifier works with `evaluate`).

    Directories are recognised by what they hold: meta.json (a robust-pt checkpoint;
    `builtin:base-small` for the shipped base), adapter_config.json (a peft adapter on its
    base; `base` overrides the base directory it names), config.json naming one of the
    supported Hugging Face architectures (ViltForQuestionAnswering,
    BlipForQuestionAnswering, CLIPModel; see robust_pt/models/hf.py). device: auto, cpu,
    cuda or cuda:N (default: cpu for an nn.Module left as it is, auto for directories).
    precision: auto, fp32 or bf16 (Hugging Face models on CUDA; robust_pt/devices.py)."""
    import torch

    if isinstance(path_or_module, torch.nn.Module):
        if device is not None:
            from .devices import resolve_device

            path_or_module.to(resolve_device(device))
        return path_or_module
    path = Path(str(path_or_module))
    from .tuning import checkpoint as ckpt

    if str(path_or_module).startswith(ckpt.BUILTIN_PREFIX):
        return _to_device(ckpt.load(str(path_or_module)), device, precision)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory {path} does not exist; pass a directory made by "
                              f"`robust-pt train` or `robust-pt pretrain`, a Hugging Face save_pretrained "
                              f"directory or a peft adapter directory")
    if (path / ckpt.META).exists():
        return _to_device(ckpt.load(path), device, precision)
    from .models.hf_peft import is_adapter_dir, load_adapter

    if is_adapter_dir(path):
        return load_adapter(path, base=base, device=device, precision=precision or "auto")
    if (path / "config.json").exists():
        from .models.hf import load_hf

        return load_hf(path, device=device, precision=precision or "auto")
    raise CheckpointError(f"{path} holds no checkpoint (no {ckpt.META}, adapter_config.json or config.json); pass a "
                          f"directory made by `robust-pt train` or `robust-pt pretrain`, a Hugging Face "
                          f"save_pretrained directory or a peft adapter directory")


def _to_device(model, device, precision):
    """The built-in model on `device` (it computes in float32 whatever `precision` says)."""
    from .devices import autocast_dtype, resolve_device

    dev = resolve_device(device)
    autocast_dtype(precision, dev)  # validates the value
    return model.to(dev)


def load_task(name: str, split: str = "test", limit: int | None = None, seed: int = 0, **kw):
    """A task by name (shapes-vqa, shapes-ve, shapes-ground, shapes-caption)."""
    from .tasks import load_task as _load

    return _load(name, split=split, limit=limit, seed=seed, **kw)


def evaluate(*args, **kwargs):
    """Attack a model on a task; see robust_pt.engine.evaluate."""
    from .engine import evaluate as _evaluate

    return _evaluate(*args, **kwargs)


def report(*args, **kwargs):
    """Build a robustness-gap report from run directories; see robust_pt.report."""
    from .report import build

    return build(*args, **kwargs)
