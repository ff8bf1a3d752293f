"""APGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks") on robust-pt's objectives, each example on its own.

Why our own instead of torchattacks' port of the reference (fra31/auto-attack): both seed one
generator per batch, so an example's random start, and with it its verdict, depends on which
examples share its batch. We attack in large probed batches and pool survivors across
batches, so every random draw here comes from the example's own seed, and everything else is
per example already in the reference: its step-size checkpoints depend only on the iteration
(at 0.22, then shrinking by 0.03 down to 0.06 of the budget), its momentum is 0.75, and it
halves an example's step (going back to that example's best point) when fewer than 75% of the
steps since the last checkpoint increased the loss, or when the step was not halved at the last
checkpoint and the best loss has not improved since.

AutoAttack only asks whether some point in the ball is misclassified, so with early stopping an
example leaves the batch the moment it is misclassified and keeps that first misclassified
point (the reference keeps iterating; no verdict changes). Without early stopping it runs the
reference's full loop and keeps the last misclassified point, as the reference does. An example
never misclassified keeps its highest-loss point (the logits there are known without a pass).
The last iteration's gradient, which nothing uses, is not computed.

Losses: ce (the objective's own cross-entropy), dlr (difference of logits ratio, needs 3
candidates) and the targeted DLR of APGD-T (needs 4), built from the logits over all candidates.
"""

from __future__ import annotations

import torch

from .gradient import AscentResult, Objective, example_generator
from .seeds import derive_seed
from .tally import Found, Tally, keep_rows, need_classes, wrong

RHO = 0.75  # the reference's share of increasing steps below which the step is halved
MOMENTUM = 0.75


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3): the untargeted DLR loss, per example."""
    s, ind = logits.sort(dim=1)
    top = (ind[:, -1] == y).to(logits.dtype)
    u = torch.arange(logits.shape[0], device=logits.device)
    return -(logits[u, y] - s[:, -2] * top - s[:, -1] * (1.0 - top)) / (s[:, -1] - s[:, -3] + 1e-12)


def dlr_targeted_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2): APGD-T's targeted DLR loss, per example."""
    s = logits.sort(dim=1)[0]
    u = torch.arange(logits.shape[0], device=logits.device)
    return -(logits[u, y] - logits[u, target]) / (s[:, -1] - 0.5 * (s[:, -3] + s[:, -4]) + 1e-12)


def checkpoints(steps: int) -> dict[int, int]:
    """The reference's step-size checkpoints: iteration -> the interval k checked there."""
    first, least, decr = max(int(0.22 * steps), 1), max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
    out, k, i = {}, first, first - 1
    while i < steps:
        out[i] = k
        k = max(k - decr, least)
        i += k
    return out


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def l2_norm(v: torch.Tensor) -> torch.Tensor:
    """Per-example L2 norm as the reference computes it (square, sum, root), shape (n,)."""
    return (v**2).reshape(v.shape[0], -1).sum(-1).sqrt()


def unit(v: torch.Tensor, norm: str) -> torch.Tensor:
    """v over its per-example L-inf or L2 norm (+1e-12), as the reference normalises."""
    n = v.reshape(v.shape[0], -1).abs().amax(1) if norm == "linf" else l2_norm(v)
    return v / _bcast(n + 1e-12, v)


def box(x0: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The L-inf ball intersected with [0, 1], as per-pixel bounds (clamping to them is the
    reference's clamp to the ball, then to [0, 1], in one pass)."""
    return torch.clamp(x0 - eps, min=0.0), torch.clamp(x0 + eps, max=1.0)


def clip(z: torch.Tensor, x0: torch.Tensor, eps: float, norm: str, bounds=None) -> torch.Tensor:
    """Onto the eps-ball around x0 and into [0, 1], with the reference's arithmetic."""
    if norm == "linf":
        lo, hi = bounds if bounds is not None else box(x0, eps)
        return torch.clamp(z, lo, hi)
    d = z - x0
    return torch.clamp(x0 + unit(d, "l2") * _bcast(torch.clamp(l2_norm(d), max=eps), d), 0.0, 1.0)


def random_start(x0: torch.Tensor, eps: float, norm: str, seeds: list[int]) -> torch.Tensor:
    """The reference's start, drawn per example from its own seed: uniform in [-1, 1] scaled to
    L-inf norm eps, or a gaussian scaled to L2 norm eps; clamped to [0, 1]."""
    shape = tuple(x0.shape[1:])
    noise = []
    for s in seeds:
        g = example_generator(s)
        noise.append(torch.rand(shape, generator=g) * 2 - 1 if norm == "linf" else torch.randn(shape, generator=g))
    t = torch.stack(noise).to(device=x0.device, dtype=x0.dtype)
    return torch.clamp(x0 + eps * unit(t, norm), 0.0, 1.0)


def _loss(own: torch.Tensor, logits: torch.Tensor, st: dict, loss: str) -> torch.Tensor:
    if loss == "ce":
        return own
    if loss == "dlr":
        return dlr_loss(logits, st["y"])
    return dlr_targeted_loss(logits, st["y"], st["target"])


def _evaluate(obj: Objective, st: dict, loss: str, need_grad: bool):
    """Loss, logits and (when needed) the gradient of the summed loss at the current points."""
    if not need_grad:
        with torch.no_grad():
            own, logits = obj.loss([st["x"]], st["rows"])
            return _loss(own, logits, st, loss).detach(), logits.detach(), None
    with torch.enable_grad():
        x = st["x"].detach().requires_grad_(True)
        own, logits = obj.loss([x], st["rows"])
        val = _loss(own, logits, st, loss)
        (g,) = torch.autograd.grad(val.sum(), [x])
    return val.detach(), logits.detach(), g.detach()


def _move(st: dict, eps: float, norm: str, a: float) -> None:
    """One step with momentum: z = P(x + step * dir(grad)); x' = P(x + a (z - x) + (1 - a)(x - x_prev))."""
    x, x0 = st["x"], st["x0"]
    grad2 = x - st["x_old"]
    st["x_old"] = x
    step = _bcast(st["step"], x)
    direction = st["grad"].sign() if norm == "linf" else unit(st["grad"], "l2")
    bounds = (st["lo"], st["hi"]) if norm == "linf" else None
    z = clip(x + step * direction, x0, eps, norm, bounds)
    st["x"] = clip(x + (z - x) * a + grad2 * (1 - a), x0, eps, norm, bounds)


def _note_fooled(f: Found, st: dict, logits: torch.Tensor) -> None:
    bad = wrong(logits, st["y"])
    if bool(bad.any()):
        at = st["at"][bad]
        f.adv[at] = st["x"][bad]
        f.logits[at] = logits[bad]
        f.fooled[at] = True


def _keep_best(st: dict, val: torch.Tensor, logits: torch.Tensor, grad: torch.Tensor | None) -> None:
    better = val > st["loss_best"]
    b = _bcast(better, st["x"])
    st["x_best"] = torch.where(b, st["x"], st["x_best"])
    st["lg_best"] = torch.where(better[:, None], logits, st["lg_best"])
    st["loss_best"] = torch.where(better, val, st["loss_best"])
    if grad is not None:
        st["grad_best"] = torch.where(b, grad, st["grad_best"])


def _check_step(st: dict, i: int, k: int) -> None:
    """The reference's checkpoint: halve the step of the examples that oscillate or stalled, and
    send them back to their best point."""
    hist = st["hist"]
    idx = torch.arange(i, i - k, -1, device=hist.device)
    ups = (hist[:, idx] > hist[:, (idx - 1) % hist.shape[1]]).sum(1)  # index -1 wraps, as in the reference
    reduce = (ups <= k * RHO) | (~st["reduced"] & (st["last_best"] >= st["loss_best"]))
    st["reduced"], st["last_best"] = reduce, st["loss_best"].clone()
    st["step"] = torch.where(reduce, st["step"] / 2, st["step"])
    b = _bcast(reduce, st["x"])
    st["x"] = torch.where(b, st["x_best"], st["x"])
    if st["grad"] is not None:
        st["grad"] = torch.where(b, st["grad_best"], st["grad"])


def _state(rows, x0, y, target, start, val, logits, grad, eps, steps) -> dict:
    m = rows.numel()
    st = dict(at=torch.arange(m, device=x0.device), rows=rows, x0=x0, y=y, x=start, x_old=start)
    st["lo"], st["hi"] = box(x0, eps)
    if target is not None:
        st["target"] = target
    st.update(grad=grad, x_best=start, grad_best=grad, loss_best=val, lg_best=logits, last_best=val.clone())
    st["step"] = torch.full((m,), 2.0 * eps, dtype=start.dtype, device=start.device)
    st["hist"] = torch.zeros(m, max(steps, 1), dtype=val.dtype, device=val.device)
    st["reduced"] = torch.ones(m, dtype=torch.bool, device=val.device)
    return st


def apgd_run(
    obj: Objective,
    rows: torch.Tensor,
    x0: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    norm: str,
    steps: int,
    loss: str,
    start: torch.Tensor,
    early_stop: bool,
    target: torch.Tensor | None = None,
) -> Found:
    """One APGD run from `start` on the examples `rows` of the objective's batch (x0, y, target: theirs)."""
    m = rows.numel()
    st = dict(rows=rows, x=start, y=y, target=target)
    val, logits, grad = _evaluate(obj, st, loss, need_grad=steps > 0)
    f = Found(
        start.clone(),
        logits.clone(),
        torch.zeros(m, dtype=torch.bool, device=x0.device),
        torch.zeros(m, dtype=torch.long, device=x0.device),
    )
    f.grad_evals, f.fwd_evals = (m, 0) if steps > 0 else (0, m)
    st = _state(rows, x0, y, target, start, val, logits, grad, eps, steps)
    _note_fooled(f, st, logits)
    checks = checkpoints(steps)
    for i in range(steps):
        if early_stop:
            left = ~f.fooled[st["at"]]
            if not bool(left.all()):
                st = keep_rows(st, left)
        n = st["at"].numel()
        if n == 0:
            break
        _move(st, eps, norm, MOMENTUM if i > 0 else 1.0)
        need = i < steps - 1
        val, logits, st["grad"] = _evaluate(obj, st, loss, need)
        f.grad_evals += n if need else 0
        f.fwd_evals += 0 if need else n
        f.steps[st["at"]] = i + 1
        _note_fooled(f, st, logits)
        _keep_best(st, val, logits, st["grad"])
        st["hist"][:, i] = val
        if i in checks:
            _check_step(st, i, checks[i])
    left = ~f.fooled[st["at"]]
    f.adv[st["at"][left]] = st["x_best"][left]
    f.logits[st["at"][left]] = st["lg_best"][left]
    f.steps = f.steps.cpu()
    return f


def run(spec, p, obj: Objective, x0: torch.Tensor, eps: float, seeds: list[int], early_stop: bool) -> AscentResult:
    """Backend ours of method apgd: `restarts` runs, each on the examples still standing, each
    example's start from derive_seed(its seed, "apgd", loss, restart)."""
    t = Tally(obj, x0, spec.name)
    if p.loss == "dlr":
        need_classes(spec.name, t.classes, 3, "the DLR loss", "use loss: ce")
    for r in range(p.restarts):
        rows = t.todo()
        if rows.numel() == 0:
            break
        start = random_start(
            x0[rows], eps, spec.norm, [derive_seed(seeds[i], "apgd", p.loss, r) for i in rows.tolist()]
        )
        y = t.y[rows]
        f = apgd_run(
            obj, rows, x0[rows], y, eps, norm=spec.norm, steps=p.steps, loss=p.loss, start=start, early_stop=early_stop
        )
        t.merge(rows, f, everything=True)
    return t.result()
