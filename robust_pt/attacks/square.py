"""Square Attack (Andriushchenko et al. 2020), L-inf and L2, with every random draw per example.

Why our own instead of torchattacks' port of the reference (fra31/auto-attack): the reference
draws one window position and one set of channel signs per iteration for the whole batch (and
the initial stripes from the batch's generator), so an example's result depends on which
examples share its batch. Here every draw comes from the example's own generator, drawn for
the whole query budget up front as small tensors (per iteration: the window's corner and a sign
per channel; L2 adds the second window's corner and whether the window's pattern is
transposed), in the order the reference draws them for a batch of one, and each example's window
is applied by mask or index, so the batch stays vectorised with no loop over images: an example's
result is the reference's on that example alone with its seed (tests/test_autoattack_ours.py). Only examples whose margin is still positive are queried,
as in the reference: an example stops the moment it is misclassified and keeps that point.

What stays the reference's: the margin (or cross-entropy) loss from the logits, vertical-stripe
init (L-inf) or the grid of eta patterns (L2), the schedule of the square's share p of the
image (p_init halved at iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of 10000,
rescaled to the budget unless `rescale` is off, as AutoAttack runs it), and an update kept only
when it lowers the loss or misclassifies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .apgd import box, l2_norm, unit
from .gradient import AscentResult, Objective, example_generator
from .seeds import derive_seed
from .tally import Found, Tally, keep_rows, wrong

BOUNDS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_selection(i: int, queries: int, p_init: float, rescale: bool) -> float:
    """The reference's schedule: the share of the image a square covers at iteration i."""
    it = int(i / queries * 10000) if rescale else i
    return p_init / 2 ** sum(it > b for b in BOUNDS)


def window_sizes(queries: int, p_init: float, rescale: bool, h: int, w: int, norm: str) -> list[int]:
    """The square's side at every iteration (L2: at least 3 and odd, as in the reference)."""
    out = []
    for i in range(queries):
        s = int(round(math.sqrt(p_selection(i, queries, p_init, rescale) * h * w)))
        if norm == "linf":
            s = max(s, 1)
        else:
            s = max(s, 3)
            s += 1 if s % 2 == 0 else 0
        out.append(min(s, h, w))
    return out


@dataclass
class Draws:
    """One example's random draws per row, for the whole budget (m examples, Q iterations, c channels)."""

    init_signs: torch.Tensor  # L-inf: (m, c, 1, w) stripe signs; L2: (m, cells, c) signs of the init grid
    init_flip: torch.Tensor | None  # L2: (m, cells) whether each init pattern is transposed
    corner: torch.Tensor  # (m, Q, 2) window corner (L2: (m, Q, 4), two windows), int16
    signs: torch.Tensor  # (m, Q, c) int8 sign per channel
    flip: torch.Tensor | None  # L2: (m, Q) whether the pattern is transposed

    def to(self, device) -> "Draws":
        move = lambda t: None if t is None else t.to(device)
        return Draws(*(move(t) for t in (self.init_signs, self.init_flip, self.corner, self.signs, self.flip)))


def _sign(u: torch.Tensor) -> torch.Tensor:
    return torch.sign(2 * u - 1)


def draw(seeds: list[int], norm: str, shape: tuple[int, int, int], sizes: list[int], cells: int) -> Draws:
    """Each example's draws from its own generator, in the order the reference draws them for a batch
    of one: the init (L-inf: c x w stripe signs; L2: per grid cell, a transpose flag then c signs), then
    per iteration the corner(s), (L2) the transpose flag and a sign per channel."""
    c, h, w = shape
    spans = torch.tensor([[h - s, w - s] for s in sizes], dtype=torch.float32)
    k = 2 if norm == "linf" else 4
    init, init_flip, corner, signs, flip = [], [], [], [], []
    for s in seeds:
        g = example_generator(s)
        if norm == "linf":
            init.append(_sign(torch.rand(c, 1, w, generator=g)))
        else:
            u0 = torch.rand(cells, 1 + c, generator=g)
            init_flip.append(u0[:, 0] > 0.5)
            init.append(_sign(u0[:, 1:]))
        f = 0 if norm == "linf" else 1
        u = torch.rand(len(sizes), k + f + c, generator=g)
        corner.append((spans.repeat(1, k // 2) * u[:, :k]).long().to(torch.int16))
        if f:
            flip.append(u[:, k] > 0.5)
        signs.append(_sign(u[:, k + f :]).to(torch.int8))
    stack = lambda ts: torch.stack(ts) if ts else None
    return Draws(torch.stack(init), stack(init_flip), torch.stack(corner), torch.stack(signs), stack(flip))


def _rectangles(x: int, y: int) -> torch.Tensor:
    d = torch.zeros(x, y)
    a, b = x // 2, y // 2
    for k in range(max(x // 2 + 1, y // 2 + 1)):
        d[max(a, 0) : min(a + 2 * k + 1, x), max(b, 0) : min(b + 2 * k + 1, y)] += 1.0 / (k + 1) ** 2
        a, b = a - 1, b - 1
    return d / d.pow(2).sum().sqrt()


def eta(s: int) -> torch.Tensor:
    """The reference's L2 pattern of side s (nested rectangles, + on the top half, - on the bottom), unit norm."""
    d = torch.zeros(s, s)
    d[: s // 2] = _rectangles(s // 2, s)
    d[s // 2 :] = -_rectangles(s - s // 2, s)
    return d / d.pow(2).sum().sqrt()


def _pattern(etas: dict, s: int, flip: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(n, 1, s, s): eta(s), transposed where `flip`."""
    if s not in etas:
        etas[s] = eta(s).to(like)
    e = etas[s]
    return torch.where(flip.view(-1, 1, 1, 1), e.t(), e)


def _window(h0: torch.Tensor, w0: torch.Tensor, s: int, h: int, w: int) -> torch.Tensor:
    """(n, 1, h, w) bool: each example's s x s window at its own corner."""
    ar_h, ar_w = torch.arange(h, device=h0.device), torch.arange(w, device=w0.device)
    mh = (ar_h >= h0[:, None]) & (ar_h < h0[:, None] + s)
    mw = (ar_w >= w0[:, None]) & (ar_w < w0[:, None] + s)
    return (mh[:, :, None] & mw[:, None, :])[:, None]


def _window_index(h0: torch.Tensor, w0: torch.Tensor, s: int, c: int) -> tuple[torch.Tensor, ...]:
    """Advanced indices of each example's s x s window, all channels: t[idx] is (n, c, s, s)."""
    ar = torch.arange(s, device=h0.device)
    n = h0.shape[0]
    return (
        torch.arange(n, device=h0.device).view(n, 1, 1, 1),
        torch.arange(c, device=h0.device).view(1, c, 1, 1),
        (h0[:, None] + ar).view(n, 1, s, 1),
        (w0[:, None] + ar).view(n, 1, 1, s),
    )


def _l2(t: torch.Tensor) -> torch.Tensor:
    return l2_norm(t).view(-1, 1, 1, 1)


def _init(x0: torch.Tensor, d: Draws, eps: float, norm: str, etas: dict) -> torch.Tensor:
    """L-inf: +-eps vertical stripes per channel. L2: a grid of eta patterns with a sign per channel."""
    if norm == "linf":
        return torch.clamp(x0 + eps * d.init_signs.to(x0.dtype), 0.0, 1.0)
    _, _, h, w = x0.shape
    s = max(h // 5, 1)
    sp = (h - s * 5) // 2
    delta = torch.zeros_like(x0)
    for cell in range((h // s) * (w // s)):
        vh, vw = sp + (cell // (w // s)) * s, sp + (cell % (w // s)) * s
        if vh + s <= h and vw + s <= w:  # the reference's grid never leaves the image where it runs at all
            pat = _pattern(etas, s, d.init_flip[:, cell], x0)
            delta[:, :, vh : vh + s, vw : vw + s] += pat * d.init_signs[:, cell].to(x0.dtype)[:, :, None, None]
    return torch.clamp(x0 + unit(delta, "l2") * eps, 0.0, 1.0)


def _cells(h: int, w: int) -> int:
    s = max(h // 5, 1)
    return (h // s) * (w // s)


def _linf_candidate(st: dict, d: Draws, i: int, s: int, eps: float, etas: dict) -> torch.Tensor:
    x0, at = st["x0"], st["at"]
    corner = d.corner[at, i].long()
    mask = _window(corner[:, 0], corner[:, 1], s, x0.shape[2], x0.shape[3]).to(x0.dtype)
    signs = d.signs[at, i].to(x0.dtype)[:, :, None, None]
    return torch.clamp(st["x_best"] + mask * (2 * eps) * signs, st["lo"], st["hi"])


def _l2_candidate(st: dict, d: Draws, i: int, s: int, eps: float, etas: dict) -> torch.Tensor:
    """Move the mass of window 2 into window 1 with a fresh pattern, keeping the L2 norm at eps."""
    x0, at = st["x0"], st["at"]
    _, c, h, w = x0.shape
    delta = st["x_best"] - x0
    h1, w1, h2, w2 = d.corner[at, i].long().unbind(1)
    m1, m2 = _window(h1, w1, s, h, w), _window(h2, w2, s, h, w)
    idx = _window_index(h1, w1, s, c)
    win = delta[idx]
    n_win1 = win.pow(2).sum((-2, -1), keepdim=True).sqrt()
    n_img, n_wins = _l2(delta), _l2(delta * (m1 | m2).to(x0.dtype))
    new = _pattern(etas, s, d.flip[at, i], x0) * d.signs[at, i].to(x0.dtype)[:, :, None, None]
    new = new + win / (1e-12 + n_win1)
    room = torch.clamp((torch.ones_like(new) * eps) ** 2 - n_img**2, min=0) / c + n_wins**2
    new = new / (1e-12 + new.pow(2).sum((-2, -1), keepdim=True).sqrt()) * room.sqrt()
    delta = (delta * (~m2).to(x0.dtype)).index_put(idx, new)
    return torch.clamp(x0 + unit(delta, "l2") * eps, 0.0, 1.0)


def margin_and_loss(logits: torch.Tensor, y: torch.Tensor, loss: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The margin z_y - max_{i != y} z_i and the loss Square lowers (the margin, or -cross-entropy)."""
    true = logits.gather(1, y[:, None])
    margin = (true - logits.scatter(1, y[:, None], -float("inf")).max(-1, keepdim=True).values).squeeze(1)
    return margin, margin if loss == "margin" else -F.cross_entropy(logits, y, reduction="none")


def _accept(st: dict, x_new: torch.Tensor, logits: torch.Tensor, loss: str) -> None:
    margin, val = margin_and_loss(logits, st["y"], loss)
    better = val < st["loss"]
    st["loss"] = torch.where(better, val, st["loss"])
    better = better | (margin <= 0)
    st["margin"] = torch.where(better, margin, st["margin"])
    st["x_best"] = torch.where(better.view(-1, 1, 1, 1), x_new, st["x_best"])
    st["lg"] = torch.where(better[:, None], logits, st["lg"])


def _retire(f: Found, st: dict, mask: torch.Tensor) -> None:
    at = st["at"][mask]
    f.adv[at] = st["x_best"][mask]
    f.logits[at] = st["lg"][mask]


def square_run(
    obj: Objective,
    rows: torch.Tensor,
    x0: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    norm: str,
    queries: int,
    p_init: float,
    loss: str,
    rescale: bool,
    seeds: list[int],
) -> Found:
    """One Square run on the examples `rows` of the objective's batch (x0, y: theirs), one seed each."""
    m, c, h, w = x0.shape
    sizes = window_sizes(queries, p_init, rescale, h, w, norm)
    d = draw(seeds, norm, (c, h, w), sizes, _cells(h, w)).to(x0.device)
    etas: dict = {}
    x_best = _init(x0, d, eps, norm, etas)
    with torch.no_grad():
        logits = obj.logits([x_best], rows)
    margin, val = margin_and_loss(logits, y, loss)
    f = Found(x_best.clone(), logits.clone(), torch.zeros(m, dtype=torch.bool), torch.zeros(m, dtype=torch.long))
    f.fwd_evals = m
    st = dict(at=torch.arange(m, device=x0.device), rows=rows, x0=x0, y=y, x_best=x_best, lg=logits)
    st.update(margin=margin, loss=val)
    if norm == "linf":
        st["lo"], st["hi"] = box(x0, eps)
    candidate = _linf_candidate if norm == "linf" else _l2_candidate
    for i in range(queries):
        done = st["margin"] <= 0
        if bool(done.any()):
            _retire(f, st, done)
            st = keep_rows(st, ~done)
        if st["at"].numel() == 0:
            break
        x_new = candidate(st, d, i, sizes[i], eps, etas)
        with torch.no_grad():
            lg = obj.logits([x_new], st["rows"])
        f.fwd_evals += int(st["at"].numel())
        _accept(st, x_new, lg, loss)
    _retire(f, st, torch.ones_like(st["margin"], dtype=torch.bool))
    f.fooled = wrong(f.logits, y)
    return f


def run(spec, p, obj: Objective, x0: torch.Tensor, eps: float, seeds: list[int], early_stop: bool) -> AscentResult:
    """Backend ours of method square: `restarts` runs on the examples still standing, each example's
    draws from derive_seed(its seed, "square", restart). It always stops an example once it is
    misclassified (the reference does too), whatever early_stop says."""
    t = Tally(obj, x0, spec.name)
    for r in range(p.restarts):
        rows = t.todo()
        if rows.numel() == 0:
            break
        how = dict(norm=spec.norm, queries=int(p.queries), p_init=p.p_init, loss=p.loss, rescale=True)
        seeds_r = [derive_seed(seeds[i], "square", r) for i in rows.tolist()]
        t.merge(rows, square_run(obj, rows, x0[rows], t.y[rows], eps, seeds=seeds_r, **how), everything=True)
    return t.result()
