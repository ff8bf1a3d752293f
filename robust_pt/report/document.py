"""The report as a list of blocks, rendered to Markdown (markdown.py) and HTML (html.py).

Blocks: Heading(level, text), Para(text), Bullets(items), Table(headers, rows, caption),
Image(path relative to the report folder, alt, caption), Fold(summary, blocks): blocks
folded away behind a summary line in HTML. A table cell is a string or a
list of (text, style) segments with style None, "del" (a removed word), "ins" (an added
word) or "code".
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Union

import numpy as np

from ..runformat import broken_mask
from . import stats
from .load import CLEAN, REFERENCE
from .sanity import FAIL, RULE
from .tables import VARIANT, is_significant, method_label, method_name, points, reference_name, verdict_frame
from .threats import PUBLIC_BASE
from .verdict import threats, verdict

Cell = Union[str, list]


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Para:
    text: str
    style: str = ""  # "" or "warning" or "note"


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Cell]]
    caption: str = ""
    status_col: int | None = None  # a column holding pass / fail / not checked (coloured in HTML)


@dataclass
class Image:
    path: str  # relative to the report folder
    alt: str
    caption: str = ""


@dataclass
class Fold:
    """Blocks a reader may skip (e.g. the comparisons whose CI includes 0): folded away behind `summary` in HTML
    (<details>); Markdown cannot fold, so it shows the summary as a bold line and then the blocks."""

    summary: str
    blocks: list = field(default_factory=list)  # any blocks, a Fold included


@dataclass
class Document:
    title: str
    blocks: list = field(default_factory=list)

    def add(self, *blocks) -> None:
        self.blocks.extend(blocks)


def ci(lo: float, hi: float) -> str:
    return f"[{points(lo)}, {points(hi)}]" if math.isfinite(lo) and math.isfinite(hi) else ""


def signed(x: float) -> str:
    return f"{100 * x:+.1f}" if math.isfinite(x) else "n/a"


def pct(x: float) -> str:
    return f"{100 * x:.1f}%" if math.isfinite(x) else "n/a"


def who(method: str, model: str, variant: str = "") -> str:
    """A table's method cell: the method's name with the run's training variant (tables.method_label)."""
    return method_label(method, variant) if method != "unknown" else "-"


def _variant(row) -> str:
    """The training variant of a frame row (a Series) or group (a DataFrame); "" where the frame has none."""
    if not hasattr(row, "columns"):
        return str(row.get(VARIANT) or "")
    return str(row[VARIANT].iloc[0] or "") if VARIANT in row.columns and len(row) else ""


# ----------------------------------------------------------------------------- word diff


def word_diff(old: str, new: str) -> tuple[list, list, int]:
    """(old segments with removed words marked, new segments with added words marked, words changed)."""
    a, b = str(old).split(), str(new).split()
    sm = difflib.SequenceMatcher(None, a, b, autojunk=False)
    left: list = []
    right: list = []
    changed = 0

    def put(segs: list, words: list[str], style):
        if not words:
            return
        if segs:
            segs.append((" ", None))
        segs.append((" ".join(words), style))

    for op, i1, i2, j1, j2 in sm.get_opcodes():
        if op == "equal":
            put(left, a[i1:i2], None)
            put(right, b[j1:j2], None)
        else:
            put(left, a[i1:i2], "del")
            put(right, b[j1:j2], "ins")
            changed += max(i2 - i1, j2 - j1)
    return left, right, changed


# ----------------------------------------------------------------------------- the document


def wide_table(summary, task: str, attack: str) -> Table:
    """Rows model / method; columns clean, then per eps the robust metric [CI] and the drop (relative)."""
    d = summary[(summary["task"] == task) & (summary["attack"] == attack)]
    eps = sorted(set(d["eps"].round(12)))
    labels = {round(e, 12): lab for e, lab in zip(d["eps"], d["eps_label"])}
    metric = d["metric"].iloc[0] if len(d) else "metric"
    headers = ["Model", "Method", f"Clean {metric}"]
    for e in eps:
        headers += [f"eps={labels[e]} robust [95% CI]", f"eps={labels[e]} drop (rel.)"]
    rows = []
    for (method, model), dm in d.groupby(["method", "model"], sort=False):
        cells: list[Cell] = [model, who(method, model, _variant(dm)), points(dm["clean"].iloc[0])]
        for e in eps:
            r = dm[abs(dm["eps"] - e) < 1e-12]
            if not len(r):
                cells += ["", ""]
                continue
            r = r.iloc[0]
            cells += [
                f"{points(r['robust'])} {ci(r['robust_lo'], r['robust_hi'])}",
                f"{points(r['drop'])} ({pct(r['rel_drop'])})",
            ]
        rows.append(cells)
    return Table(
        headers,
        rows,
        caption=f"{task}, {attack}: {metric} in points (x100); drop = clean - robust, "
        f"relative drop = drop / clean; n = {int(d['n'].max()) if len(d) else 0} "
        f"examples",
    )


#: eps units that are norm budgets: the L-inf / L2 size of the perturbation is what they bound
NORM_UNITS = ("pixel", "rms", "abs")


def details_table(summary, task: str, units: dict | None = None) -> Table:
    """Per (model, attack, eps): attack success rate, perturbation size, queries and words changed.

    `units`: run path -> the run's eps unit (run.json). A perturbation size applies where the eps is a
    norm budget (NORM_UNITS); for other units (words, severity) only where something was measured
    (an image corruption changes pixels, a text attack none): elsewhere it is "-", not 0."""
    d = summary[summary["task"] == task]
    units = units or {}
    extra = [
        (c, h) for c, h in (("mean_queries", "Queries"), ("mean_words_changed", "Words changed")) if d[c].notna().any()
    ]
    headers = ["Model", "Method", "Attack", "eps", "n", "Success rate", "Mean L-inf", "Mean L2"] + [h for _, h in extra]
    rows = []
    for _, r in d.iterrows():
        cells = [
            r["model"],
            who(r["method"], r["model"], _variant(r)),
            r["attack"],
            r["eps_label"],
            str(int(r["n"])),
            pct(r["success_rate"]),
            _size(r["mean_linf"], units.get(r["run"])),
            _size(r["mean_l2"], units.get(r["run"])),
        ]
        rows.append(cells + [_num(r[c], 1) for c, _ in extra])
    return Table(
        headers,
        rows,
        caption=(
            f"{task}: success rate = share of the examples right before the attack that "
            f"it breaks; perturbation sizes are means over broken examples"
        ),
    )


def _size(x, unit: str | None) -> str:
    """A mean perturbation size, or "-" where it does not apply (details_table)."""
    if unit is not None and unit not in NORM_UNITS and not (isinstance(x, (int, float)) and x > 0):
        return "-"
    return _num(x)


def _num(x, digits: int = 4) -> str:
    return f"{x:.{digits}f}" if isinstance(x, (int, float)) and math.isfinite(x) else "-"


def gap_table(gaps, task: str, reference: str = REFERENCE) -> Table:
    """The gaps of one task against `reference` (finetuning by default), which the headers and the
    caption name."""
    d = gaps[gaps["task"] == task]
    ref = reference_name(reference)
    headers = [
        "Model",
        "Method",
        f"vs {ref}",
        "Attack",
        "eps",
        "n",
        "Robust",
        f"{reference_name(reference, capital=True)} robust",
        "Gap [95% CI]",
        "p (test)",
        "p adj.",
        "Significant",
        "Rel. drop gap [95% CI]",
        "Rel. drop p adj.",
        "b / c",
    ]
    rows = []
    for _, r in d.iterrows():
        rows.append(
            [
                r["model"],
                who(r["method"], r["model"], _variant(r)),
                r["reference"],
                r["attack"],
                r["eps_label"],
                str(int(r["n"])),
                points(r["robust"]),
                points(r["reference_robust"]),
                f"{signed(r['gap'])} {ci(r['gap_lo'], r['gap_hi'])}",
                _p(r["p"]) + (" (McNemar)" if r["test"] == "mcnemar" else " (bootstrap)"),
                _p(r["p_adj"]),
                "yes" if r["significant"] else "no",
                f"{signed(r['rel_drop_gap'])} {ci(r['rel_drop_gap_lo'], r['rel_drop_gap_hi'])}",
                _p(r["rel_drop_p_adj"]) + (" *" if r["rel_drop_significant"] else ""),
                f"{int(r['b'])} / {int(r['c'])}",
            ]
        )
    return Table(headers, rows, caption=_gap_caption(task, ref))


def _gap_caption(task: str, ref: str) -> str:
    """The gap table's caption; `ref` is the reference's display name."""
    return (
        f"{task}: gap = method - {ref} on the same examples (points; positive: the method keeps more); "
        "CI: the interval its test inverts (McNemar's exact test on the discordant pairs for 0/1 verdicts, so it "
        "excludes 0 exactly when p < 0.05; a paired bootstrap for graded scores); p adj.: adjusted across the "
        f"report's comparisons, significant = p adj. < 0.05; rel. drop gap = {ref}'s relative drop - the "
        "method's (positive: the method degrades less; bootstrap, its own adjusted family, * = significant); "
        f"b / c = examples only the method / only {ref} gets right (graded: scores higher / lower)"
    )


def _p(p: float) -> str:
    return stats.format_p(p).replace("p ", "").replace("= ", "")


def verdict_table(gaps, reference: str = REFERENCE, threats: list | None = None) -> Table:
    """The count table; its caption names `reference`, the method the gaps are against. With `threats` (one
    per gap, verdict.threats) of more than one kind, or with cells left out, a column says each row's."""
    by_threat = threats is not None and (len(set(threats)) > 1 or None in threats)
    v = verdict_frame(gaps, threats if by_threat else None)
    rows = [
        [r["task"]]
        + ([r["threat"]] if by_threat else [])
        + [
            method_label(r["method"], _variant(r)),
            str(r["cells"]),
            str(r["more"]),
            str(r["less"]),
            str(r["rel_smaller"]),
            str(r["rel_larger"]),
        ]
        for _, r in v.iterrows()
    ]
    return Table(
        ["Task"]
        + (["Threat"] if by_threat else [])
        + ["Method", "Cells", "More robust", "Less robust", "Rel. drop smaller", "Rel. drop larger"],
        rows,
        caption=f"Comparisons against {reference_name(reference)} (one cell per attack and eps) that are significant "
        "after adjustment for multiplicity across the report: the robust metric (more / less "
        "robust) and the relative drop (clean gap taken out, its own family).",
    )


def sanity_table(sanity, runs: list | None = None) -> Table:
    """The gradient-masking checks; `runs` (the report's) give each model's training variant for its method."""
    variants = {r.model: r.variant for r in runs or []}
    rows = [
        [
            r["task"],
            r["model"],
            who(r["method"], r["model"], variants.get(r["model"], "")),
            r["description"],
            r["status"],
            r["detail"],
        ]
        for _, r in sanity.iterrows()
    ]
    return Table(["Task", "Model", "Method", "Check", "Status", "Detail"], rows, status_col=4)


def runs_table(report) -> Table:
    rows = []
    for r in report.runs:
        notes = []
        if r.bad_lines:
            notes.append(f"{len(r.bad_lines)} corrupt line(s) skipped")
        if r.unfinished:
            notes.append(f"{r.unfinished} unfinished record(s) left out")
        if r.status and r.status != "complete":
            notes.append(f"status {r.status}")
        eps = ", ".join(r.eps_label(e) for e in r.eps)
        rows.append(
            [
                str(r.path),
                r.model,
                who(r.method, r.model, r.variant),
                r.task,
                r.attack,
                eps,
                str(r.records["id"].nunique()),
                str(len(r.records)),
                "; ".join(notes) or "ok",
            ]
        )
    return Table(["Run", "Model", "Method", "Task", "Attack", "eps", "Examples", "Records", "Notes"], rows)


def text_examples(run, limit: int = 8) -> list[list[Cell]]:
    df = run.records
    if "adv_text" not in df.columns or "text" not in df.columns:
        return []
    d = df[df["adv_text"].notna() & df["text"].notna()]
    d = d[d["adv_text"].astype(str) != d["text"].astype(str)]
    if not len(d):
        return []
    broken = broken_mask(d, run.binary)
    d = d.assign(_b=broken.astype(int)).sort_values(["_b", "eps"], ascending=[False, False], kind="stable")
    d = d.drop_duplicates("id").head(limit)
    rows = []
    for _, r in d.iterrows():
        left, right, changed = word_diff(r["text"], r["adv_text"])
        wc = r.get("words_changed")
        n = int(wc) if isinstance(wc, (int, float)) and math.isfinite(wc) else changed
        rows.append(
            [
                run.model,
                str(r["id"]),
                run.eps_label(r["eps"]),
                left,
                right,
                f"{r.get('clean_pred')} -> {r.get('pred')}",
                str(n),
            ]
        )
    return rows


def build_document(report) -> Document:
    s, g = report.summary, report.gaps
    tasks = list(dict.fromkeys(s["task"]))
    title = report.title or f"Robustness report: {', '.join(tasks)}"
    doc = Document(title)
    doc.add(Heading(1, title))
    ref = reference_name(report.reference)
    lead = verdict(g, s, report.correction, report.reference, report.runs)
    if lead:
        doc.add(Para(" ".join(lead), "verdict"))
    key = _add_key_figure(doc, report)
    doc.add(
        Para(
            f"Made by robust-pt {report.version} from {len(report.runs)} run(s) on {report.created}. Metrics "
            f"are in points (x100). Robust metrics: paired bootstrap CIs, {report.n_boot} replicates, seed "
            f"{report.seed}, 95% percentile interval. Gaps against {ref}: McNemar's exact test with the "
            f"interval it inverts (0/1 verdicts) or the bootstrap test with its interval (graded scores), "
            f"p-values adjusted across the report ({stats.CORRECTION_NAMES[report.correction]})."
        )
    )
    for w in report.warnings:
        doc.add(Para(f"Warning: {w}", "warning"))
    _add_base_novel(doc, report)  # a base-to-novel study's answer: before the per-method counts
    _add_findings(doc, report)
    transferred = {r.attack for r in report.runs if r.source}  # shown in the transfer matrix instead
    for task in tasks:
        doc.add(Heading(2, task))
        for attack in dict.fromkeys(s[s["task"] == task]["attack"]):
            if attack not in transferred:
                doc.add(Heading(3, f"{attack}"), wide_table(s, task, attack))
        if len(g) and (g["task"] == task).any():
            doc.add(Heading(3, f"Gaps against {ref}"), gap_table(g, task, report.reference))
        doc.add(Heading(3, "Attack details"), details_table(s, task, {str(r.path): r.eps_unit for r in report.runs}))

    for add in (_add_transfer, _add_corruptions, _add_certified):
        add(doc, report)
    if key != "metric_vs_eps":
        _add_figures(
            doc,
            report,
            "metric_vs_eps",
            "Robust metric vs eps",
            _EPS_ALT,
            _EPS_CAPTION,
        )
    _add_figures(
        doc,
        report,
        "degradation",
        "Relative degradation",
        "relative degradation under {}",
        "{}: relative degradation (1 - robust / clean) per task and method, 95% CI",
    )
    _add_figures(
        doc,
        report,
        "prompt_factors",
        "Prompt-tuning factors",
        "{}: robust metric vs prompt factors",
        "{}: robust metric (95% CI) of prompt-tuned models against one factor per panel, the other "
        "factors held at the values in brackets; clean dashed",
    )

    doc.add(Heading(2, "Sanity checks (gradient masking)"))
    doc.add(Para(RULE, "note"))
    doc.add(sanity_table(report.sanity, report.runs))

    _add_figures(
        doc,
        report,
        "gallery",
        "Adversarial examples",
        "adversarial examples of {}",
        "{}: clean | adversarial | amplified difference, with the question or hypothesis, the target "
        "and both predictions",
    )

    _add_text_examples(doc, report)
    doc.add(Heading(2, "Runs"), runs_table(report))
    return doc


def _add_key_figure(doc: Document, report) -> str:
    """The figure a report opens with, after its verdict; returns its kind. Transfer runs: the transfer
    matrices with the sentence on what the public base's inputs do; corruption runs: the relative
    corruption error; otherwise the robust metric vs eps per task."""
    from .transfer import MATRIX

    figs = report.figures
    if report.transfer is not None and len(report.transfer) and any(k[0] == MATRIX for k in figs):
        lead = _transfer_lead(report.transfer)
        if lead:
            doc.add(Bullets(lead))
        for (kind, name), fig in figs.items():
            if kind == MATRIX:
                doc.add(Image(fig, f"{name} transfer matrix", f"{name}: {_MATRIX_CAPTION}"))
        return "transfer"
    if ("rce", "all") in figs:
        doc.add(Image(figs[("rce", "all")], "relative corruption error", _rce_caption(report)))
        return "rce"
    certified = set(report.certified["task"]) if report.certified is not None and len(report.certified) else set()
    for task in dict.fromkeys(report.summary["task"]):
        fig = figs.get(("metric_vs_eps", task))
        if fig:
            only = task in certified and set(report.summary.loc[report.summary["task"] == task, "attack"]) <= set(
                report.certified.loc[report.certified["task"] == task, "attack"]
            )  # every run of the task certifies: its eps are radii, its eps 0 the smoothed classifier
            caption = _CERTIFIED_CAPTION if only else _EPS_CAPTION
            doc.add(Image(fig, _EPS_ALT.format(task), caption.format(task)))
    return "metric_vs_eps"


_EPS_ALT = "{}: robust metric vs eps"
_EPS_CAPTION = "{}: robust metric vs eps (clean at eps=0), 95% CI shaded"
_CERTIFIED_CAPTION = (
    "{}: certified accuracy vs certified L2 radius (at radius 0: the smoothed classifier's accuracy), 95% CI shaded"
)


_MATRIX_CAPTION = (
    "robust metric by source (the model the inputs were crafted on) and target (the model judged); "
    "outlined: source = target, the white-box attack"
)


def _rce_caption(report) -> str:
    ref = reference_name(report.reference)
    return (
        f"Relative corruption error against {ref}: (clean - corrupted) / the same for {ref} on the same "
        f"examples, per corruption averaged over its severities, with the mean over each kind on top (where "
        f"every corruption of the kind has one); 1 (dashed): degrades as much as {ref}, left of it less; log "
        f"scale; 95% paired bootstrap intervals, cut at the axis' ends (triangles: values beyond them)"
    )


def _add_corruptions(doc: Document, report) -> None:
    """Natural corruptions: per corruption the metric over its severities, the mean, the relative error."""
    c = report.corruptions
    if c is None or not len(c):
        return
    ref = reference_name(report.reference)
    doc.add(Heading(2, "Natural corruptions"))
    doc.add(
        Para(
            "Per corruption: the metric averaged over its severities (an example wrong on the clean input "
            "counts as wrong); mean: over the model's corruptions of that kind; relative corruption error "
            f"(rCE): (clean - corrupted) / the same for {ref} on the same examples (1: degrades as much as "
            f"{ref}, below 1: less). 95% paired bootstrap intervals.",
            "note",
        )
    )
    for task in dict.fromkeys(c["task"]):
        d = c[c["task"] == task]
        rows = [
            [
                r["model"],
                who(r["method"], r["model"], _variant(r)),
                r["kind"],
                r["corruption"],
                "mixed" if r["severities"] is None or r["severities"] != r["severities"] else str(int(r["severities"])),
                points(r["clean"]),
                f"{points(r['corrupted'])} {ci(r['corrupted_lo'], r['corrupted_hi'])}",
                ""
                if r["reference"] is None or math.isnan(r["rce"])
                else f"{r['rce']:.2f} [{r['rce_lo']:.2f}, {r['rce_hi']:.2f}]",
            ]
            for _, r in d.iterrows()
        ]
        metric = d["metric"].iloc[0]
        headers = ["Model", "Method", "Kind", "Corruption", "Severities", f"Clean {metric}",
                   f"Corrupted {metric} [95% CI]", f"rCE vs {ref} [95% CI]"]  # fmt: skip
        doc.add(Heading(3, f"{task}: corruptions"), Table(headers, rows, caption=f"{task}: natural corruptions"))


def _threat_name(attack: str, eps_label: str) -> str:
    return f"{attack} at {eps_label}" if eps_label else attack


def _add_base_novel(doc: Document, report) -> None:
    """Base-to-novel classes: the harmonic mean of base and novel accuracy per model under every threat all the
    models met, then per threat clean and robust accuracy on base classes, novel classes and their HM."""
    bn = report.base_novel
    if bn is None or not len(bn):
        return
    bn = bn[~bn["kind"].isin(["corruption", "text-corruption"])]  # their own section (the CSV holds them)
    if not len(bn):
        return
    doc.add(Heading(2, "Base-to-novel classes"))
    doc.add(
        Para(
            "Each model is tuned on the base classes and attacked on them and, zero-shot, on the novel classes "
            "(CoCoOp's base-to-novel protocol); HM is the harmonic mean 2BN/(B+N) of base and novel accuracy. A "
            "linear probe scores only its own classes, so it has no novel-class rows. Each side's interval and "
            "the gaps are in the per-task tables below; base_novel.csv holds every threat, corruptions included.",
            "note",
        )
    )
    for (base, novel), d in bn.groupby(["base_task", "novel_task"], sort=False):
        threats = list(dict.fromkeys(zip(d["attack"], d["eps_label"])))
        models = list(dict.fromkeys(zip(d["model"], d["method"], d["variant"])))
        met = {
            t: set(zip(*(g[c] for c in ("model", "method", "variant")))) for t, g in d.groupby(["attack", "eps_label"])
        }
        full = [t for t in threats if met[t] >= set(models)]  # every model met it
        hm = {(r["model"], r["attack"], r["eps_label"]): r for _, r in d.iterrows()}
        first = {m: next(r for k, r in hm.items() if k[0] == m) for m, _, _ in models}
        rows = [
            [m, who(meth, m, v), points(first[m]["hm_clean"])] + [points(hm[(m, a, e)]["hm_robust"]) for a, e in full]
            for m, meth, v in models
        ]
        headers = ["Model", "Method", "HM clean"] + [f"HM {_threat_name(a, e)}" for a, e in full]
        doc.add(Heading(3, f"{base} to {novel}: harmonic mean"),
                Table(headers, rows, caption=f"harmonic mean of {base} and {novel} accuracy (%)"))  # fmt: skip
        for a, e in threats:
            t = d[(d["attack"] == a) & (d["eps_label"] == e)]
            rows = [
                [r["model"], who(r["method"], r["model"], r["variant"])]
                + [
                    points(r[c])
                    for c in ("base_clean", "novel_clean", "hm_clean", "base_robust", "novel_robust", "hm_robust")
                ]  # fmt: skip
                for _, r in t.iterrows()
            ]
            headers = ["Model", "Method", "Base clean", "Novel clean", "HM clean", "Base robust", "Novel robust",
                       "HM robust"]  # fmt: skip
            name = _threat_name(a, e)
            doc.add(Heading(3, f"{base} to {novel}: {name}"), Table(headers, rows, caption=f"{name} (%)"))


def _add_certified(doc: Document, report) -> None:
    """Certified robustness: per certification run the average certified radius, the abstention rate, the
    certified accuracy at radius 0, and the certified accuracy vs radius figure per task."""
    c = report.certified
    if c is None or not len(c):
        return
    doc.add(Heading(2, "Certified robustness"))
    doc.add(
        Para(
            "Randomized smoothing (Cohen et al. 2019): certified accuracy at radius r is the share of examples "
            "whose smoothed classifier is right with a certified L2 radius of at least r (a lower bound no attack "
            "can break; an example wrong on the clean image counts as not certified). ACR: the average certified "
            "radius, 0 where the smoothed classifier is wrong or abstains, with its 95% bootstrap interval; "
            "abstained: the share of clean-correct examples where CERTIFY abstained; the largest radius n "
            "samples can certify is sigma Phi^-1(alpha^(1/n)). The certified accuracy at each radius, with its "
            "interval and the gaps, is in each task's tables above.",
            "note",
        )
    )
    for task in dict.fromkeys(c["task"]):
        d = c[c["task"] == task]
        rows = [
            [
                r["model"],
                who(r["method"], r["model"], r["variant"] or ""),
                f"{r['sigma']:g}" if r["sigma"] == r["sigma"] and r["sigma"] is not None else "",
                str(r["samples"]),
                points(r["clean"]),
                points(r["certified_at_0"]) if r["certified_at_0"] == r["certified_at_0"] else "",
                f"{r['acr']:.3f} [{r['acr_lo']:.3f}, {r['acr_hi']:.3f}]",
                points(r["abstain"]) if r["abstain"] == r["abstain"] else "",
                f"{r['max_radius']:.3f}" if r["max_radius"] == r["max_radius"] else "",
            ]
            for _, r in d.iterrows()
        ]
        headers = ["Model", "Method", "sigma", "n", "Clean (%)", "Certified at 0 (%)", "ACR [95% CI]", "Abstained (%)",
                   "Largest radius"]  # fmt: skip
        doc.add(Heading(3, f"{task}: certified"), Table(headers, rows, caption=f"{task}: randomized smoothing"))
        fig = report.figures.get(("certified", task))
        if fig:
            doc.add(Image(fig, f"{task}: certified accuracy vs radius", f"{task}: certified accuracy vs L2 radius"))


def _add_transfer(doc: Document, report) -> None:
    """Transfer attacks: the lead sentence, then per task and attack the heatmap and one matrix per eps."""
    from .transfer import groups, matrix

    f = report.transfer
    if f is None or not len(f):
        return
    doc.add(Heading(2, "Transfer attacks"))
    doc.add(
        Para(
            "Rows: the model(s) the adversarial inputs were crafted on (every step, no early stopping; several "
            "models: the mean of their losses); columns: the model judged. Each cell: robust metric [95% "
            "bootstrap CI] in points; the cell where source = target is the white-box attack. Inputs crafted "
            "once per source served every target.",
            "note",
        )
    )
    for task, attack, eps_all in groups(f):
        doc.add(Heading(3, f"{task}: {attack}"))  # its heatmap opens the report (_add_key_figure)
        for e in eps_all:
            sources, targets, cells = matrix(f, task, attack, e)
            rows = [
                [" + ".join(method_name(x) for x in src.split("+"))]
                + [_cell(cells.get((src, t)), src == t) for t in targets]
                for src in sources
            ]
            lab = next(iter(cells.values()))["eps_label"]
            doc.add(
                Table(
                    ["crafted on / judged on"] + [method_name(t) for t in targets],
                    rows,
                    caption=f"{task}: {attack} at eps={lab}, transfer matrix (white-box in bold)",
                )
            )


def _cell(r, diagonal: bool) -> Cell:
    if r is None:
        return ""
    text = f"{points(r['robust'])} {ci(r['robust_lo'], r['robust_hi'])}"
    return [(text, "strong")] if diagonal else text


def _transfer_lead(f) -> list[str]:
    """One sentence per task and attack at its largest eps: what the public base's inputs leave of each
    target, against the target's white-box value (where the report has it)."""
    from .transfer import order

    out = []
    for (task, attack), d in f.groupby(["task", "attack"], sort=False):
        e = d["eps"].max()
        b = d[np.isclose(d["eps"].to_numpy(float), e, rtol=0, atol=1e-12) & (d["source"] == PUBLIC_BASE)]
        b = b[b["target"] != PUBLIC_BASE]
        if not len(b):
            continue
        b = b.iloc[sorted(range(len(b)), key=lambda k: order(b["target"].iloc[k]))]
        parts = [
            f"{method_name(r['target'])} {points(r['robust'])}"
            + (f" (white-box {points(r['white_box'])})" if math.isfinite(r["white_box"]) else "")
            for _, r in b.iterrows()
        ]
        out.append(
            f"{task}, {attack} at eps={b['eps_label'].iloc[0]}: crafted on the public base, the inputs leave "
            + ", ".join(parts)
            + "."
        )
    return out


def _add_text_examples(doc: Document, report) -> None:
    """The word diffs of the text attacks' examples, if any run has them (split out of build_document)."""
    text_rows = [row for r in report.runs for row in text_examples(r, report.text_examples)]
    if text_rows:
        doc.add(Heading(2, "Text attack examples"))
        doc.add(
            Table(
                [
                    "Model",
                    "Id",
                    "eps",
                    "Original (removed words struck)",
                    "Adversarial (new words bold)",
                    "Prediction",
                    "Words changed",
                ],
                text_rows,
            )
        )


def _add_findings(doc: Document, report) -> None:
    """The count table, then one sentence per comparison: the significant ones (and failed sanity checks
    and notes) shown, the rest folded away."""
    g = report.gaps
    doc.add(Heading(2, "Findings"))
    n_sig = int(sum(is_significant(r) for _, r in g.iterrows())) if len(g) else 0
    shown, rest = list(report.findings[:n_sig]), list(report.findings[n_sig:])
    failed = report.sanity[report.sanity["status"] == FAIL] if len(report.sanity) else report.sanity
    for (task, model), grp in failed.groupby(["task", "model"], sort=False) if len(failed) else []:
        shown.append(
            f"{task}, {model}: sanity check(s) failed ({', '.join(grp['check'])}); its robust numbers may "
            f"be overstated by gradient masking (see the sanity checks)."
        )
    shown += report.notes
    if not len(g) and not shown:
        doc.add(Para(_no_comparison(report.reference)))
        return
    if len(g):
        doc.add(verdict_table(g, report.reference, threats(g, report.runs)))
    if shown:
        doc.add(Bullets(shown))
    if rest:
        doc.add(Fold(f"{len(rest)} comparison(s) without a significant difference", [Bullets(rest)]))


def _no_comparison(reference: str) -> str:
    """What the findings say when there is no comparison at all (the reference's wording, tables.reference_name)."""
    ref = reference_name(reference)
    if reference == CLEAN:
        return (
            f"No comparison against {ref}: no adversarially tuned run shares a task and attack with its clean partner."
        )
    return f"No comparison against {ref}: no {ref} run shares a task and attack with another method."


def _add_figures(doc: Document, report, kind: str, heading: str, alt: str, caption: str) -> None:
    """A section `heading` with every figure of `kind` (report.figures keyed (kind, name)), if there is one;
    `alt` and `caption` are formatted with the figure's name."""
    figs = [(k[1], v) for k, v in report.figures.items() if k[0] == kind]
    if figs:
        doc.add(Heading(2, heading))
        for name, fig in figs:
            doc.add(Image(fig, alt.format(name), caption.format(name)))


def cell_text(cell: Cell) -> str:
    if isinstance(cell, list):
        return "".join(t for t, _ in cell)
    return str(cell)


def render_cell(cell: Cell, escape: Callable[[Any], str], marks: dict[str, tuple[str, str]]) -> str:
    """A cell in a markup: each segment's text escaped and put between marks[style] (opening, closing);
    a style with no marks (None) as plain text."""
    if isinstance(cell, list):
        out = []
        for text, style in cell:
            opening, closing = marks.get(style, ("", ""))
            out.append(f"{opening}{escape(text)}{closing}")
        return "".join(out)
    return escape(cell)


def as_plain(x: Any) -> Any:
    """JSON-safe: nan -> None, numpy scalars -> Python."""
    import numpy as np

    if isinstance(x, dict):
        return {k: as_plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [as_plain(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        f = float(x)
        return f if math.isfinite(f) else None
    if isinstance(x, np.bool_):
        return bool(x)
    return x
