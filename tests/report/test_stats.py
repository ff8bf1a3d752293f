"""The statistics against direct computations and scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from robust_pt.report import stats


def direct_ci(cols: list[np.ndarray], fn, B: int, seed: int) -> tuple[float, float]:
    """The textbook paired bootstrap: resample example indices, recompute, take percentiles."""
    rng = np.random.default_rng(seed)
    n = len(cols[0])
    reps = []
    for _ in range(B):
        idx = rng.integers(0, n, n)
        reps.append(fn(*[c[idx] for c in cols]))
    lo, hi = np.percentile(reps, [2.5, 97.5])
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


@pytest.mark.parametrize("k,n", [(4000, 10000), (49800, 100000), (1, 2000)])
def test_exact_binomial_is_fast_and_right_for_large_n(k, n):
    assert stats.binom_two_sided_half(k, n) == pytest.approx(sps.binomtest(k, n, 0.5).pvalue, rel=1e-8)


def test_sign_test_on_scores_is_the_binomial_on_signs():
    a = np.array([0.9, 0.5, 0.3, 0.8, 0.8, 0.1, 0.7])
    b = np.array([0.1, 0.5, 0.4, 0.2, 0.3, 0.0, 0.6])
    t = stats.sign_test(a, b)
    assert (t.b, t.c) == (5, 1)
    assert t.p == pytest.approx(sps.binomtest(5, 6, 0.5).pvalue)


def test_format_p():
    assert stats.format_p(0.0004) == "p < 0.001"
    assert stats.format_p(0.0123) == "p = 0.012"
    assert stats.format_p(0.25) == "p = 0.25"
