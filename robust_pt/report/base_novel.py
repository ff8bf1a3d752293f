"""Base-to-novel in reports: clean and robust accuracy on the classes a model was tuned on, on held-out
classes, and their harmonic mean, per model and threat.

Why: CoCoOp's protocol, which the adversarial prompt-learning literature (TeCoA, PMG-AFT, AdvPT,
FAP) reports in: a prompt learner tuned on base classes is judged on them and zero-shot on novel
ones, and the harmonic mean HM = 2 B N / (B + N) rewards a model only when both hold. The per-task
tables already give each side with its interval; what they do not give is the pairing. A run is a
novel-class run when its model was tuned on another task of the same open-class kind (RunData.trained,
from run.json's model_meta); its base task is that one, and only models tuned on it are paired there.
Untuned models (zero-shot) attacked on both join every pair. Corruption runs are in the CSV and left
to the corruptions section in the document.
"""

from __future__ import annotations

import math

from .load import RunData

COLUMNS = [
    "base_task",
    "novel_task",
    "model",
    "method",
    "variant",
    "attack",
    "kind",
    "eps",
    "eps_label",
    "base_n",
    "novel_n",
    "base_clean",
    "novel_clean",
    "hm_clean",
    "base_robust",
    "novel_robust",
    "hm_robust",
]


def task_pairs(runs: list[RunData]) -> dict[tuple[str, str], set[str]]:
    """(base task, novel task) -> the models tuned on the base task and attacked on the novel one; untuned
    models (zero-shot) attacked on both join every pair."""
    from ..tasks.named import recorded_task

    pairs: dict[tuple[str, str], set[str]] = {}
    for r in runs:
        if r.trained and recorded_task(r.trained) != r.task and r.task_kind == "classify":
            pairs.setdefault((recorded_task(r.trained), r.task), set()).add(r.model)
    untuned = {r.model for r in runs if not r.trained}
    return {pair: models | untuned for pair, models in pairs.items()}


def harmonic(b: float, n: float) -> float:
    """2 B N / (B + N); 0 where both are 0, NaN where either is unknown."""
    if not (math.isfinite(b) and math.isfinite(n)):
        return float("nan")
    return 0.0 if b + n == 0 else 2 * b * n / (b + n)


def base_novel_frame(runs: list[RunData], summary):
    """One row per (base task, novel task, model, attack, eps) found on both tasks; None without novel runs."""
    import pandas as pd

    pairs = task_pairs(runs)
    if not pairs or summary is None or not len(summary):
        return None
    s = summary if "variant" in summary.columns else summary.assign(variant="")
    keys = ["model", "method", "variant", "attack", "eps"]
    s = s.drop_duplicates(["task"] + keys)  # one row per threat (the report labels differing attacks apart)
    rows = []
    for (base, novel), models in pairs.items():
        mine = s[s["model"].isin(models)]
        both = mine[mine["task"] == base].merge(mine[mine["task"] == novel], on=keys, suffixes=("_b", "_n"))
        for _, r in both.iterrows():
            rows.append({
                "base_task": base, "novel_task": novel, **{k: r[k] for k in keys}, "kind": r["kind_b"],
                "eps_label": r["eps_label_b"], "base_n": r["n_b"], "novel_n": r["n_n"],
                "base_clean": r["clean_b"], "novel_clean": r["clean_n"], "hm_clean": harmonic(r["clean_b"], r["clean_n"]),
                "base_robust": r["robust_b"], "novel_robust": r["robust_n"],
                "hm_robust": harmonic(r["robust_b"], r["robust_n"]),
            })  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS)
