"""The numbers of a report: one row per (task, model, attack, eps), and the gaps.

All metrics are kept in the task's own units (accuracy in [0, 1]); writers show them as
points (x100). Every robust metric, drop and gap carries a paired-bootstrap 95% CI
(stats.py); a gap's interval is the one its test inverts (the exact McNemar interval for
binary verdicts, the bootstrap for graded ones), and its significance is the test's p-value
adjusted across the report (`significant`, from `p_adj`), which is what every count and
sentence uses.

Gap convention: gap = metric(method) - metric(reference) on the same examples, so a
positive gap means the method keeps more of the metric under attack; rel_drop_gap =
rel_drop(reference) - rel_drop(method), positive when the method degrades less. The
reference method is finetuning unless a report names another (`reference`); every
sentence names it by its display name (`reference_name`), so the default text says
"finetuning" as it always has.
"""

from __future__ import annotations

import math

import numpy as np

from ..runformat import EPS_ATOL, at_eps, eps_stats
from . import stats
from .load import CLEAN, METHOD_NAMES, REFERENCE, ROBUST_BASE, RunData, per_eps, variant_rank

SUMMARY_COLUMNS = [
    "task",
    "model",
    "method",
    "attack",
    "attack_method",
    "kind",
    "norm",
    "eps",
    "eps_label",
    "n",
    "metric",
    "clean",
    "clean_lo",
    "clean_hi",
    "robust",
    "robust_lo",
    "robust_hi",
    "drop",
    "drop_lo",
    "drop_hi",
    "rel_drop",
    "rel_drop_lo",
    "rel_drop_hi",
    "success_rate",
    "mean_linf",
    "mean_l2",
    "mean_queries",
    "mean_words_changed",
    "run",
]
GAP_COLUMNS = [
    "task",
    "attack",
    "eps",
    "eps_label",
    "metric",
    "model",
    "method",
    "reference",
    "n",
    "clean_gap",
    "robust",
    "reference_robust",
    "gap",
    "gap_lo",
    "gap_hi",
    "rel_drop",
    "reference_rel_drop",
    "rel_drop_gap",
    "rel_drop_gap_lo",
    "rel_drop_gap_hi",
    "b",
    "c",
    "p",
    "test",
    "p_adj",
    "significant",
    "rel_drop_p",
    "rel_drop_p_adj",
    "rel_drop_significant",
]


VARIANT = "variant"


def with_variant(columns: list[str]) -> list[str]:
    """`columns` with "variant" after "method": the layout of a frame when some run has a training variant."""
    i = columns.index("method") + 1
    return columns[:i] + [VARIANT] + columns[i:]


def method_name(method: str) -> str:
    """The display name of a method, or of "method (variant)" (a transfer matrix's column)."""
    base, sep, variant = method.partition(" (")
    if method not in METHOD_NAMES and sep and base in METHOD_NAMES:
        return f"{METHOD_NAMES[base]} ({variant}"
    return METHOD_NAMES.get(method, method)


def method_label(method: str, variant: str = "") -> str:
    """How the report names a run's tuning in words: the method's display name, with its training variant
    (load.RunData.variant) in brackets when it has one ("prompt tuning (adversarial 4/255, robust base)",
    "the pretrained base (adversarial 4/255)"). Why: models of one method trained four ways are four models."""
    name = method_name(method)
    return f"{name} ({variant})" if variant else name


#: How the text names the reference CLEAN (each adversarially tuned run's clean partner), and as a column head.
CLEAN_PARTNER, CLEAN_PARTNER_HEAD = "its clean partner", "Clean partner"


def reference_name(reference: str = REFERENCE, capital: bool = False) -> str:
    """How sentences, headings and captions name the reference method ("finetuning" by default; "its clean
    partner" for CLEAN, "Clean partner" as a column head).

    Why one helper: every wording that used to say "finetuning" literally goes through it, so a
    report with another reference names that method everywhere and the default text is unchanged."""
    if reference == CLEAN:
        return CLEAN_PARTNER_HEAD if capital else CLEAN_PARTNER
    name = method_name(reference)
    return name[:1].upper() + name[1:] if capital else name


def reference_runs(run: RunData, group: list[RunData], reference: str) -> list[RunData] | None:
    """The runs of `group` (one task and attack) that `run` is compared with; None when it is compared with
    none. A method reference: that method's runs of `run`'s own training variant, so an adversarially tuned
    prompt meets adversarially tuned finetuning and never clean finetuning (runs without variant: every run
    of the method, as always). CLEAN: only adversarially tuned runs are compared, each with its clean
    partner(s): the same method tuned without adversarial training from the same kind of base."""
    if reference == CLEAN:
        if not run.adversarial:
            return None
        return [r for r in group if r.method == run.method and r.robust_base == run.robust_base and not r.adversarial]
    if run.method == reference:
        return None
    return [r for r in group if r.method == reference and r.variant == run.variant]


def run_matrix(run: RunData) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(ids, clean (n,), scores (n, E)) of a run, nan where an (id, eps) record is missing."""
    df = run.records
    ids = sorted(set(df["id"]))
    pos = {i: k for k, i in enumerate(ids)}
    n, E = len(ids), len(run.eps)
    clean = np.full(n, math.nan)
    scores = np.full((n, E), math.nan)
    rows = df["id"].map(pos).to_numpy()
    eps = df["eps"].to_numpy(dtype=float)
    cs = df["clean_score"].to_numpy(dtype=float)
    ss = df["score"].to_numpy(dtype=float)
    for j, e in enumerate(run.eps):
        sel = at_eps(eps, e)
        scores[rows[sel], j] = ss[sel]
    ok = np.isfinite(cs)
    clean[rows[ok]] = cs[ok]
    return ids, clean, scores


def summary_rows(run: RunData, B: int = stats.DEFAULT_B, seed: int = stats.DEFAULT_SEED) -> list[dict]:
    """One row per eps of the run, with bootstrap CIs (the run's examples resampled together)."""
    ids, clean, scores = run_matrix(run)
    E = len(run.eps)
    reps = stats.bootstrap_means(np.column_stack([clean, scores]), B, seed) if ids else np.full((B, E + 1), math.nan)
    out = []
    for j, e in enumerate(run.eps):
        present = np.isfinite(scores[:, j]) & np.isfinite(clean)
        if not present.any():
            continue
        c = float(clean[present].mean())
        r = float(scores[present, j].mean())
        # CIs: replicate means over the rows present at this eps (clean over all rows of the run)
        rep_r = reps[:, j + 1]
        rep_c = reps[:, 0]
        st = eps_stats(per_eps(run, e), run.binary)  # the engine's run summary uses the same statistics
        row = {
            "task": run.task,
            "model": run.model,
            "method": run.method,
            VARIANT: run.variant,
            "attack": run.attack,
            "attack_method": run.attack_method,
            "kind": run.attack_kind,
            "norm": run.norm,
            "eps": float(e),
            "eps_label": run.eps_label(e),
            "n": int(present.sum()),
            "metric": run.metric,
            "clean": c,
            "robust": r,
            "drop": c - r,
            "rel_drop": stats.rel_drop(c, r),
            **{k: st[k] for k in ("success_rate", "mean_linf", "mean_l2", "mean_queries", "mean_words_changed")},
            "run": str(run.path),
        }
        row["clean_lo"], row["clean_hi"] = stats.percentile_ci(rep_c)
        row["robust_lo"], row["robust_hi"] = stats.percentile_ci(rep_r)
        row["drop_lo"], row["drop_hi"] = stats.percentile_ci(rep_c - rep_r)
        with np.errstate(invalid="ignore", divide="ignore"):
            row["rel_drop_lo"], row["rel_drop_hi"] = stats.percentile_ci(1 - rep_r / rep_c)
        out.append(row)
    return out


def paired(run_a: RunData, run_b: RunData, eps: float):
    """Records of two runs at one eps on their common examples: (ids, a frame, b frame)."""
    da, db = per_eps(run_a, eps), per_eps(run_b, eps)
    common = sorted(set(da.index) & set(db.index))
    return common, da.loc[common], db.loc[common]


def common_eps(a: RunData, b: RunData) -> list[float]:
    return [e for e in a.eps if any(abs(e - f) <= EPS_ATOL for f in b.eps)]


def gap_row(
    run: RunData, ref: RunData, eps: float, B: int = stats.DEFAULT_B, seed: int = stats.DEFAULT_SEED
) -> dict | None:
    """One comparison of `run` against the reference run at eps, or None without common examples."""
    ids, da, dr = paired(run, ref, eps)
    if not ids:
        return None
    a, r = da["score"].to_numpy(float), dr["score"].to_numpy(float)
    ac, rc = da["clean_score"].to_numpy(float), dr["clean_score"].to_numpy(float)
    reps = stats.bootstrap_means(np.column_stack([a, r, ac, rc]), B, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel_reps = (1 - reps[:, 1] / reps[:, 3]) - (1 - reps[:, 0] / reps[:, 2])
    if run.score_is_correctness and ref.score_is_correctness:  # McNemar's exact test, the interval it inverts
        b, c = stats.discordant(da["correct"].to_numpy(float), dr["correct"].to_numpy(float), binary=True)
        p, test = stats.mcnemar_p(b, c), "mcnemar"
        lo, hi = stats.exact_gap_ci(b, c, len(ids))
    else:  # graded scores: the bootstrap interval of the mean gap and the test derived from it
        b, c = stats.discordant(a, r, binary=False)
        lo, hi, p = stats.bootstrap_wald(float(np.nanmean(a) - np.nanmean(r)), reps[:, 0] - reps[:, 1])
        test = "bootstrap"
    ra, rr = (
        stats.rel_drop(float(np.nanmean(ac)), float(np.nanmean(a))),
        stats.rel_drop(float(np.nanmean(rc)), float(np.nanmean(r))),
    )
    rlo, rhi, rp = stats.bootstrap_wald(rr - ra, rel_reps)
    return {
        "task": run.task,
        "attack": run.attack,
        "eps": float(eps),
        "eps_label": run.eps_label(eps),
        "metric": run.metric,
        "model": run.model,
        "method": run.method,
        VARIANT: run.variant,
        "reference": ref.model,
        "n": len(ids),
        "clean_gap": float(np.nanmean(ac) - np.nanmean(rc)),
        "robust": float(np.nanmean(a)),
        "reference_robust": float(np.nanmean(r)),
        "gap": float(np.nanmean(a) - np.nanmean(r)),
        "gap_lo": lo,
        "gap_hi": hi,
        "rel_drop": ra,
        "reference_rel_drop": rr,
        "rel_drop_gap": rr - ra,
        "rel_drop_gap_lo": rlo,
        "rel_drop_gap_hi": rhi,
        "b": b,
        "c": c,
        "p": p,
        "test": test,
        "rel_drop_p": rp,
    }


def _no_reference_note(task: str, attack: str, reference: str, run: RunData | None = None) -> str:
    """The note of a task and attack without a reference run for `run` (its variant's, or its clean partner)."""
    if reference == CLEAN and run is not None:
        partner = method_label(run.method, ROBUST_BASE if run.robust_base else "")
        return (
            f"{task}, {attack}: no {partner} run, so no gap of {method_label(run.method, run.variant)} against "
            f"{CLEAN_PARTNER} (attack the same method tuned without adversarial training from the same base "
            f"with the same attack to get one)"
        )
    variant = run.variant if run is not None else ""
    name = method_label(reference, variant)
    ckpt = "a finetuned checkpoint" if reference == REFERENCE else f"a checkpoint tuned with {method_name(reference)}"
    ckpt += f" ({variant})" if variant else ""
    return f"{task}, {attack}: no {name} run, so no gap against {name} (attack {ckpt} with the same attack to get one)"


def gap_rows(
    runs: list[RunData], B: int = stats.DEFAULT_B, seed: int = stats.DEFAULT_SEED, reference: str = REFERENCE
) -> tuple[list[dict], list[str]]:
    """Every run against its reference runs of the same task and attack (reference_runs: the `reference`
    method's runs of its training variant, or its clean partner for CLEAN); plus notes, one per missing
    reference. The reference is finetuning unless the report names another (build(reference=...))."""
    out: list[dict] = []
    notes: list[str] = []
    keys = sorted({(r.task, r.attack) for r in runs})
    for task, attack in keys:
        group = [r for r in runs if r.task == task and r.attack == attack]
        pairs = [(run, refs) for run in group if (refs := reference_runs(run, group, reference)) is not None]
        missing = [_no_reference_note(task, attack, reference, run) for run, refs in pairs if not refs]
        notes += list(dict.fromkeys(missing))  # one note per variant (or clean partner) missing
        for run, refs in pairs:
            for ref in refs:
                _pair_rows(run, ref, B, seed, out, notes)
    return out, notes


def _pair_rows(run: RunData, ref: RunData, B: int, seed: int, out: list[dict], notes: list[str]) -> None:
    """The gap rows of `run` against one reference run at each eps they share (into `out`), or notes why not."""
    task, attack = run.task, run.attack
    eps = common_eps(run, ref)
    if not eps:
        notes.append(f"{task}, {attack}: {run.model} and {ref.model} share no eps; no gap computed")
    for e in eps:
        row = gap_row(run, ref, e, B, seed)
        if row is None:
            notes.append(
                f"{task}, {attack} eps={run.eps_label(e)}: {run.model} and {ref.model} share no "
                f"example ids (different task splits or seeds?); no gap computed"
            )
        else:
            out.append(row)


def summary_frame(runs: list[RunData], B: int = stats.DEFAULT_B, seed: int = stats.DEFAULT_SEED):
    import pandas as pd

    rows = [row for r in runs for row in summary_rows(r, B, seed)]
    variants = any(r.variant for r in runs)
    df = pd.DataFrame(rows, columns=with_variant(SUMMARY_COLUMNS) if variants else SUMMARY_COLUMNS)
    if len(df):
        df = _by_method_and_variant(df, ["task", "attack"], ["model", "eps"])
    return df.reset_index(drop=True)


def _by_method_and_variant(df, before: list[str], after: list[str]):
    """`df` sorted by the `before` columns, then the method (load.method_rank) and its training variant
    (load.variant_rank; a frame without a "variant" column: the method alone), then the `after` columns (stable)."""
    from .load import method_rank

    order = sorted(set(df[VARIANT]), key=variant_rank) if VARIANT in df.columns else []
    df = df.assign(_m=df["method"].map(method_rank), _v=df[VARIANT].map(order.index) if order else 0)
    return df.sort_values(before + ["_m", "_v"] + after, kind="stable").drop(columns=["_m", "_v"])


def gap_frame(rows: list[dict], correction: str = stats.DEFAULT_CORRECTION, variants: bool | None = None):
    """The gaps in report order, with p-values adjusted across all of them (`correction`: bh, holm or
    none) and the decisions that follow: significant = p_adj < 0.05 (robust metric), and the same
    for the relative drop as its own family. `variants`: whether the report's runs have training
    variants (a "variant" column); None: whether some row has one."""
    import pandas as pd

    if variants is None:
        variants = any(r.get(VARIANT) for r in rows)
    df = pd.DataFrame(rows, columns=with_variant(GAP_COLUMNS) if variants else GAP_COLUMNS)
    if len(df) and variants:  # a method's variants together, in variant_rank's order
        df = _by_method_and_variant(df, ["task", "attack"], ["model", "reference", "eps"])
    elif len(df):
        df = df.sort_values(["task", "attack", "model", "reference", "eps"], kind="stable")
    df = df.reset_index(drop=True)
    for p, p_adj, sig in (("p", "p_adj", "significant"), ("rel_drop_p", "rel_drop_p_adj", "rel_drop_significant")):
        df[p_adj] = stats.adjust(df[p].to_numpy(float), correction) if len(df) else []
        df[sig] = (df[p_adj] < stats.ALPHA).astype(bool)  # nan compares False: not significant
    return df


# ----------------------------------------------------------------------------- findings


def points(x: float) -> str:
    return f"{100 * x:.1f}" if math.isfinite(x) else "n/a"


def _metric_words(metric: str) -> str:
    return {"accuracy": "accuracy", "acc@0.5": "Acc@0.5", "cider": "CIDEr"}.get(metric, metric)


def who(method: str, model: str, several: bool, variant: str = "") -> str:
    name = method_label(method, variant) if method != "unknown" else model
    return f"{name} ({model})" if several and method != "unknown" else name


def _decision(p_adj: float, significant: bool) -> str:
    return f"adjusted {stats.format_p(p_adj)}, " + ("significant" if significant else "not significant")


def finding(row: dict, several_models: bool = False, several_refs: bool = False, reference: str = REFERENCE) -> str:
    """One sentence per comparison, whichever way it falls: the gap with the interval its test inverts,
    the unadjusted and the adjusted p-value and the decision; then the same for the relative drop.
    `reference`: the method the gaps are against, named in the sentence (finetuning by default)."""
    g, lo, hi = row["gap"], row["gap_lo"], row["gap_hi"]
    variant = row.get(VARIANT) or ""
    subject = who(row["method"], row["model"], several_models, variant)
    name = reference_name(reference) if reference == CLEAN else method_label(reference, variant)
    ref = name + (f" ({row['reference']})" if several_refs else "")
    m = _metric_words(row["metric"])
    test = "McNemar" if row["test"] == "mcnemar" else "bootstrap test"
    p = f"{test} {stats.format_p(row['p'])}, {_decision(row['p_adj'], row['significant'])}"
    if abs(g) < 5e-4:
        core = (
            f"{subject} keeps the same {m} as {ref} (difference {points(g)} points, 95% CI {points(lo)} to "
            f"{points(hi)}; {p})"
        )
    else:
        word = "more" if g > 0 else "less"
        a, b = (lo, hi) if g > 0 else (-hi, -lo)
        core = f"{subject} keeps {points(abs(g))} points {word} {m} than {ref} (95% CI {points(a)} to {points(b)}; {p})"
    return f"{row['task']}, {row['attack']} eps={row['eps_label']}: {core}{_rel_drop_clause(row)}."


def _rel_drop_clause(row: dict) -> str:
    rg, rlo, rhi = row["rel_drop_gap"], row["rel_drop_gap_lo"], row["rel_drop_gap_hi"]
    if not math.isfinite(rg):
        return ""
    p = (
        f"bootstrap test {stats.format_p(row['rel_drop_p'])}, "
        f"{_decision(row['rel_drop_p_adj'], row['rel_drop_significant'])}"
    )
    if abs(rg) < 5e-4:
        return f"; its relative drop is the same (95% CI {points(-rhi)} to {points(-rlo)}; {p})"
    if rg > 0:
        return f"; its relative drop is {points(rg)} points smaller (95% CI {points(rlo)} to {points(rhi)}; {p})"
    return f"; its relative drop is {points(-rg)} points larger (95% CI {points(-rhi)} to {points(-rlo)}; {p})"


def is_significant(row) -> bool:
    """A comparison with a significant robust-metric gap or relative-drop gap (after adjustment)."""
    return bool(row["significant"]) or bool(row["rel_drop_significant"])


def findings(gaps, reference: str = REFERENCE) -> list[str]:
    """One sentence per comparison: the significant ones first, each group in report order; each names
    `reference` (the method the gaps are against) as the comparison."""
    if not len(gaps):
        return []
    sig, rest = [], []
    variants = VARIANT in gaps.columns
    for (task, attack), grp in gaps.groupby(["task", "attack"], sort=False):
        several_models = grp.groupby(["method", VARIANT] if variants else "method")["model"].nunique().max() > 1
        # with variants, each run has its own references: several only where one run has more than one
        refs = grp.groupby("model")["reference"].nunique().max() if variants else grp["reference"].nunique()
        several_refs = refs > 1
        for _, row in grp.iterrows():
            sentence = finding(row.to_dict(), several_models, several_refs, reference)
            (sig if is_significant(row) else rest).append(sentence)
    return sig + rest


VERDICT_COLUMNS = ["task", "method", "cells", "more", "less", "rel_smaller", "rel_larger"]


def verdict_frame(gaps, threats: list | None = None):
    """How many comparisons against the reference are significant each way, per task and over all tasks.

    Why: a report with hundreds of gaps answers "is it more robust?" only if someone counts;
    cells = (attack, eps) comparisons; more / less: the robust-metric gap is significant (its
    test's p-value adjusted across the report, `significant`) and above / below 0;
    rel_smaller / rel_larger: the relative drop (the clean gap taken out) is significantly
    smaller / larger than the reference's (`rel_drop_significant`, its own family). `threats`: one per
    gap row (verdict.threats; None: left out), counted apart (a "threat" column, after "task"). Gaps with
    a "variant" column are counted per (method, variant), the variant in a column after "method".
    """
    import pandas as pd

    if not len(gaps):
        return pd.DataFrame(columns=VERDICT_COLUMNS)
    sig, rsig = gaps["significant"].astype(bool), gaps["rel_drop_significant"].astype(bool)
    d = gaps.assign(
        more=sig & (gaps["gap"] > 0),
        less=sig & (gaps["gap"] < 0),
        rel_smaller=rsig & (gaps["rel_drop_gap"] > 0),
        rel_larger=rsig & (gaps["rel_drop_gap"] < 0),
    )
    counts = ["more", "less", "rel_smaller", "rel_larger"]
    spec = {"cells": ("gap", "size"), **{c: (c, "sum") for c in counts}}
    keys, columns = ["method"], VERDICT_COLUMNS
    if VARIANT in gaps.columns:
        keys, columns = ["method", VARIANT], with_variant(VERDICT_COLUMNS)
    if threats is not None:
        from .threats import LEFT_OUT

        d = d.assign(threat=[t if t is not None else LEFT_OUT for t in threats])
        keys, columns = ["threat"] + keys, columns[:1] + ["threat"] + columns[1:]
    rows = d.groupby(["task"] + keys, sort=False).agg(**spec).reset_index()
    if rows["task"].nunique() > 1:
        total = d.groupby(keys, sort=False).agg(**spec).reset_index().assign(task="all tasks")
        rows = pd.concat([rows, total], ignore_index=True)
    rows[["cells"] + counts] = rows[["cells"] + counts].astype(int)
    if threats is not None:  # per task (in order, all tasks last), the threats in the verdict's order
        from .threats import THREATS

        tasks = list(dict.fromkeys(rows["task"]))
        rank = {t: k for k, t in enumerate(THREATS)}
        rows = rows.assign(
            _task=rows["task"].map(tasks.index), _threat=rows["threat"].map(lambda t: rank.get(t, len(rank)))
        ).sort_values(["_task", "_threat"], kind="stable")
    return rows[columns].reset_index(drop=True)
