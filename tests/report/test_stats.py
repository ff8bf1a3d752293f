"""The statistics against direct computations and scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from robust_pt.report import stats


def direct_reps(cols: list[np.ndarray], fn, B: int, seed: int) -> np.ndarray:
    """The textbook paired bootstrap: resample example indices, recompute."""
    rng = np.random.default_rng(seed)
    n = len(cols[0])
    reps = []
    for _ in range(B):
        idx = rng.integers(0, n, n)
        reps.append(fn(*[c[idx] for c in cols]))
    return np.asarray(reps, float)


def direct_ci(cols: list[np.ndarray], fn, B: int, seed: int) -> tuple[float, float]:
    """The percentile interval of the textbook paired bootstrap."""
    lo, hi = np.percentile(direct_reps(cols, fn, B, seed), [2.5, 97.5])
    return float(lo), float(hi)


def test_bootstrap_means_equal_the_direct_resampling():
    rng = np.random.default_rng(5)
    v = rng.random((37, 3))
    reps = stats.bootstrap_means(v, B=300, seed=7)
    r = np.random.default_rng(7)
    for b in range(300):
        idx = r.integers(0, 37, 37)
        np.testing.assert_allclose(reps[b], v[idx].mean(0), rtol=0, atol=1e-12)


@pytest.mark.parametrize("B", [100, 1000, 2000])
def test_paired_diff_ci_matches_direct_computation(B):
    rng = np.random.default_rng(1)
    a = (rng.random(50) < 0.7).astype(float)
    b = (rng.random(50) < 0.5).astype(float)
    d, lo, hi = stats.paired_diff_ci(a, b, B=B, seed=3)
    dlo, dhi = direct_ci([a, b], lambda x, y: x.mean() - y.mean(), B, 3)
    assert d == pytest.approx(a.mean() - b.mean())
    assert (lo, hi) == pytest.approx((dlo, dhi), abs=1e-12)
    # the seed is fixed: same answer twice, another seed gives another interval
    assert stats.paired_diff_ci(a, b, B=B, seed=3) == (d, lo, hi)


def test_mean_ci_and_missing_values():
    x = np.array([1, 0, 1, 1, np.nan, 0, 1, 1.0])
    m, lo, hi = stats.mean_ci(x, B=500, seed=0)
    ok = x[np.isfinite(x)]
    assert m == pytest.approx(ok.mean())
    assert (lo, hi) == pytest.approx(direct_ci([ok], np.mean, 500, 0), abs=1e-12)
    assert np.isnan(stats.mean_ci(np.array([]))[0])


@pytest.mark.parametrize("b,c", [(0, 0), (3, 0), (5, 1), (1, 5), (7, 7), (30, 12), (120, 95), (0, 40)])
def test_mcnemar_exact_equals_scipy_binomtest(b, c):
    first = np.array([1] * b + [0] * c + [1] * 9 + [0] * 4, float)
    second = np.array([0] * b + [1] * c + [1] * 9 + [0] * 4, float)
    t = stats.mcnemar_exact(first, second)
    assert (t.b, t.c, t.test) == (b, c, "mcnemar")
    expected = 1.0 if b + c == 0 else sps.binomtest(b, b + c, 0.5).pvalue
    assert t.p == pytest.approx(expected, rel=1e-12, abs=1e-300)


@pytest.mark.parametrize("b,c", [(4000, 6000), (49800, 50200), (1, 1999)])
def test_mcnemar_p_for_large_counts(b, c):
    assert stats.mcnemar_p(b, c) == pytest.approx(sps.binomtest(b, b + c, 0.5).pvalue, rel=1e-8)


@pytest.mark.parametrize("b,c,n", [(20, 8, 512), (8, 20, 512), (3, 0, 40), (0, 0, 40), (55, 30, 300), (1, 1, 9)])
def test_exact_interval_is_clopper_pearson_on_the_discordant_pairs(b, c, n):
    lo, hi = stats.exact_gap_ci(b, c, n)
    m = b + c
    if m == 0:
        assert (lo, hi) == (0.0, 0.0)
        return
    # Clopper-Pearson from the beta quantiles, written out
    plo = 0.0 if b == 0 else sps.beta.ppf(0.025, b, m - b + 1)
    phi = 1.0 if b == m else sps.beta.ppf(0.975, b + 1, m - b)
    assert (lo, hi) == pytest.approx((m / n * (2 * plo - 1), m / n * (2 * phi - 1)), abs=1e-12)
    assert lo <= (b - c) / n <= hi


def test_the_exact_interval_excludes_zero_exactly_when_mcnemar_is_significant():
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(3000):
        m = int(rng.integers(1, 120))
        b = int(rng.integers(0, m + 1))
        p = stats.mcnemar_p(b, m - b)
        lo, hi = stats.exact_gap_ci(b, m - b, m + int(rng.integers(0, 400)))
        assert (lo > 0 or hi < 0) == (p < 0.05), (b, m - b, p, lo, hi)
        checked += p < 0.05
    assert 300 < checked < 2900  # both outcomes were exercised


def test_bootstrap_wald_is_estimate_and_standard_error_of_the_replicates():
    rng = np.random.default_rng(1)
    reps = rng.normal(0.02, 0.01, 2000)
    lo, hi, p = stats.bootstrap_wald(0.021, reps)
    se = np.std(reps, ddof=1)
    assert (lo, hi) == pytest.approx((0.021 - 1.959963984540054 * se, 0.021 + 1.959963984540054 * se), rel=1e-12)
    assert p == pytest.approx(2 * sps.norm.sf(0.021 / se), rel=1e-12)
    assert stats.bootstrap_wald(0.0, np.zeros(50)) == (0.0, 0.0, 1.0)
    assert stats.bootstrap_wald(0.1, np.full(50, 0.1)) == (0.1, 0.1, 0.0)
    assert all(np.isnan(stats.bootstrap_wald(float("nan"), reps)))


def test_bootstrap_interval_excludes_zero_exactly_when_its_test_is_significant():
    rng = np.random.default_rng(2)
    seen = {True: 0, False: 0}
    for _ in range(3000):
        reps = rng.normal(rng.normal(0, 0.03), 0.015, int(rng.choice([100, 2000])))
        lo, hi, p = stats.bootstrap_wald(float(rng.normal(0, 0.03)), reps)
        assert (lo > 0 or hi < 0) == (p < 0.05), (lo, hi, p)
        seen[p < 0.05] += 1
    assert min(seen.values()) > 300  # both outcomes exercised


def _bh(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values, written out: min over k >= rank of m p_(k) / k, capped at 1."""
    m = len(p)
    order = np.argsort(p)
    adj = np.empty(m)
    running = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, p[i] * m / rank)
        adj[i] = running
    return adj


def _holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values, written out."""
    m = len(p)
    order = np.argsort(p)
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adj[i] = running
    return adj


def test_adjusted_p_values_equal_the_direct_computations():
    rng = np.random.default_rng(2)
    p = np.concatenate([rng.random(40) ** 3, [1e-8, 0.049, 0.051, np.nan]])
    ok = np.isfinite(p)
    for name, direct in (("bh", _bh), ("holm", _holm)):
        adj = stats.adjust(p, name)
        np.testing.assert_allclose(adj[ok], direct(p[ok]), rtol=1e-12)
        assert np.isnan(adj[~ok]).all() and (adj[ok] >= p[ok]).all()
    np.testing.assert_array_equal(stats.adjust(p, "none")[ok], p[ok])
    assert (stats.adjust(p, "holm") >= stats.adjust(p, "bh") - 1e-15)[ok].all()  # Holm is the stricter
    with pytest.raises(ValueError, match="unknown correction"):
        stats.adjust(p, "bonferonni")


def test_format_p():
    assert stats.format_p(0.0004) == "p < 0.001"
    assert stats.format_p(0.0123) == "p = 0.012"
    assert stats.format_p(0.25) == "p = 0.25"
