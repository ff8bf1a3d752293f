"""Our batched gradient-ascent loop, shared by the image (pixel) and embedding attacks.

Why our own loop instead of calling torchattacks for PGD/FGSM: it evaluates the attack
objective once per step for the examples still standing and, with early stopping, drops
an example from the batch the moment it is misclassified (the logits of the forward pass
that the gradient needs anyway tell us), so no forward or backward pass is spent on an
example that is already broken. With early stopping off and no random start it performs
exactly torchattacks' PGD arithmetic (mean cross-entropy over the batch, signed step,
clamp to the eps ball, clamp to [0, 1]) and gives bit-identical adversarial images;
tests/test_attacks_image.py checks that.

The loop works on a list of tensors (one image tensor for pixel attacks; image and text
embeddings for embedding attacks); `step` and `project` say how to move and where to stay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import torch

Tensors = list[torch.Tensor]


class Objective(Protocol):
    """What an attack maximises, for the examples `rows` of the batch being attacked.

    `labels` are the true candidate indices (closed-answer tasks and classifiers) or None
    (generative tasks, which have no logits and so no early stopping).
    """

    labels: torch.Tensor | None

    def loss(self, xs: Tensors, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-example loss (m,) to maximise and, if the task has them, logits (m, K)."""
        ...

    def logits(self, xs: Tensors, rows: torch.Tensor) -> torch.Tensor | None:
        """Logits (m, K) without gradient, or None for generative tasks."""
        ...


@dataclass
class AscentResult:
    xs: Tensors  # the adversarial inputs, (B, ...) each
    logits: torch.Tensor | None  # (B, K) logits at the adversarial inputs (closed tasks), else None
    steps: torch.Tensor  # (B,) iterations run on each example
    grad_evals: int  # example forward+backward passes spent
    fwd_evals: int  # example forward-only passes spent


def ascend(
    objective: Objective,
    start: Sequence[torch.Tensor],
    *,
    steps: int,
    step: Callable[[Tensors, Tensors, torch.Tensor], Tensors],
    project: Callable[[Tensors, torch.Tensor], Tensors],
    early_stop: bool,
    final_logits: bool = True,
) -> AscentResult:
    """Run `steps` ascent steps from `start` (already inside the ball).

    step(xs, grads, rows) -> moved xs; project(xs, rows) -> xs inside the ball (and the
    valid input range). With early_stop and labels, an example leaves the batch as soon
    as its logits at the current point are wrong (targeted objectives: give the target,
    `objective.reached`); its current point is its adversarial.
    """
    xs = [s.detach().clone() for s in start]
    B = xs[0].shape[0]
    labels = objective.labels
    use_stop = early_stop and labels is not None
    reached = getattr(objective, "reached", None)  # targeted objectives: done once the target is given
    active = torch.arange(B, device=xs[0].device)
    used = torch.zeros(B, dtype=torch.long)
    out_logits: torch.Tensor | None = None
    have = torch.zeros(B, dtype=torch.bool)
    grad_evals = fwd_evals = 0

    def keep_logits(rows: torch.Tensor, lg: torch.Tensor) -> None:
        nonlocal out_logits
        if out_logits is None:
            out_logits = torch.zeros(B, lg.shape[-1], dtype=lg.dtype, device=lg.device)
        out_logits[rows] = lg.detach()
        have[rows.cpu()] = True

    for t in range(steps):
        cur = [x[active].detach().requires_grad_(True) for x in xs]
        loss, logits = objective.loss(cur, active)
        grad_evals += int(active.numel())
        if use_stop:
            lg = logits.detach()
            broken = reached(lg, active) if reached is not None else lg.argmax(-1) != labels[active]
            if bool(broken.any()):
                keep_logits(active[broken], logits[broken])
                keep = ~broken
                if not bool(keep.any()):
                    active = active[keep]
                    break
                grads = torch.autograd.grad(loss[keep].mean(), cur)
                grads = [g[keep] for g in grads]
                cur = [c[keep] for c in cur]
                active = active[keep]
            else:
                grads = torch.autograd.grad(loss.mean(), cur)
        else:
            grads = torch.autograd.grad(loss.mean(), cur)
        with torch.no_grad():
            moved = project(step([c.detach() for c in cur], list(grads), active), active)
            for x, m in zip(xs, moved):
                x[active] = m
        used[active.cpu()] = t + 1
    if final_logits and labels is not None and active.numel() > 0:
        with torch.no_grad():
            lg = objective.logits([x[active] for x in xs], active)
        fwd_evals += int(active.numel())
        if lg is not None:
            keep_logits(active, lg)
    if out_logits is not None and not bool(have.all()):
        out_logits = None  # only partially known (final_logits off): let the caller evaluate
    return AscentResult([x.detach() for x in xs], out_logits, used, grad_evals, fwd_evals)


def example_generator(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(int(seed) % (2**63))
    return g


def uniform_noise(
    shape: Sequence[int], low: float, high: float, seeds: Sequence[int], like: torch.Tensor
) -> torch.Tensor:
    """Per-example uniform noise, each row from its own seed (independent of batching)."""
    rows = [
        torch.empty(tuple(shape), dtype=like.dtype).uniform_(low, high, generator=example_generator(s)) for s in seeds
    ]
    return torch.stack(rows).to(like.device)


def normal_noise(shape: Sequence[int], seeds: Sequence[int], like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example standard normal noise and a per-example uniform(0, 1) radius."""
    noise, radius = [], []
    for s in seeds:
        g = example_generator(s)
        noise.append(torch.empty(tuple(shape), dtype=like.dtype).normal_(generator=g))
        radius.append(torch.empty((), dtype=like.dtype).uniform_(0, 1, generator=g))
    return torch.stack(noise).to(like.device), torch.stack(radius).to(like.device)
