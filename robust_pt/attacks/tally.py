"""The per-example outcome of attacks that run one after another on a batch's survivors.

Why: APGD's restarts, Square's restarts and AutoAttack's four stages each attack only the
examples still standing and must hand back, per example, the point they found, the logits
there and how many iterations it took. Keeping that bookkeeping in one place (and per
example, never per batch) is what makes an example's result independent of the examples
that share its batch. `Found` is what one attack did to the rows it attacked; `Tally` is the
batch's result so far, starting from the clean pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import AttackError
from .gradient import AscentResult, Objective


@dataclass
class Found:
    """One attack on `m` rows of a batch: (m, ...) tensors in the order of the rows it was given."""

    adv: torch.Tensor  # first misclassified point, else the attack's best point (highest loss)
    logits: torch.Tensor  # (m, K) at adv
    fooled: torch.Tensor  # (m,) bool: logits at adv are wrong (and adv inside the ball)
    steps: torch.Tensor  # (m,) long (CPU): gradient iterations spent on each example
    grad_evals: int = 0
    fwd_evals: int = 0


def wrong(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The verdict the engine gives: the arg-max candidate is not the true one."""
    return logits.argmax(-1) != y


class Tally:
    """A batch's result so far: each example's adversarial, the logits there, fooled or not, steps.

    Built from the clean pass (one forward of the batch): an example already misclassified is
    fooled at its clean image and never attacked, as in the reference AutoAttack.
    """

    def __init__(self, obj: Objective, x0: torch.Tensor, name: str):
        if obj.labels is None:
            raise AttackError(f"attack {name} needs logits over candidates (a closed-answer task or a classifier)")
        B = x0.shape[0]
        with torch.no_grad():
            clean = obj.logits([x0], torch.arange(B, device=x0.device))
        self.x0, self.y, self.clean = x0, obj.labels, clean.detach()
        self.adv = x0.detach().clone()
        self.logits = self.clean.clone()
        self.fooled = wrong(self.clean, self.y)
        self.steps = torch.zeros(B, dtype=torch.long)
        self.grad_evals, self.fwd_evals = 0, B

    @property
    def classes(self) -> int:
        return int(self.clean.shape[-1])

    def todo(self) -> torch.Tensor:
        """Rows (batch indices) not fooled yet."""
        return (~self.fooled).nonzero().flatten()

    def merge(self, rows: torch.Tensor, f: Found, *, everything: bool) -> None:
        """Take attack `f` on `rows`: its points where it fooled (all of them when `everything`)."""
        take = torch.ones_like(f.fooled) if everything else f.fooled
        r = rows[take]
        self.adv[r] = f.adv[take].to(self.adv.dtype)
        self.logits[r] = f.logits[take].to(self.logits.dtype)
        self.fooled[rows] |= f.fooled
        self.steps[rows.cpu()] += f.steps
        self.grad_evals += f.grad_evals
        self.fwd_evals += f.fwd_evals

    def result(self) -> AscentResult:
        return AscentResult([self.adv], self.logits, self.steps, self.grad_evals, self.fwd_evals)


def need_classes(name: str, have: int, need: int, what: str, instead: str) -> None:
    """One-line refusal when a loss needs more candidates than the task has."""
    if have < need:
        raise AttackError(
            f"attack {name}: {what} needs at least {need} candidate answers, this task has {have}; {instead}"
        )


def keep_rows(state: dict, mask: torch.Tensor) -> dict:
    """The per-example state (every tensor's first dimension is the example) of the rows in `mask`."""
    return {k: (v[mask] if isinstance(v, torch.Tensor) else v) for k, v in state.items()}
