"""AutoAttack standard (Croce & Hein 2020) as backend ours: APGD-CE, APGD-T, FAB-T, Square, each
on the examples the ones before it left standing.

Why our own composition instead of torchattacks' AutoAttack: the reference seeds each
sub-attack per batch, so an example's verdict depends on its batch. Here the random stages
(APGD-CE's and APGD-T's starts, Square's draws) draw from the example's own seed, derived per
stage: derive_seed(seed, "apgd", "ce", 0) (the start method apgd-ce uses, so AutoAttack breaks
at least what APGD-CE alone breaks), derive_seed(seed, "apgd-t", k) for the k-th target and
derive_seed(seed, "square", 0). FAB-T is torchattacks' FAB run target by target with one
restart, which has no random start (it starts at the clean image) and works row by row, so it is
deterministic and independent of the batch; it sees the objective's logits through `_Rows`.
Without a random start FAB never reads eps either: its point for an example and a target is the
same at every eps, and only whether it lies inside the ball changes. So in a sweep each
example's FAB-T run on each target is done once (the threat model keeps it in the example's
memo for the batch, methods.AttackMethod.remembers) and at a larger eps only its size is
compared with the new ball: the verdicts are a fresh run's, the steps counted are those spent
at this eps (none for a point found at a smaller one).

The reference's settings: APGD-CE with `steps` iterations and one restart; APGD-T on the
`target_classes` most likely wrong classes at the clean image (k-th largest logit, k = 2..T+1),
`steps` iterations each; FAB-T on the same targets, `steps` iterations each, counting only points
inside the ball; Square with p_init 0.8, the margin loss, `queries` (5000) and the reference
AutoAttack's unrescaled p schedule. An example already misclassified at its clean image is not
attacked. An example no stage breaks keeps APGD-CE's highest-loss point.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import AttackError
from .apgd import apgd_run, l2_norm, random_start
from .gradient import AscentResult, Objective
from .seeds import derive_seed
from .square import square_run
from .tally import Found, Tally, need_classes, wrong

REFERENCE_QUERIES = 5000
SQUARE_P_INIT = 0.8


def check(spec) -> None:
    """The combinations backend ours refuses (presets and overrides are checked when read)."""
    if spec.backend == "ours" and spec.version != "standard":
        raise AttackError(
            f"attack {spec.name}: AutoAttack {spec.version} runs only with --backend torchattacks; "
            f"backend ours runs version standard"
        )


def _fab_class():
    try:
        from torchattacks.attacks.fab import FAB
    except ImportError:
        raise AttackError(
            "AutoAttack's FAB-T (backend ours) uses torchattacks' FAB; install it with "
            "`pip install --no-deps torchattacks==3.5.1` (see `make setup`)"
        ) from None
    return FAB


class _InputGrad(torch.autograd.Function):
    """fn(x) whose backward reaches x only: FAB calls .backward(), which would otherwise also fill
    the .grad of a model's parameters that require grad."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, fn) -> torch.Tensor:
        with torch.enable_grad():
            ctx.xin = x.detach().requires_grad_(True)
            ctx.out = fn(ctx.xin)
        return ctx.out.detach()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (gx,) = torch.autograd.grad(ctx.out, [ctx.xin], grad)
        return gx, None


class _Rows(nn.Module):
    """The objective's logits for the examples `rows`, as the nn.Module torchattacks' FAB calls.

    FAB calls it on all of them (a subset only if FAB finds one misclassified at its clean image,
    mapped back by nearest clean image); it counts the passes with and without gradient.
    """

    def __init__(self, obj: Objective, x0: torch.Tensor, rows: torch.Tensor):
        super().__init__()
        self.obj, self.x0, self.rows = obj, x0, rows
        # torchattacks reads the device from a parameter
        self.anchor = nn.Parameter(torch.zeros(0, device=x0.device), requires_grad=False)
        self.grad_evals = self.fwd_evals = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        rows = self.rows
        if n != self.x0.shape[0]:
            rows = rows[torch.cdist(x.detach().flatten(1).float(), self.x0.flatten(1).float()).argmin(1)]
        x = x.to(self.x0.dtype)
        if torch.is_grad_enabled():
            self.grad_evals += n
            return _InputGrad.apply(x, lambda xin: self.obj.loss([xin], rows)[1])
        self.fwd_evals += n
        return self.obj.logits([x], rows)


def _fab_targeted(obj, rows, x0, y, *, norm: str, steps: int, k: int, classes: int):
    """FAB-T's run on the k-th most likely class: (its points, the logits there, their sizes, the
    gradient and forward passes). Without a random start FAB never reads eps: its points are the
    same at every eps, and only which of them lie inside the ball depends on it."""
    net = _Rows(obj, x0, rows)
    ta_norm = "Linf" if norm == "linf" else "L2"
    fab = _fab_class()(net, norm=ta_norm, steps=steps, n_restarts=1, multi_targeted=True, n_classes=classes)
    fab.target_class = k  # what FAB's own loop over targets sets before each targeted run
    with torch.no_grad():
        adv = fab.attack_single_run_targeted(x0, y, use_rand_start=False).to(x0.dtype)
        logits = obj.logits([adv], rows)
    d = (adv - x0).flatten(1)
    size = d.abs().amax(1) if norm == "linf" else l2_norm(d)
    size = torch.where(wrong(logits, y), size, torch.full_like(size, float("inf")))  # not adversarial: no size
    return adv, logits, size, net.grad_evals, net.fwd_evals + rows.numel()


def _fab_stage(t: Tally, obj, eps: float, norm: str, steps: int, targets: int, memos) -> None:
    """FAB-T on each target, each on the examples still standing. With `memos` (one dict per example,
    kept for the batch across eps) each example's run on a target is done once: at a larger eps only
    the size of the point it found is compared with the new ball."""
    for k in range(2, targets + 2):
        rows = t.todo()
        if rows.numel() == 0:
            return
        key = ("fab-t", k)
        fresh = [j for j, i in enumerate(rows.tolist()) if memos is None or key not in memos[i]]
        m = rows.numel()
        adv, logits = t.x0[rows].clone(), t.logits[rows].clone()
        size = torch.full((m,), float("inf"), device=t.x0.device)
        steps_of = torch.zeros(m, dtype=torch.long)
        grads = fwds = 0
        if fresh:
            f = torch.tensor(fresh, dtype=torch.long, device=rows.device)
            r = rows[f]
            a, lg, sz, grads, fwds = _fab_targeted(
                obj, r, t.x0[r], t.y[r], norm=norm, steps=steps, k=k, classes=t.classes
            )
            adv[f], logits[f], size[f] = a, lg.to(logits.dtype), sz
            steps_of[f.cpu()] = steps
            if memos is not None:
                _remember(memos, r, key, a, lg, sz)
        if memos is not None:
            for j, i in enumerate(rows.tolist()):
                hit = memos[i][key]
                size[j] = hit["size"]
                if hit["adv"] is not None:
                    adv[j], logits[j] = hit["adv"], hit["logits"]
        fooled = size <= eps
        t.merge(rows, Found(adv, logits, fooled, steps_of, grads, fwds), everything=False)


def _remember(memos, rows: torch.Tensor, key, adv, logits, size) -> None:
    """Each example's FAB-T point on this target: its size always, the point itself only when it is
    adversarial and smaller than every earlier target's (at any eps that takes it in, an earlier target
    with a smaller point has already fooled the example, so a larger one is never used)."""
    for j, i in enumerate(rows.tolist()):
        best = memos[i].get("fab-t-smallest", float("inf"))
        s = float(size[j])
        keep = s < best
        memos[i][key] = {
            "size": s,
            "adv": adv[j].clone() if keep else None,
            "logits": logits[j].clone() if keep else None,
        }
        if keep:
            memos[i]["fab-t-smallest"] = s


def _apgd_stages(t: Tally, obj, eps: float, norm: str, steps: int, targets: int, seeds, early_stop: bool) -> None:
    """APGD-CE, then APGD-T on each target, each on the examples still standing."""
    order = t.clean.sort(dim=1)[1]  # ascending: column -k is the k-th most likely class
    stages = [("ce", None, ("apgd", "ce", 0))] + [("dlr-targeted", k, ("apgd-t", k)) for k in range(2, targets + 2)]
    for loss, k, tag in stages:
        rows = t.todo()
        if rows.numel() == 0:
            return
        start = random_start(t.x0[rows], eps, norm, [derive_seed(seeds[i], *tag) for i in rows.tolist()])
        target = None if k is None else order[rows, -k]
        how = dict(norm=norm, steps=steps, loss=loss, start=start, early_stop=early_stop, target=target)
        t.merge(rows, apgd_run(obj, rows, t.x0[rows], t.y[rows], eps, **how), everything=k is None)


def run(
    spec, p, obj: Objective, x0: torch.Tensor, eps: float, seeds: list[int], early_stop: bool, memos=None
) -> AscentResult:
    """Backend ours of method autoattack (version standard). memos: one dict per example that the
    threat model keeps for the batch across eps (FAB-T's points, found once per example)."""
    check(spec)
    t = Tally(obj, x0, spec.name)
    need_classes(spec.name, t.classes, 4, "AutoAttack's APGD-T (the targeted DLR loss)", "use apgd-ce, square or pgd")
    targets = max(1, min(p.target_classes, t.classes - 1))
    _apgd_stages(t, obj, eps, spec.norm, p.steps, targets, seeds, early_stop)
    _fab_stage(t, obj, eps, spec.norm, p.steps, targets, memos)
    rows = t.todo()
    if rows.numel():
        how = dict(norm=spec.norm, queries=int(p.queries or REFERENCE_QUERIES), p_init=SQUARE_P_INIT, loss="margin")
        seeds_sq = [derive_seed(seeds[i], "square", 0) for i in rows.tolist()]
        f = square_run(obj, rows, x0[rows], t.y[rows], eps, rescale=False, seeds=seeds_sq, **how)
        t.merge(rows, f, everything=False)
    return t.result()
