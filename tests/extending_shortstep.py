"""The worked example of docs/extending.md: an image attack method with a setting of its own, in one file.

One signed-gradient step of `scale * eps` (FGSM at a fraction of the ball); `scale` is the new
setting: a preset or an override gives it, and it reaches the method as a float.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from robust_pt.attacks import methods
from robust_pt.attacks.gradient import AscentResult
from robust_pt.attacks.params import setting


@dataclass(frozen=True)
class ShortStepParams:
    scale: float = setting(0.5, above=0, max=1)  # the step is scale * eps


def short_step(spec, p: ShortStepParams, obj, x0, eps, seeds, early_stop) -> AscentResult:
    rows = torch.arange(x0.shape[0], device=x0.device)
    x = x0.detach().clone().requires_grad_(True)
    loss, _ = obj.loss([x], rows)  # the victim's objective, per example
    (g,) = torch.autograd.grad(loss.sum(), [x])
    adv = (x0 + p.scale * eps * g.sign()).clamp(0, 1).detach()
    B = x0.shape[0]
    return AscentResult([adv], None, torch.ones(B, dtype=torch.long), grad_evals=B, fwd_evals=0)


methods.register(methods.AttackMethod("short-step", "image", ShortStepParams, ("ours",), run=short_step))
