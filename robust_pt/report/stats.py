"""Statistics: the paired bootstrap and McNemar's exact test.

Paired bootstrap. For n paired examples and B replicates, replicate b draws
`idx = rng.integers(0, n, n)` from `rng = numpy.random.default_rng(seed)` (replicates drawn
one after another from that one generator), and every statistic of the comparison is
computed on the same resampled examples: the robust metric at each eps of a run, both
sides of a gap. The 95% CI is the 2.5th and 97.5th percentile of the replicates
(numpy.percentile, linear interpolation). `bootstrap_means` does this without building
B x n index arrays: each replicate's draw becomes a count vector and means are
count-weighted sums, so the numbers equal the direct computation exactly (up to
floating-point rounding).

One decision rule per comparison, an interval that agrees with it, and multiplicity:

* Binary verdicts (accuracy, Acc@0.5): McNemar's exact test (statsmodels). Over paired
  correctness, b = examples only the first gets right, c = only the second; under the
  null b ~ Binomial(b + c, 1/2), p = min(1, 2 P(X <= min(b, c))). The interval beside it
  is the one that test inverts: the Clopper-Pearson 95% interval (pi_lo, pi_hi) of
  pi = b / (b + c), the share of discordant pairs won by the first, mapped to the gap
  (b - c) / n = (b + c) / n * (2 pi - 1) with the discordant share held at its observed
  value (the exact conditional interval). It excludes 0 exactly when p < 0.05.
* Graded verdicts (per-example CIDEr) and relative drops: the paired bootstrap above gives
  the standard error SE of the statistic (the replicates' standard deviation); the interval
  is estimate -/+ 1.96 SE and the test its two-sided normal p-value 2 (1 - Phi(|estimate| /
  SE)) (`bootstrap_wald`), so the interval excludes 0 exactly when p < 0.05, and p is not
  limited to multiples of 1 / B (a percentile-based p could never pass Holm's 0.05 / 264).
  The sign test on graded scores tests the median difference, not the mean gap the report
  prints, so no interval on that gap agrees with it; its counts (b, c: examples scored
  higher / lower) stay in the table.
* Across a report's comparisons the p-values are adjusted (statsmodels `multipletests`):
  Benjamini-Hochberg by default, Holm, or none; the adjusted decision (`p_adj < 0.05`) is
  what the counts, the verdict, the findings and the gate use. The robust-metric gaps and
  the relative-drop gaps are two families, each adjusted on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..runformat import rel_drop  # noqa: F401  (1 - robust / clean; one definition, shared with the run summary)

DEFAULT_SEED = 0
DEFAULT_B = 2000
LEVEL = 0.95
_CHUNK = 256


def bootstrap_means(
    values: np.ndarray, B: int = DEFAULT_B, seed: int = DEFAULT_SEED, mask: np.ndarray | None = None
) -> np.ndarray:
    """(B, k) replicate means of the k columns of `values` (n, k), resampling rows together.

    `mask` (n, k) marks which entries exist (a column's mean is over its present rows);
    a replicate where a column has no present row gives nan there.
    """
    v = np.asarray(values, dtype=float)
    if v.ndim == 1:
        v = v[:, None]
    n, k = v.shape
    m = np.isfinite(v) if mask is None else (np.asarray(mask, dtype=bool) & np.isfinite(v))
    vz = np.where(m, v, 0.0)
    mf = m.astype(float)
    out = np.empty((B, k))
    if n == 0:
        out[:] = math.nan
        return out
    rng = np.random.default_rng(seed)
    for s in range(0, B, _CHUNK):
        rows = min(_CHUNK, B - s)
        counts = np.empty((rows, n))
        for j in range(rows):
            counts[j] = np.bincount(rng.integers(0, n, n), minlength=n)
        num = counts @ vz
        den = counts @ mf
        with np.errstate(invalid="ignore", divide="ignore"):
            out[s : s + rows] = np.where(den > 0, num / np.where(den > 0, den, 1), math.nan)
    return out


def percentile_ci(replicates: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The percentile interval of bootstrap replicates (nan replicates dropped)."""
    r = np.asarray(replicates, dtype=float)
    r = r[np.isfinite(r)]
    if not len(r):
        return (math.nan, math.nan)
    a = (1 - level) / 2 * 100
    lo, hi = np.percentile(r, [a, 100 - a])
    return float(lo), float(hi)


def mean_ci(x: np.ndarray, B: int = DEFAULT_B, seed: int = DEFAULT_SEED) -> tuple[float, float, float]:
    """(mean, lo, hi) of one sample."""
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    if not len(x):
        return (math.nan, math.nan, math.nan)
    lo, hi = percentile_ci(bootstrap_means(x, B, seed)[:, 0])
    return float(x.mean()), lo, hi


def paired_diff_ci(
    a: np.ndarray, b: np.ndarray, B: int = DEFAULT_B, seed: int = DEFAULT_SEED
) -> tuple[float, float, float]:
    """(mean(a) - mean(b), lo, hi) over paired examples (rows with a value on both sides)."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if not len(a):
        return (math.nan, math.nan, math.nan)
    reps = bootstrap_means(np.stack([a, b], 1), B, seed)
    lo, hi = percentile_ci(reps[:, 0] - reps[:, 1])
    return float(a.mean() - b.mean()), lo, hi


# ----------------------------------------------------------------------------- tests and intervals

ALPHA = 1 - LEVEL
CORRECTIONS = {"bh": "fdr_bh", "holm": "holm", "none": None}  # --correction -> statsmodels method
DEFAULT_CORRECTION = "bh"
CORRECTION_NAMES = {"bh": "Benjamini-Hochberg", "holm": "Holm", "none": "no correction"}


@dataclass(frozen=True)
class PairedTest:
    b: int  # first better (correct where the second is not; or higher score)
    c: int  # second better
    p: float
    test: str  # "mcnemar" or "bootstrap"


def mcnemar_p(b: int, c: int) -> float:
    """McNemar's exact two-sided p-value for b and c discordant pairs (statsmodels)."""
    from statsmodels.stats.contingency_tables import mcnemar

    if b + c == 0:
        return 1.0
    return float(mcnemar([[0, b], [c, 0]], exact=True).pvalue)


def mcnemar_exact(first: np.ndarray, second: np.ndarray) -> PairedTest:
    """McNemar's exact test on paired 0/1 correctness (nan pairs dropped)."""
    b, c = discordant(first, second, binary=True)
    return PairedTest(b, c, mcnemar_p(b, c), "mcnemar")


def discordant(first: np.ndarray, second: np.ndarray, binary: bool) -> tuple[int, int]:
    """(b, c): pairs where the first is better / the second is (correct vs not, or a higher score)."""
    x = np.asarray(first, dtype=float)
    y = np.asarray(second, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    if binary:
        x, y = x[ok] > 0.5, y[ok] > 0.5
        return int(np.sum(x & ~y)), int(np.sum(~x & y))
    d = x[ok] - y[ok]
    return int(np.sum(d > 1e-12)), int(np.sum(d < -1e-12))


def exact_gap_ci(b: int, c: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """The interval McNemar's exact test inverts, on the scale of the gap (b - c) / n: Clopper-Pearson
    for b / (b + c), times the observed discordant share (b + c) / n. (0, 0) with no discordant pair."""
    from statsmodels.stats.proportion import proportion_confint

    if n <= 0:
        return (math.nan, math.nan)
    m = b + c
    if m == 0:
        return (0.0, 0.0)
    lo, hi = proportion_confint(b, m, alpha=1 - level, method="beta")
    return float(m / n * (2 * lo - 1)), float(m / n * (2 * hi - 1))


def bootstrap_wald(estimate: float, replicates: np.ndarray, level: float = LEVEL) -> tuple[float, float, float]:
    """(lo, hi, p) for "the statistic is 0": estimate -/+ z x the bootstrap standard error, and the
    two-sided normal p-value of estimate / SE, so the interval excludes 0 exactly when p < 1 - level.
    (nan, nan, nan) without finite replicates or estimate."""
    from scipy.stats import norm

    r = np.asarray(replicates, dtype=float)
    r = r[np.isfinite(r)]
    if len(r) < 2 or not math.isfinite(estimate):
        return (math.nan, math.nan, math.nan)
    se = 0.0 if r.min() == r.max() else float(r.std(ddof=1))  # identical replicates: exactly 0
    z = float(norm.ppf(1 - (1 - level) / 2))
    if se == 0.0:
        return (estimate, estimate, 1.0 if estimate == 0 else 0.0)
    return (estimate - z * se, estimate + z * se, float(2 * norm.sf(abs(estimate) / se)))


def adjust(p: np.ndarray, correction: str = DEFAULT_CORRECTION) -> np.ndarray:
    """p-values adjusted across one family of comparisons (nan entries left out and kept nan)."""
    from statsmodels.stats.multitest import multipletests

    if correction not in CORRECTIONS:
        raise ValueError(f"unknown correction {correction!r}; use one of {', '.join(CORRECTIONS)}")
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, math.nan)
    ok = np.isfinite(p)
    method = CORRECTIONS[correction]
    if not ok.any():
        return out
    out[ok] = p[ok] if method is None else multipletests(p[ok], alpha=ALPHA, method=method)[1]
    return out


def format_p(p: float) -> str:
    if not math.isfinite(p):
        return "p n/a"
    if p < 0.001:
        return "p < 0.001"
    if p < 0.1:
        return f"p = {p:.3f}"
    return f"p = {p:.2f}"
