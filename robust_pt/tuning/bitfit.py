"""BitFit: only the biases train."""

from __future__ import annotations

from .methods import freeze
from .registry import NoOptions, TuningMethod, register


def apply(model, options: NoOptions) -> None:
    freeze(model)
    for name, p in model.named_parameters():
        if name.endswith(".bias"):
            p.requires_grad_(True)


METHOD = register(
    TuningMethod("bitfit", "BitFit", NoOptions, apply=apply, lr=5e-3, colour="#9467bd", help="only the biases train")
)
