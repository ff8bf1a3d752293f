"""Corruption robustness: per corruption, the metric averaged over its severities; over all of a
model's corruptions, its mean; and the relative corruption error against the reference method.

Why: a corruption run has one row per severity, which answers "how much does fog at 3 cost?"
but not the question the corruption benchmarks (ImageNet-C, Hendrycks & Dietterich 2019;
Chen et al. 2023 for adapted VLMs) summarise: how a model fares over a corruption's
severities, over all corruptions, and relative to a reference model once each model's own
clean performance is taken out. With m the metric averaged over the severities of corruption
c (under robust-pt's convention an example wrong on the clean input counts as wrong):

    corruption metric   m_c = mean over examples and severities
    mean (mCA)          mean over the model's corruptions of m_c (same-kind corruptions: image, text)
    relative error      rCE_c = (clean - m_c) / (clean_ref - m_c,ref)      (Hendrycks & Dietterich's
                        relative CE, with the reference model, finetuning by default, in AlexNet's
                        place; 1 = degrades as much as the reference, < 1 less); mean rCE over c

A run with a training variant (adversarially tuned, from a robust base) takes the reference's runs of
its own variant, or with the reference "clean" its clean partner (tables.reference_runs).

Each value comes with a 95% paired percentile bootstrap interval (the examples of the model's
and the reference's runs resampled together, stats.bootstrap_means).

Conventions to know when comparing with published numbers: "corrupted" is robust-pt's robust
metric, P(right on the clean input and on the corrupted one), not plain accuracy on corrupted
inputs (an example wrong on the clean input never counts as right); the mean is over every
corruption the report holds (ImageNet-C's mCE averages its 15 test corruptions, leaving out
speckle noise, gaussian blur, spatter and saturate); a mean rCE exists only where every
corruption has one. The corruption runs also take part in the report's gaps against the
reference (one gap per severity), so a report that mixes them with attacks adjusts both
together; keep them in a report of their own to leave the attacks' adjusted p-values as they are.
"""

from __future__ import annotations

import math

import numpy as np

from . import stats
from .load import RunData
from .tables import VARIANT, reference_runs, run_matrix

COLUMNS = [
    "task",
    "model",
    "method",
    "kind",
    "corruption",
    "severities",
    "n",
    "metric",
    "clean",
    "corrupted",
    "corrupted_lo",
    "corrupted_hi",
    "reference",
    "rce",
    "rce_lo",
    "rce_hi",
]


def corruption_runs(runs: list[RunData]) -> list[RunData]:
    """The runs whose threat model declares access "corruption" (natural corruptions, not attacks)."""
    return [r for r in runs if r.corruption]


def _per_example(run: RunData) -> dict:
    """{example id: (clean score, score averaged over the run's severities)}."""
    ids, clean, scores = run_matrix(run)
    mean = np.nanmean(scores, axis=1) if scores.size else np.full(len(ids), math.nan)
    return {i: (c, m) for i, c, m in zip(ids, clean, mean) if np.isfinite(c) and np.isfinite(m)}


def _ci(reps: np.ndarray) -> tuple[float, float]:
    return stats.percentile_ci(reps[np.isfinite(reps)]) if np.isfinite(reps).any() else (math.nan, math.nan)


def _ratio(m: np.ndarray) -> np.ndarray:
    """(clean - corrupted) / (clean_ref - corrupted_ref) over the last axis [clean, corrupted, clean_ref,
    corrupted_ref]; nan where the reference loses nothing."""
    den = m[..., 2] - m[..., 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, (m[..., 0] - m[..., 1]) / den, np.nan)


def _rce(pairs: list, B: int, seed: int) -> tuple[float, float, float]:
    """rCE averaged over (model run, reference run) pairs, one per corruption, and its CI, over the examples
    every run has; nan without a reference for each, or where a corruption has none (its reference lost
    nothing). A bootstrap replicate where one corruption has none is left out of the interval."""
    if not pairs or any(ref is None for _, ref in pairs):
        return math.nan, math.nan, math.nan
    ids = sorted(set.intersection(*(set(m) & set(ref) for m, ref in pairs)))
    if not ids:
        return math.nan, math.nan, math.nan
    v = np.array([[x for m, ref in pairs for x in (*m[i], *ref[i])] for i in ids])  # clean, corrupted, ref's two
    reps = stats.bootstrap_means(v, B, seed).reshape(B, len(pairs), 4)
    lo, hi = _ci(np.mean(_ratio(reps), axis=1))
    return float(np.mean(_ratio(v.mean(0).reshape(len(pairs), 4)))), lo, hi


def corruption_frame(runs: list[RunData], reference: str, B: int = stats.DEFAULT_B, seed: int = stats.DEFAULT_SEED):
    """One row per (task, model, corruption) and one "mean" row per (task, model, kind) (see the module docstring)."""
    import pandas as pd

    rows, groups = [], {}
    corr = corruption_runs(runs)
    per = {id(r): _per_example(r) for r in corr}
    for r in corr:
        mine = per[id(r)]
        ref = None
        cands = reference_runs(r, [x for x in corr if (x.task, x.attack) == (r.task, r.attack)], reference)
        if cands:  # the reference's runs of its training variant, or its clean partner (tables.reference_runs)
            ref = per[id(next((x for x in cands if x.eps == r.eps), cands[0]))]  # same severities first
        v = np.array(list(mine.values())).reshape(-1, 2)
        lo, hi = _ci(stats.bootstrap_means(v[:, 1], B, seed)[:, 0]) if len(v) else (math.nan, math.nan)
        rce = _rce([(mine, ref)], B, seed)
        kind = str(r.declares.get("perturbs"))  # what it corrupts (image, text): a label
        rows.append(
            [
                r.task,
                r.model,
                r.method,
                kind,
                r.attack,
                len(r.eps),
                len(v),
                r.metric,
                float(v[:, 0].mean()) if len(v) else math.nan,
                float(v[:, 1].mean()) if len(v) else math.nan,
                lo,
                hi,
                reference if ref is not None else None,
                *rce,
            ]  # fmt: skip
        )
        groups.setdefault((r.task, r.model, r.method, kind, r.metric), []).append((mine, ref, len(r.eps)))
    rows += [_mean_row(key, items, reference, B, seed) for key, items in groups.items() if len(items) > 1]
    df = pd.DataFrame(rows, columns=COLUMNS)
    if any(r.variant for r in corr):  # a column only where some run has a training variant
        df.insert(COLUMNS.index("method") + 1, VARIANT, df["model"].map({r.model: r.variant for r in corr}))
    if len(df):
        from .load import method_rank

        df["_m"] = df["method"].map(method_rank)
        df["_mean"] = df["corruption"] == "mean"
        df = df.sort_values(["task", "kind", "_m", "model", "_mean", "corruption"], kind="stable")
        df = df.drop(columns=["_m", "_mean"])
    return df.reset_index(drop=True)


def _mean_row(key, items, reference: str, B: int, seed: int) -> list:
    """The mean over a model's corruptions of one kind: mCA, and mean rCE when every corruption has a reference."""
    task, model, method, kind, metric = key
    ids = sorted(set.intersection(*(set(m) for m, _, _ in items)))
    corrupted = np.array([[m[i][1] for m, _, _ in items] for i in ids])  # (n, C)
    clean = np.array([items[0][0][i][0] for i in ids])
    mca = corrupted.mean(1) if len(ids) else np.array([])
    lo, hi = _ci(stats.bootstrap_means(mca, B, seed)[:, 0]) if len(ids) else (math.nan, math.nan)
    rce = _rce([(m, ref) for m, ref, _ in items], B, seed)
    sev = {n for _, _, n in items}
    return [task, model, method, kind, "mean", sev.pop() if len(sev) == 1 else None, len(ids), metric,
            float(clean.mean()) if len(ids) else math.nan, float(mca.mean()) if len(ids) else math.nan, lo, hi,
            reference if not math.isnan(rce[0]) else None, *rce]  # fmt: skip
