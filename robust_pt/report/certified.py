"""Certified robustness in reports: per certification run, the average certified radius, the abstention
rate and the certified accuracy at radius 0, beside a certified-accuracy-vs-radius figure.

Why: a certification run (attacks/certify.py, randomized smoothing) has one row per radius, which
already gives the certified accuracy at each radius with its interval, and the report's gaps
against the reference apply to it unchanged (certified at r is a 0/1 verdict, so the same paired
tests and the same decision rule). What rows per radius do not give are the summaries the
randomized-smoothing literature reports beside the curve:

    average certified radius (ACR)   mean over examples of the certified radius where the smoothed
                                     classifier is right, 0 elsewhere (Zhai et al., MACER, 2020)
    abstention rate                  share of the certified examples (right on the clean input) where
                                     CERTIFY abstained (its lower bound on the top class below 1/2)
    largest certifiable radius       sigma * Phi^-1(alpha^(1/n)): what n samples can certify at best

Under robust-pt's convention an example the model gets wrong on the clean image counts 0 (it is
not certified). Each ACR comes with a 95% percentile bootstrap interval over the examples.
"""

from __future__ import annotations

import math

import numpy as np

from . import stats
from .load import RunData

CERTIFIED = "certified"  # the access a certification threat model declares (attacks/certify.py)

COLUMNS = [
    "task",
    "model",
    "method",
    "variant",
    "attack",
    "sigma",
    "samples",
    "n",
    "clean",
    "certified_at_0",
    "acr",
    "acr_lo",
    "acr_hi",
    "abstain",
    "max_radius",
]


def is_certified(run: RunData) -> bool:
    return run.declares.get("access") == CERTIFIED


def _settings(run: RunData) -> dict:
    spec = run.attack_spec
    return {**spec, **(spec.get("settings") or {})}


def _per_example(run: RunData):
    """One row per example: its first record (the smallest radius), which carries its certificate."""
    return run.records.sort_values("eps").groupby("id", sort=False).first()


def _truthy(col) -> np.ndarray:
    return np.asarray([v is True or v == 1.0 for v in col], dtype=bool)


def row(run: RunData, n_boot: int, seed: int) -> dict:
    """The certified summary of one certification run (module docstring)."""
    ex = _per_example(run)
    clean = _truthy(ex["clean_correct"])
    right = clean & _truthy(ex.get("top_correct", ex["correct"])) & ~_truthy(ex["abstain"])
    radius = np.where(right, ex["certified_radius"].astype(float).fillna(0.0).to_numpy(), 0.0)
    acr, lo, hi = stats.mean_ci(radius, n_boot, seed)
    st = _settings(run)
    sigma, samples, alpha = st.get("sigma"), st.get("n"), st.get("alpha") or 0.001
    zero = run.records[np.isclose(run.records["eps"].astype(float), min(run.eps))]
    return {
        "task": run.task,
        "model": run.model,
        "method": run.method,
        "variant": run.variant,
        "attack": run.attack,
        "sigma": sigma,
        "samples": samples,
        "n": int(len(ex)),
        "clean": float(clean.mean()) if len(ex) else math.nan,
        "certified_at_0": float(_truthy(zero["correct"]).mean()) if min(run.eps) == 0 and len(zero) else math.nan,
        "acr": acr,
        "acr_lo": lo,
        "acr_hi": hi,
        "abstain": float(_truthy(ex["abstain"])[clean].mean()) if clean.any() else math.nan,
        "max_radius": _max_radius(sigma, samples, alpha),
    }


def _max_radius(sigma, n, alpha) -> float:
    from scipy.stats import norm

    if not sigma or not n:
        return math.nan
    return float(sigma * norm.ppf(alpha ** (1.0 / float(n))))


def certified_frame(data: list[RunData], n_boot: int, seed: int):
    """COLUMNS for every certification run (an empty frame when the report has none)."""
    import pandas as pd

    return pd.DataFrame([row(r, n_boot, seed) for r in data if is_certified(r)], columns=COLUMNS)
