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

McNemar's exact test. Over paired correctness, b = examples only the first gets right and
c = examples only the second gets right; under the null of equal accuracy b ~
Binomial(b + c, 1/2), and the two-sided p-value is min(1, 2 P(X <= min(b, c))), which is
scipy.stats.binomtest(b, b + c, 0.5).pvalue. For non-binary per-example scores (CIDEr)
the same exact test runs on the signs of the paired differences (the sign test, of which
McNemar's test is the binary case).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEFAULT_SEED = 0
DEFAULT_B = 2000
LEVEL = 0.95
_CHUNK = 256


def bootstrap_means(values: np.ndarray, B: int = DEFAULT_B, seed: int = DEFAULT_SEED,
                    mask: np.ndarray | None = None) -> np.ndarray:
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
            out[s:s + rows] = np.where(den > 0, num / np.where(den > 0, den, 1), math.nan)
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


def paired_diff_ci(a: np.ndarray, b: np.ndarray, B: int = DEFAULT_B,
                   seed: int = DEFAULT_SEED) -> tuple[float, float, float]:
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


def rel_drop(clean: float, robust: float) -> float:
    """1 - robust / clean (nan when clean is 0)."""
    return (clean - robust) / clean if clean and math.isfinite(clean) else math.nan


# ----------------------------------------------------------------------------- McNemar

@dataclass(frozen=True)
class PairedTest:
    b: int  # first better (correct where the second is not; or higher score)
    c: int  # second better
    p: float
    test: str  # "mcnemar" or "sign"


def binom_two_sided_half(k: int, n: int) -> float:
    """Exact two-sided binomial p-value of k successes in n trials at p = 1/2.

    2 P(X <= min(k, n - k)), capped at 1, summed in log space (lgamma, log-sum-exp) so that
    it is fast and does not underflow for large n.
    """
    if n <= 0:
        return 1.0
    m = min(k, n - k)
    if 2 * m == n:
        return 1.0
    i = np.arange(m + 1, dtype=float)
    logp = (math.lgamma(n + 1) - np.array([math.lgamma(x + 1) + math.lgamma(n - x + 1) for x in i])
            - n * math.log(2.0))
    top = float(logp.max())
    tail = math.exp(top + math.log(float(np.exp(logp - top).sum())))
    return float(min(1.0, 2 * tail))


def mcnemar_exact(first: np.ndarray, second: np.ndarray) -> PairedTest:
    """McNemar's exact test on paired 0/1 correctness (nan pairs dropped)."""
    x = np.asarray(first, dtype=float)
    y = np.asarray(second, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok] > 0.5, y[ok] > 0.5
    b = int(np.sum(x & ~y))
    c = int(np.sum(~x & y))
    return PairedTest(b, c, binom_two_sided_half(b, b + c), "mcnemar")


def sign_test(first: np.ndarray, second: np.ndarray) -> PairedTest:
    """The exact sign test on paired scores (ties dropped): McNemar's test for non-binary scores."""
    x = np.asarray(first, dtype=float)
    y = np.asarray(second, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    d = x[ok] - y[ok]
    b = int(np.sum(d > 1e-12))
    c = int(np.sum(d < -1e-12))
    return PairedTest(b, c, binom_two_sided_half(b, b + c), "sign")


def format_p(p: float) -> str:
    if not math.isfinite(p):
        return "p n/a"
    if p < 0.001:
        return "p < 0.001"
    if p < 0.1:
        return f"p = {p:.3f}"
    return f"p = {p:.2f}"
