"""Adapter baseline: a bottleneck MLP after each layer's FFN (Houlsby-style, zero-init up)."""

from __future__ import annotations

from torch import nn


class Bottleneck(nn.Module):
    def __init__(self, d: int, r: int):
        super().__init__()
        self.down, self.act, self.up = nn.Linear(d, r), nn.GELU(), nn.Linear(r, d)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)  # starts as the identity: tuning begins at the base model

    def forward(self, x):
        return self.up(self.act(self.down(x)))


def add_adapters(model, r: int) -> None:
    for layer in list(model.encoder) + list(model.decoder):
        layer.adapter = Bottleneck(model.cfg.d_model, r)
