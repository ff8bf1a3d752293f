"""Certified robustness by randomized smoothing (Cohen, Rosenfeld and Kolter, ICML 2019) as a threat model.

Why: every other number robust-pt reports is an upper bound, the accuracy left after the attacks
it ran; a stronger attack could lower it. Randomized smoothing gives the lower bound no attack
can break: the smoothed classifier g(x) = argmax_c P(f(x + e) = c), e ~ N(0, sigma^2 I), cannot
change its prediction within an L2 radius sigma * Phi^-1(pA) of x, where pA lower-bounds the
probability of its top class. So a preset of kind `certify` (method `smoothing`) has eps that are
L2 radii in [0, 1] pixel space, 0 included, and the verdict at radius r is "the smoothed
classifier is right and its certified radius is at least r".

CERTIFY, as in the paper: n0 noisy copies pick the top class, n more count it, the one-sided
Clopper-Pearson lower bound at 1 - alpha is pA, and the example abstains when pA < 1/2 (radius
None, never certified). Each example is certified once per batch and every radius of the sweep
reads the same certificate, so the verdicts are nested in r by construction. Noise is drawn per
(run seed, example id, stage, block of BLOCK copies) and noisy copies of several examples share
each forward pass (`batch` copies per pass), so the certificate does not depend on the batching,
the attack batch or resuming (to floating point: batched kernels sum in another order). Noise is
not clipped to [0, 1]: as in the paper and ART, the base classifier sees x + e.

The convention every robust-pt attack uses holds here too: an example the model gets wrong on
the clean image counts as not robust and is not certified. Records carry the smoothed
prediction, its certified radius, pA, the top class's count among the n copies, whether the
example abstained and whether the smoothed answer is right whatever its radius (top_correct). PREDICT (a binomial test between the two most frequent classes) is `predict`.

This module imports torch only when it certifies, so presets and recipes naming `smoothing` are
checked without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from ..errors import AttackError
from . import methods
from .core import Bound, Outcome, ThreatModel
from .params import setting
from .seeds import derive_seed

if TYPE_CHECKING:  # torch is imported where it certifies (module docstring)
    import torch

BLOCK = 100  # noisy copies of one example drawn from one seed (the unit of batch independence)


@dataclass(frozen=True)
class SmoothingParams:
    """Cohen et al.'s CERTIFY: noise scale, selection and estimation samples, confidence, copies per pass."""

    sigma: float = setting(0.25, above=0.0)
    n0: int = setting(100, min=1)
    n: int = setting(1000, min=1)
    # the preset field `alpha` (PGD's step size elsewhere) is the confidence level here; None: ALPHA
    alpha: float | None = setting(None, above=0.0)
    batch: int = setting(128, min=1, speed=True)  # noisy copies per forward pass (the fastest on 2 CPU cores)


ALPHA = 0.001  # the paper's


def params(spec) -> SmoothingParams:
    """The smoothing parameters of a preset, alpha defaulted."""
    p = methods.get("certify", "smoothing").params(spec)
    return p if p.alpha is not None else replace(p, alpha=ALPHA)


def _check(spec) -> None:
    p = params(spec)
    if not 0.0 < p.alpha < 1.0:
        raise AttackError(f"attack {spec.name}: alpha must lie in (0, 1), got {p.alpha:g}")
    if spec.norm != "l2":
        raise AttackError(f"attack {spec.name}: randomized smoothing certifies L2 radii; set norm: l2")


methods.register(methods.AttackMethod("smoothing", "certify", SmoothingParams, ("ours",), check=_check))


# ----------------------------------------------------------------------------- the statistics


def lower_confidence_bound(k: int, n: int, alpha: float) -> float:
    """The one-sided (1 - alpha) Clopper-Pearson lower bound on a binomial proportion with k of n
    successes (statsmodels' proportion_confint(k, n, 2 alpha, "beta")[0], as Cohen et al. use)."""
    from scipy.stats import beta

    return 0.0 if k <= 0 else float(beta.ppf(alpha, k, n - k + 1))


def radius(p_lower: float, sigma: float) -> float | None:
    """sigma * Phi^-1(pA), or None (abstain) when pA < 1/2."""
    from scipy.stats import norm

    return None if p_lower < 0.5 else float(sigma * norm.ppf(p_lower))


def predict(counts: np.ndarray, alpha: float) -> int | None:
    """PREDICT: the most frequent class if a two-sided binomial test separates it from the runner-up at
    level alpha, else None (abstain)."""
    from scipy.stats import binomtest

    order = np.argsort(-np.asarray(counts), kind="stable")
    a, b = int(counts[order[0]]), int(counts[order[1]]) if len(order) > 1 else 0
    if a + b == 0 or binomtest(a, a + b, 0.5).pvalue > alpha:
        return None
    return int(order[0])


# ----------------------------------------------------------------------------- sampling


def _blocks(seeds: Sequence[int], num: int, stage: str):
    """(row, generator seed, copies) of every block of noisy copies, example by example."""
    for i, s in enumerate(seeds):
        for j in range(math.ceil(num / BLOCK)):
            yield i, derive_seed(s, stage, j), min(BLOCK, num - j * BLOCK)


def class_counts(
    logits_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    seeds: Sequence[int],
    num: int,
    sigma: float,
    batch: int,
    stage: str,
) -> torch.Tensor:
    """(m, K) counts of the base classifier's predictions on `num` noisy copies x0[i] + N(0, sigma^2 I) of
    each example; logits_of(images, rows) -> (len(rows), K). Copies go `batch` to a forward pass."""
    import torch

    m = x0.shape[0]
    counts: torch.Tensor | None = None  # (m, K), once the first pass says K
    buf_x: list[torch.Tensor] = []
    buf_r: list[torch.Tensor] = []

    def flush(size: int) -> None:
        nonlocal counts, buf_x, buf_r
        xs, rs = torch.cat(buf_x), torch.cat(buf_r)
        with torch.no_grad():
            logits = logits_of(xs[:size], rs[:size])
        pred = logits.argmax(-1).cpu()
        if counts is None:
            counts = torch.zeros(m, logits.shape[-1], dtype=torch.long)
        counts.index_put_((rs[:size].cpu(), pred), torch.ones_like(pred), accumulate=True)
        buf_x, buf_r = ([xs[size:]], [rs[size:]]) if size < len(xs) else ([], [])

    held = 0
    for i, s, k in _blocks(seeds, num, stage):
        g = torch.Generator().manual_seed(s)
        noise = torch.randn((k, *x0.shape[1:]), generator=g).to(x0) * sigma
        buf_x.append(x0[i : i + 1] + noise)
        buf_r.append(torch.full((k,), i, dtype=torch.long, device=x0.device))
        held += k
        while held >= batch:
            flush(batch)
            held -= batch
    if held:
        flush(held)
    return counts


#: what a certification record adds (None where the example was not certified: wrong on the clean image)
RECORD_FIELDS = ("certified_radius", "p_lower", "top_count", "samples", "abstain", "top_correct")


@dataclass
class Certificate:
    """One example's CERTIFY: its top class, pA, the top class's count of n, its radius (None: abstained)."""

    top: int
    p_lower: float
    top_count: int
    n: int
    radius: float | None

    @property
    def abstain(self) -> bool:
        return self.radius is None

    def certified_at(self, r: float) -> bool:
        return self.radius is not None and self.radius >= r

    def fields(self) -> dict:
        """Its record fields (RECORD_FIELDS but top_correct, which the victim judges)."""
        return dict(zip(RECORD_FIELDS, (self.radius, self.p_lower, self.top_count, self.n, self.abstain)))


def certify(logits_of, x0: torch.Tensor, seeds: Sequence[int], p: SmoothingParams) -> list[Certificate]:
    """Cohen et al.'s CERTIFY on each example of x0 (one seed each)."""
    c0 = class_counts(logits_of, x0, seeds, p.n0, p.sigma, p.batch, "select")
    top = c0.argmax(1)  # ties: the lowest class index
    c = class_counts(logits_of, x0, seeds, p.n, p.sigma, p.batch, "estimate")
    out = []
    for i in range(x0.shape[0]):
        k = int(c[i, top[i]])
        pa = lower_confidence_bound(k, p.n, p.alpha)
        out.append(Certificate(int(top[i]), pa, k, p.n, radius(pa, p.sigma)))
    return out


# ----------------------------------------------------------------------------- the threat model


class _Logits:
    """The victim's candidate logits of noisy copies, by the row of the example each copy is of."""

    def __init__(self, victim, examples):
        self.obj, self.stats = victim.image_objective(examples), victim.stats

    def __call__(self, xs: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        self.stats["fwd_evals"] += len(xs)
        return self.obj.logits([xs], rows)


class _SmoothingBound(Bound):
    def start_batch(self) -> None:
        self.memo: dict = {}  # example id -> Certificate, this batch (every radius reads the same one)

    def perturb(self, b, examples, index, x0, eps, restart):
        p = params(self.spec)
        memo = self.__dict__.setdefault("memo", {})
        todo = [i for i, ex in enumerate(examples) if ex.id not in memo]
        if todo:
            seeds = [derive_seed(self.seed, examples[i].id, "smoothing") for i in todo]
            certs = certify(_Logits(self.victim, [examples[i] for i in todo]), x0[todo], seeds, p)
            memo.update({examples[i].id: c for i, c in zip(todo, certs)})
        certs = [memo[ex.id] for ex in examples]
        preds = [c.top for c in certs]
        raw = self.victim.scores(examples, index, preds)
        scores = np.where([c.certified_at(eps) for c in certs], raw, 0.0)  # not certified here: not robust
        zeros = np.zeros(len(examples))
        # top_correct: the victim's verdict on the smoothed answer, whatever its radius (the report's average radius)
        right = self.victim.clean_correct(raw)
        extra = [{**c.fields(), "top_correct": ok} for c, ok in zip(certs, right)]
        return Outcome(preds, scores, zeros, zeros, zeros.astype(np.int64), p.n0 + p.n, extra=extra)


class Certify(ThreatModel):
    """Presets of kind `certify`: method smoothing, eps certified L2 radii in pixel space (0 allowed)."""

    name = "certify"
    needs = frozenset({"logits"})
    logits_reason = "needs logits over candidate answers (randomized smoothing certifies a classifier over them)"
    record_fields = dict.fromkeys(RECORD_FIELDS)
    methods = ("smoothing",)
    eps_units = ("pixel",)
    zero_eps = True
    access = "certified"  # a lower bound, not an attack: the report keeps it apart

    def check_eps(self, spec, eps) -> None:
        bad = [e for e in eps if e < 0]
        if bad:
            raise AttackError(f"attack {spec.name}: a certified radius cannot be negative, got {bad[0]:g}")

    def bind(self, victim, spec, seed: int) -> Bound:
        return _SmoothingBound(self, victim, spec, seed)


CERTIFY = Certify()
