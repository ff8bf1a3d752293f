"""Adapter baseline: a bottleneck MLP after each layer's FFN (Houlsby-style, zero-init up; layers.Bottleneck)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError
from .methods import freeze
from .registry import TuningMethod, register


@dataclass(frozen=True)
class AdapterOptions:
    adapter_dim: int = field(default=32, metadata={"help": "adapter bottleneck width"})

    def __post_init__(self):
        if self.adapter_dim <= 0:
            raise ConfigError(f"adapter dim must be a positive integer, got {self.adapter_dim}")


def add_adapters(model, r: int) -> None:
    from .layers import Bottleneck

    for layer in model.all_layers():
        layer.adapter = Bottleneck(model.cfg.d_model, r)


def apply(model, o: AdapterOptions) -> None:
    freeze(model)
    add_adapters(model, o.adapter_dim)
    for layer in model.all_layers():
        for p in layer.adapter.parameters():
            p.requires_grad_(True)


METHOD = register(
    TuningMethod(
        "adapter",
        "Adapter",
        AdapterOptions,
        apply=apply,
        lr=3e-3,
        colour="#2ca02c",
        help="a bottleneck MLP after every layer's FFN, backbone frozen",
    )
)


def __getattr__(name: str):  # moved to layers.py (imported on demand: no torch here)
    if name == "Bottleneck":
        from .layers import Bottleneck

        return Bottleneck
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
