"""Image-space attacks: perturb [0, 1] pixels inside an L-inf or L2 eps-ball.

Three backends behind one call, `run_image_attack(spec, objective, x0, eps, ...)`:

* ours: batched PGD / FGSM (L-inf and L2) on robust_pt.attacks.gradient, the fast default,
  and APGD, Square and AutoAttack standard (apgd.py, square.py, autoattack.py). Random starts
  and draws are per example from a seed of (run seed, example id, eps), so an example's
  adversarial does not depend on which batch it sits in or on resuming.
* torchattacks: FGSM, PGD, PGDL2, APGD, Square, CW and AutoAttack (with the reference
  settings: 100 iterations and 9 target classes, not torchattacks' defaults of 10 and
  n_classes - 1). Seeded per batch (torch's global generator / the attack's seed).
* foolbox: FGSM, LinfPGD, L2PGD and L2 Carlini-Wagner.

Library attacks see a plain classifier `images -> logits`. Several of them (APGD, Square,
FAB, AutoAttack) call the model on subsets of the batch; `RowMatched` maps each image it
receives back to its example (its nearest clean image) so that the right question goes
with it. Whatever a backend returns is projected onto the eps-ball and into [0, 1]
(minimal-norm attacks such as CW only count when they fit inside the ball), and the
logits at the final point are recomputed, so every backend is judged the same way.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import AttackError
from .gradient import AscentResult, Objective, ascend, normal_noise, uniform_noise
from .presets import AttackSpec


@dataclass
class ImageResult:
    adv: torch.Tensor  # (B, C, H, W) in [0, 1], inside the eps-ball around x0
    logits: torch.Tensor | None  # (B, K) at adv (closed tasks), else None
    steps: torch.Tensor  # (B,) iterations (gradient attacks) run per example
    queries: int | None  # query budget (black-box attacks)
    grad_evals: int
    fwd_evals: int


# ----------------------------------------------------------------------------- geometry


def flat_norms(delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example L-inf and L2 norms of a perturbation."""
    d = delta.reshape(delta.shape[0], -1)
    return d.abs().amax(1), d.norm(p=2, dim=1)


def project(x: torch.Tensor, x0: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Onto the eps-ball around x0 (L-inf or L2) and into [0, 1]."""
    if norm == "linf":
        delta = torch.clamp(x - x0, min=-eps, max=eps)
    else:
        delta = x - x0
        n = delta.reshape(delta.shape[0], -1).norm(p=2, dim=1)
        factor = torch.clamp(eps / n.clamp_min(1e-30), max=1.0)
        delta = delta * factor.view(-1, *([1] * (delta.dim() - 1)))
    return torch.clamp(x0 + delta, min=0, max=1)


# ----------------------------------------------------------------------------- ours


def ours(
    spec: AttackSpec, obj: Objective, x0: torch.Tensor, eps: float, seeds: list[int], early_stop: bool, memos=None
) -> AscentResult:
    """Batched PGD / FGSM with torchattacks' arithmetic (see module docstring), or the method's own
    `run` (methods.AttackMethod.run; memos to a method that `remembers`)."""
    m = _method(spec)
    if m.run is not None:
        extra = {"memos": memos} if m.remembers else {}
        return m.run(spec, m.params(spec), obj, x0, eps, seeds, early_stop, **extra)
    alpha = spec.step_size(eps)
    norm = spec.norm
    one_step = m.one_step
    if one_step and norm == "linf" and not spec.random_start and spec.alpha is None:
        return _fgsm_linf(obj, x0, eps)
    start = x0  # FGSM-RS (one step from a random start) goes on below: one step of spec.step_size(eps)
    if spec.random_start:
        if norm == "linf":
            start = torch.clamp(x0 + uniform_noise(x0.shape[1:], -eps, eps, seeds, x0), min=0, max=1)
        else:
            delta, r = normal_noise(x0.shape[1:], seeds, x0)
            n = delta.reshape(delta.shape[0], -1).norm(p=2, dim=1).view(-1, *([1] * (x0.dim() - 1)))
            delta = delta * (r.view_as(n) / n * eps)
            start = torch.clamp(x0 + delta, min=0, max=1)

    if norm == "linf":

        def step(xs, gs, rows):
            return [xs[0] + alpha * gs[0].sign()]

        def proj(xs, rows):
            delta = torch.clamp(xs[0] - x0[rows], min=-eps, max=eps)
            return [torch.clamp(x0[rows] + delta, min=0, max=1)]
    else:

        def step(xs, gs, rows):
            g = gs[0]
            gn = g.reshape(g.shape[0], -1).norm(p=2, dim=1) + 1e-10
            return [xs[0] + alpha * (g / gn.view(-1, *([1] * (g.dim() - 1))))]

        def proj(xs, rows):
            delta = xs[0] - x0[rows]
            n = delta.reshape(delta.shape[0], -1).norm(p=2, dim=1)
            factor = torch.min(eps / n, torch.ones_like(n))
            delta = delta * factor.view(-1, *([1] * (delta.dim() - 1)))
            return [torch.clamp(x0[rows] + delta, min=0, max=1)]

    steps = 1 if one_step else spec.steps
    return ascend(obj, [start], steps=steps, step=step, project=proj, early_stop=early_stop)


def _fgsm_linf(obj: Objective, x0: torch.Tensor, eps: float) -> AscentResult:
    """torchattacks' FGSM exactly: x0 + eps * sign(grad), clamped to [0, 1]."""
    B = x0.shape[0]
    rows = torch.arange(B, device=x0.device)
    x = x0.detach().clone().requires_grad_(True)
    loss, _ = obj.loss([x], rows)
    (g,) = torch.autograd.grad(loss.mean(), [x])
    adv = torch.clamp(x0 + eps * g.sign(), min=0, max=1).detach()
    logits = None
    fwd = 0
    if obj.labels is not None:
        with torch.no_grad():
            logits = obj.logits([adv], rows)
        fwd = B
    return AscentResult([adv], logits, torch.ones(B, dtype=torch.long), B, fwd)


# ----------------------------------------------------------------------------- libraries


class RowMatched(nn.Module):
    """A classifier over the rows of one batch that accepts any subset of its rows.

    `logits_fn(x, rows)` gives logits for images x of the examples `rows`. A call with
    fewer images than the batch (APGD, Square, FAB and AutoAttack attack subsets) is mapped
    back to its examples by nearest clean image (L2); attacks stay close to their clean
    image, and two examples of one batch never share an image in a generated task.
    """

    def __init__(
        self, logits_fn, x0: torch.Tensor, anchor: nn.Module | None = None, row_map: torch.Tensor | None = None
    ):
        super().__init__()
        self.logits_fn = logits_fn
        self.register_buffer("x0", x0.detach())
        self.row_map = row_map  # x0's rows -> rows of the objective's batch (None: the same)
        self.anchor = anchor  # a module with parameters (torchattacks reads the device from them)
        self.calls = 0
        self.examples = 0
        self.eval()

    def rows_of(self, x: torch.Tensor) -> torch.Tensor:
        B = self.x0.shape[0]
        if x.shape[0] == B:
            return torch.arange(B, device=x.device)
        d = torch.cdist(x.detach().reshape(x.shape[0], -1).float(), self.x0.reshape(B, -1).float())
        return d.argmin(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.examples += int(x.shape[0])
        rows = self.rows_of(x)
        return self.logits_fn(x, rows if self.row_map is None else self.row_map.to(rows.device)[rows])


def _torchattacks():
    try:
        import torchattacks
    except ImportError:
        raise AttackError(
            "torchattacks is not installed; install it with "
            "`pip install --no-deps torchattacks==3.5.1` (see `make setup`)"
        ) from None
    return torchattacks


def _foolbox():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import foolbox
    except ImportError:
        raise AttackError("foolbox is not installed; `pip install foolbox`") from None
    return foolbox


def _method(spec: AttackSpec):
    from .methods import get

    m = get(spec.kind, spec.method)
    if m is None:
        raise AttackError(f"no image attack method {spec.method!r}")
    return m


def _torchattacks_attack(spec: AttackSpec, model: nn.Module, eps: float, n_classes: int, seed: int):
    m = _method(spec)
    if m.torchattacks is None:
        raise AttackError(f"torchattacks backend has no {spec.method}")
    return m.torchattacks(spec, m.params(spec), _torchattacks(), model, eps, n_classes, seed)


def _foolbox_run(spec: AttackSpec, model: nn.Module, x0: torch.Tensor, labels: torch.Tensor, eps: float):
    fb = _foolbox()
    fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=x0.device)
    m = _method(spec)
    if m.foolbox is None:
        raise AttackError(f"foolbox backend has no {spec.method}")
    atk = m.foolbox(spec, m.params(spec), fb, eps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw, clipped, _ = atk(fmodel, x0, labels, epsilons=[eps])
    # a minimising method's result is kept for every larger eps (clipped to each there): its raw,
    # unclipped adversarial, not the one foolbox clipped to this eps
    return raw[0] if m.minimises else clipped[0]


def unique_image_groups(x0: torch.Tensor) -> list[torch.Tensor]:
    """Rows of x0 split into groups in which no image occurs twice (one group if none repeats).

    Several questions may share one image (VQAv2 does this); within a group `RowMatched`
    can then always tell which question an attacked image belongs to.
    """
    import hashlib

    groups: list[list[int]] = []
    seen: list[set] = []
    flat = x0.detach().cpu().contiguous()
    for i in range(flat.shape[0]):
        key = hashlib.sha1(flat[i].numpy().tobytes()).hexdigest()
        for g, keys in zip(groups, seen):
            if key not in keys:
                g.append(i)
                keys.add(key)
                break
        else:
            groups.append([i])
            seen.append({key})
    return [torch.tensor(g, dtype=torch.long, device=x0.device) for g in groups]


def _library_adv(spec, obj, x0, eps, rows, batch_seed, classifier, n_classes) -> torch.Tensor:
    """The library backend's adversarials of the batch rows `rows` (not yet projected)."""
    make = (lambda xs, r: classifier) if isinstance(classifier, nn.Module) else classifier
    whole = len(rows) == x0.shape[0]
    groups = [rows[g] for g in unique_image_groups(x0[rows])]
    adv = torch.empty_like(x0[rows])
    at = {int(r): k for k, r in enumerate(rows.tolist())}
    devices = [x0.device.index or 0] if x0.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.enable_grad():  # seeded without touching the caller's RNG
        for k, g in enumerate(groups):
            seed = int(batch_seed) + k
            torch.manual_seed(seed % (2**63))
            xg, yg = x0[g], obj.labels[g]
            clf = make(xg, None if len(groups) == 1 and whole else g)
            if spec.backend == "torchattacks":
                atk = _torchattacks_attack(spec, clf, eps, int(n_classes or 0), seed % (2**31))
                out = atk(xg, yg)
            else:
                out = _foolbox_run(spec, clf, xg, yg, eps)
            adv[torch.tensor([at[int(r)] for r in g.tolist()], device=x0.device)] = out.detach().to(x0.dtype)
    return adv


def _memos(spec: AttackSpec, cache: dict | None, ids: list | None) -> list[dict] | None:
    """One dict per example, kept in the batch's cache across eps, for a method that `remembers`."""
    if cache is None or ids is None or not _method(spec).remembers:
        return None
    return [cache.setdefault(("memo", *i) if isinstance(i, tuple) else ("memo", i), {}) for i in ids]


def run_image_attack(
    spec: AttackSpec,
    obj: Objective,
    x0: torch.Tensor,
    eps: float,
    *,
    seeds: list[int],
    batch_seed: int,
    early_stop: bool | None = None,
    classifier=None,
    n_classes: int | None = None,
    minimal: dict | None = None,
    ids: list | None = None,
) -> ImageResult:
    """Attack the batch x0 at eps with `spec`'s backend.

    obj: the objective of these examples (rows index x0). seeds: one per example (random
    starts of our PGD). batch_seed: seeds the library attacks. classifier (library
    backends): `classifier(x0_rows, rows) -> nn.Module` mapping images of those rows of
    the batch to logits (the objectives' `classifier` method), or an nn.Module.
    minimal, ids (a method that `minimises`, such as CW): a cache of each example's minimal
    perturbation by example id; an example found there is not attacked again, only its
    adversarial projected onto this eps ball. The same cache holds, by example id, the memo of
    a method that `remembers` (AutoAttack's FAB-T points, backend ours).
    """
    es = spec.early_stop if early_stop is None else early_stop
    if spec.backend == "ours":
        r = ours(spec, obj, x0, eps, seeds, es, _memos(spec, minimal, ids))
        logits, fwd = r.logits, r.fwd_evals
        if logits is None and obj.labels is not None:  # a method's own `run` may leave them to us
            with torch.no_grad():
                logits = obj.logits([r.xs[0]], torch.arange(x0.shape[0], device=x0.device))
            fwd += x0.shape[0]
        queries = int(spec.queries) if _method(spec).black_box and spec.queries else None  # the budget, as below
        return ImageResult(r.xs[0], logits, r.steps, queries, r.grad_evals, fwd)
    if obj.labels is None or classifier is None:
        raise AttackError(
            f"the {spec.backend} backend needs logits over candidates (a closed-answer task "
            f"or a classifier); use --backend ours"
        )
    B = x0.shape[0]
    m = _method(spec)
    cached = minimal is not None and ids is not None and m.minimises
    todo = [i for i in range(B) if not cached or ids[i] not in minimal]
    adv = torch.empty_like(x0)
    if todo:
        rows = torch.tensor(todo, dtype=torch.long, device=x0.device)
        adv[rows] = _library_adv(spec, obj, x0, eps, rows, batch_seed, classifier, n_classes)
    if cached:  # run once per example, clipped to each eps
        for i in todo:
            minimal[ids[i]] = adv[i].detach().clone()
        adv = torch.stack([minimal[ids[i]] for i in range(B)]).to(x0)
    adv = project(adv, x0, eps, spec.norm)
    with torch.no_grad():
        logits = obj.logits([adv], torch.arange(B, device=x0.device))
    black_box = m.black_box  # counted in queries, not gradient steps
    steps = torch.full((B,), 0 if black_box else spec.steps, dtype=torch.long)
    grads = len(todo) * (spec.steps if not black_box else 0) * spec.restarts
    queries = int(spec.queries) if black_box else None
    return ImageResult(adv, logits, steps, queries, grads, B)
