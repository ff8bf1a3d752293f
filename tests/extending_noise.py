"""The worked example of docs/extending.md: a threat model in one file.

Uniform random noise at severities: every pixel moves by U(-eps, eps), clipped to [0, 1].
Its levels are not nested balls of a worst case (a random draw at 8/255 says nothing about
one at 4/255), so it declares nested = False and the engine attacks every clean-correct
example at every level. The victim judges the noisy images; this file never asks which
kind of model or task it runs on.
"""

from __future__ import annotations

import torch

from robust_pt.attacks.core import Bound, ThreatModel, register
from robust_pt.attacks.threats import derive_seed


class _NoiseBound(Bound):
    def perturb(self, b, examples, index, x0, eps, restart):
        g = [torch.Generator().manual_seed(derive_seed(self.seed, ex.id, eps, "noise")) for ex in examples]
        noise = torch.stack([(torch.rand(x0.shape[1:], generator=gi) * 2 - 1) * eps for gi in g]).to(x0)
        adv = (x0 + noise).clamp(0, 1)
        return self.judged(examples, index, x0, adv)  # the victim judges, sizes from x0


class UniformNoise(ThreatModel):
    name = "noise"  # presets with `kind: noise` run it
    nested = False  # severities, not nested balls
    methods = ("uniform",)  # the methods its presets may name
    saves_samples = True  # its inputs are images: the run keeps a few as PNGs

    def bind(self, victim, spec, seed):
        return _NoiseBound(self, victim, spec, seed)


register(UniformNoise())  # the one registration
