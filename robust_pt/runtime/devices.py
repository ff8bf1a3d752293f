"""`--device auto|cpu|cuda[:N]` and `--precision auto|fp32|bf16`.

Precision only ever changes how the model computes, never the attack's arithmetic:
images, perturbations, the eps-ball projection and the loss stay float32, so an eps
means the same in every precision. "bf16" runs the Hugging Face models' forward and
backward passes under CUDA autocast with bfloat16 (float32's exponent range, so input
gradients do not underflow the way float16 ones can; logits come back as float32).
"auto" is bf16 on a CUDA device that supports it and fp32 elsewhere. The built-in model
always runs in float32. The CUDA path is untested in this repository's CI (CPU only).
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16")


def module_device(module: torch.nn.Module) -> torch.device:
    """The device a module's parameters live on (cpu for a module without parameters)."""
    try:
        return next(module.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def resolve_device(device: Any = None) -> torch.device:
    """None/"auto": cuda if available, else cpu; "cpu"; "cuda" or "cuda:N" (an error if there is no GPU)."""
    if isinstance(device, torch.device):
        return device
    name = "auto" if device is None else str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"--device {device}: no CUDA GPU is visible to torch "
                f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); use --device cpu"
            )
        try:
            dev = torch.device(name)
        except RuntimeError:
            raise ConfigError(f"bad device {device!r}; use auto, cpu, cuda or cuda:N") from None
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) visible")
        return dev
    raise ConfigError(f"bad device {device!r}; use auto, cpu, cuda or cuda:N")


def autocast_dtype(precision: str | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `precision` on `device` (None: plain float32)."""
    p = "auto" if precision is None else str(precision).lower()
    if p not in PRECISIONS:
        raise ConfigError(f"bad precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if device.type != "cuda":
        if p == "bf16":
            raise ConfigError("--precision bf16 needs a CUDA device (on CPU robust-pt computes in float32)")
        return None
    if p == "fp32":
        return None
    if not torch.cuda.is_bf16_supported():
        if p == "bf16":
            raise ConfigError(
                f"--precision bf16: {torch.cuda.get_device_name(device)} does not support bfloat16; "
                f"use --precision fp32"
            )
        return None
    return torch.bfloat16
