"""Report figures as PNG files (matplotlib's object API on the Agg canvas: no pyplot, no
global backend switch, no display needed).

metric_vs_eps    per task: robust metric vs eps (clean at eps = 0), one line per tuning
                 method / model, one panel per attack, the 95% CI shaded;
degradation      per attack: relative degradation bars grouped by task, the methods side by
                 side in each group, one panel per eps (the paper's Figure 3, with CIs);
prompt_factors   per task: robust metric vs prompt length / depth / reparameterisation
                 (factors.py decides which models form each panel), one line per eps;
transfer         per (task, attack): the transfer matrix as heatmaps, sources x targets, one panel
                 per eps, the robust metric in each cell, the white-box diagonal outlined;
rce              corruption reports: the relative corruption error against the reference per task
                 and corruption (the means on top), a dot per method with its 95% CI;
gallery          per run: the engine's clean | adversarial | amplified-difference sample
                 images (runs/ID/samples/*.png) with the input text (question, hypothesis,
                 ...), the target and the clean and adversarial predictions, composed with PIL
                 so that pixels stay sharp.

Every figure colours a tuning method the same way (method_colours: the colour follows the
method, never the checkpoint), so finetuning is the same blue in every panel and file. Models of
one method trained differently (a training variant, load.RunData.variant: adversarially tuned,
from a robust base) keep the method's colour, differ by line style and marker (bars: the name
under the bar) and are named with their variant in the legend. Axes show
metrics x100: shares (accuracy, Acc@0.5) as "%", other metrics (CIDEr) as points (metric_axis).
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np

from ..runformat import SAMPLE_RE, at_eps, safe_id, sample_tag
from ..tuning import registry
from .load import METHOD_NAMES, UNKNOWN, RunData, variant_rank
from .tables import VARIANT, method_label, method_name, reference_name

DPI = 110
#: Fixed colours: each registered method's own (tuning/registry.py), and the pretrained base's grey.
PALETTE = registry.Live(lambda: {**{m.name: m.colour for m in registry.methods() if m.colour}, "pretrain": "#7f7f7f"})
EXTRA = ["#8c564b", "#e377c2", "#17becf", "#bcbd22", "#393b79", "#637939"]
LINESTYLES = ["-", "--", ":", "-."]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


#: metrics that are shares of examples (or of answers): plotted as percentages
PERCENT_METRICS = ("accuracy", "acc@0.5")


def metric_axis(metric: str) -> str:
    """An axis label for a metric shown x100: "accuracy (%)" for shares, "cider (points)" otherwise."""
    return f"{metric} (%)" if str(metric).lower() in PERCENT_METRICS else f"{metric} (points)"


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI, metadata={"Software": None})
    return path


def _variants(summary) -> dict[tuple[str, str], str]:
    """(method, model) -> its training variant; {} (every variant "") for a frame without a "variant" column."""
    if VARIANT not in summary.columns or not len(summary):
        return {}
    cols = summary[["method", "model", VARIANT]].drop_duplicates()
    return {(m, mo): str(v or "") for m, mo, v in cols.itertuples(index=False)}


def _labels(summary, task: str = "") -> dict[tuple[str, str], str]:
    """(method, model) -> legend label: the method's name with its training variant, plus the model (without
    the method and task it repeats) when a method has several models of that variant."""
    out = {}
    variants = _variants(summary)
    pairs = list(summary[["method", "model"]].drop_duplicates().itertuples(index=False, name=None))
    per = Counter((m, variants.get((m, mo), "")) for m, mo in pairs)
    for method, model in pairs:
        variant = variants.get((method, model), "")
        name = _series_name(series(method, model), variant)
        many = per[(method, variant)] > 1 and method != UNKNOWN
        out[(method, model)] = f"{name} ({_short_model(model, method, task)})" if many else name
    return out


def series(method: str, model: str) -> str:
    """What a colour stands for: the tuning method, or the model when its method is unknown (a run
    written by another tool), so that two unknown models never share a colour."""
    return model if method == UNKNOWN else method


def method_order(names) -> list[str]:
    """The reference and the methods with a fixed colour first, in registration order (registry.report_order:
    finetune, prompt, adapter, bitfit, lora, the paper's order), then the others sorted."""
    first = registry.report_order()
    names = list(dict.fromkeys(names))
    return [m for m in first if m in names] + sorted(m for m in names if m not in first)


def method_colours(summary) -> dict[str, str]:
    """series -> colour for every series in `summary`: the fixed palette for the known methods, the
    extra colours in method_order for the rest. Computed over the whole summary (not one task or
    attack), so a method keeps its colour in every panel and figure of a report."""
    names = [series(m, mo) for m, mo in summary[["method", "model"]].itertuples(index=False)] if len(summary) else []
    out, k = {}, 0
    for name in method_order(names):
        if name in PALETTE:
            out[name] = PALETTE[name]
        else:
            out[name] = EXTRA[k % len(EXTRA)]
            k += 1
    return out


def _natural(s: str) -> list:
    """Sort key that puts L4 before L16 (numbers compared as numbers)."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", str(s)) if t]


def _series_name(name: str, variant: str = "") -> str:
    """A legend label: the method's display name, capitalised ('Finetuning', 'BitFit'), or the model's name;
    with the training variant in brackets ('Prompt tuning (adversarial 4/255)')."""
    if name in METHOD_NAMES or name in PALETTE:
        label = method_label(name, variant)
        return label[:1].upper() + label[1:]
    return f"{name} ({variant})" if variant else name


def _variant_styles(keys: list[tuple[str, str]], variants: dict | None = None) -> dict[tuple[str, str], dict]:
    """(method, model) -> line style and marker: the colour says the method, the style tells apart
    several models of one method (e.g. prompt lengths, or its training variants: `variants`, (method, model)
    -> variant, puts them in load.variant_rank's order)."""
    seen: dict[str, int] = {}
    out = {}
    order = method_order(series(*k) for k in keys)
    variants = variants or {}
    for key in sorted(keys, key=lambda k: (order.index(series(*k)), variant_rank(variants.get(k, "")), _natural(k[1]))):
        j = seen.get(series(*key), 0)
        seen[series(*key)] = j + 1
        out[key] = {"linestyle": LINESTYLES[j % len(LINESTYLES)], "marker": MARKERS[j % len(MARKERS)]}
    return out


def _legend(fig, handles: list, fontsize: int = 9) -> tuple[float, float, float, float]:
    """One legend for the whole figure, outside every panel so that it never hides data: a row on top when it
    fits, else a column on the right. Returns the rect that tight_layout may fill."""
    if not handles:
        return (0, 0, 1, 1)
    w_in, h_in = fig.get_figwidth(), fig.get_figheight()
    char = 0.0085 * fontsize  # inches per character, roughly (DejaVu Sans)
    widths = [0.45 + char * len(h.get_label()) for h in handles]
    if len(handles) <= 7 and sum(widths) <= w_in - 0.2:
        fig.legend(
            handles=handles,
            loc="upper center",
            ncol=len(handles),
            fontsize=fontsize,
            frameon=False,
            bbox_to_anchor=(0.5, 1.0),
            handlelength=1.4,
            columnspacing=1.2,
        )
        return (0, 0, 1, 1 - 0.42 / h_in)
    right = min(0.45, (max(widths) + 0.2) / w_in)
    fig.legend(handles=handles, loc="center left", fontsize=fontsize, frameon=False, bbox_to_anchor=(1 - right, 0.5))
    return (0, 0, 1 - right, 1)


def _widen_for_legend(fig, handles: list, fontsize: int = 9) -> None:
    """A narrow figure (one small panel) grows to hold its legend row, rather than cutting it; with more
    entries than a row takes, to hold its legend column (at most 45% of the width, as _legend allows) when
    long labels (a method with its training variant) would not fit."""
    widths = [0.45 + 0.0085 * fontsize * len(h.get_label()) for h in handles]
    need = sum(widths) + 0.3
    if len(handles) <= 7 and fig.get_figwidth() < need:
        fig.set_figwidth(need)
    elif len(handles) > 7 and fig.get_figwidth() * 0.45 < max(widths) + 0.2:
        fig.set_figwidth((max(widths) + 0.2) / 0.45)


def _eps_line(ax, dm, colour: str, label: str, style: dict, alpha: float) -> None:
    """One (method, model): clean at eps = 0, then the robust metric per eps; the 95% CI shaded. A run whose
    eps include 0 (a certification's radius 0) has its own value there, and the clean point is left out."""
    own = bool(len(dm)) and float(dm["eps"].min()) == 0.0
    first = [] if own else [0.0]
    x = np.concatenate([first, dm["eps"].to_numpy(float)])
    y = 100 * np.concatenate([[] if own else [dm["clean"].iloc[0]], dm["robust"].to_numpy(float)])
    lo = 100 * np.concatenate([[] if own else [dm["clean_lo"].iloc[0]], dm["robust_lo"].to_numpy(float)])
    hi = 100 * np.concatenate([[] if own else [dm["clean_hi"].iloc[0]], dm["robust_hi"].to_numpy(float)])
    ax.plot(x, y, ms=4, color=colour, label=label, **style)
    ax.fill_between(x, lo, hi, color=colour, alpha=alpha, linewidth=0)


def _eps_axis(ax, da, title: str, axis: dict | None = None, ylabel: str | None = None) -> None:
    ticks = sorted(set(da["eps"].round(12)))
    names = {round(e, 12): lab for e, lab in zip(da["eps"], da["eps_label"])}
    if ticks and ticks[0] > 0 and ticks[-1] / ticks[0] > 16:  # e.g. 1/255 ... 128/255: keep small eps apart
        ax.set_xscale("symlog", linthresh=ticks[0])
    top = float(np.nanmax(100 * da[["clean_hi", "robust_hi"]].to_numpy(float))) if len(da) else math.nan
    ax.set_ylim(0, max(5.0, 1.05 * top) if math.isfinite(top) else 100.0)
    if len(ticks) <= 8:
        rest = [t for t in ticks if t != 0]  # 0 is always there (clean, or a certification's radius 0)
        ax.set_xticks([0.0] + rest)
        ax.set_xticklabels(["0"] + [names[t] for t in rest], rotation=30, fontsize=8)
    ax.set_title(title, fontsize=10)
    names = {(axis or {}).get(a, "eps") for a in da["attack"]} if "attack" in da.columns else set()
    ax.set_xlabel(names.pop() if len(names) == 1 else "eps")
    ax.set_ylabel(ylabel or metric_axis(da["metric"].iloc[0] if len(da) else "metric"))
    ax.grid(alpha=0.3)


def metric_vs_eps(summary, task: str, path: Path, axis: dict | None = None, ylabel: str | None = None) -> Path:
    """Robust metric (points) vs eps for one task, one panel per attack. Colours follow method_colours (as in
    the degradation bars); several models of one method differ by line style and marker; one legend.
    `axis`: the x-axis title of each attack (RunData.eps_axis), "eps" where it does not say; `ylabel`: the
    y-axis title where not the metric's (certified accuracy)."""
    return _save(metric_vs_eps_figure(summary, task, axis, ylabel), path)


def metric_vs_eps_figure(summary, task: str, axis: dict | None = None, ylabel: str | None = None):
    """The figure of metric_vs_eps(), unsaved (tests read its lines)."""
    d = summary[summary["task"] == task]
    attacks = list(dict.fromkeys(d["attack"]))
    cols = min(3, len(attacks))
    rows = math.ceil(len(attacks) / cols)
    fig = _figure(4.2 * cols, 3.3 * rows)
    labels = _labels(d, task)
    colours, styles = method_colours(summary), _variant_styles(list(labels), _variants(d))
    per = {}
    for key in labels:
        per[series(*key)] = per.get(series(*key), 0) + 1
    handles: dict[str, object] = {}
    for k, attack in enumerate(attacks):
        ax = fig.add_subplot(rows, cols, k + 1)
        da = d[d["attack"] == attack]
        for key in styles:  # method_order, then the models in natural order
            dm = da[(da["method"] == key[0]) & (da["model"] == key[1])].sort_values("eps")
            if len(dm):
                _eps_line(ax, dm, colours[series(*key)], labels[key], styles[key], 0.15 / per[series(*key)])
        _eps_axis(ax, da, f"{task}: {attack}", axis, ylabel)
        for h in ax.get_lines():
            handles.setdefault(h.get_label(), h)
    order = [handles[labels[key]] for key in styles if labels[key] in handles]
    _widen_for_legend(fig, order)
    fig.tight_layout(rect=_legend(fig, order))
    return fig


GROUP_GAP = 0.8  # space between two task groups, in bar widths


def _panel_eps(d, max_panels: int) -> list[float]:
    """The eps of the panels: all of them, or `max_panels` spread over the range (smallest and largest kept)."""
    eps_all = sorted(set(d["eps"].round(12)))
    if len(eps_all) > max_panels:
        pick = np.unique(np.linspace(0, len(eps_all) - 1, max_panels).round().astype(int))
        eps_all = [eps_all[i] for i in pick]
    return eps_all


def _short_model(model: str, method: str, task: str) -> str:
    """A model's name without what the panel already says (its method and task): 'prompt-L4-shapes-ve' -> 'L4'."""
    out = model[: -len(task) - 1] if model.endswith(f"-{task}") else model
    out = out[len(method) + 1 :] if out.startswith(f"{method}-") else out
    return out or model


def degradation_layout(summary, attack: str) -> dict:
    """Where the bars of degradation() go, the same in every panel of `attack`: tasks along x, one group
    each; inside a group one bar per (method, model) in method_order, side by side. Returns {"bars": [dict(task,
    method, model, series, x, colour, variant)], "groups": [(task, centre x)], "colours": series -> colour}.
    `variant` names the bar when its method has several in that task (_bar_tags; else "")."""
    d = summary[summary["attack"] == attack]
    colours, variants = method_colours(summary), _variants(summary)
    bars, groups, x = [], [], 0.0
    for task in dict.fromkeys(d["task"]):
        pairs = d[d["task"] == task][["method", "model"]].drop_duplicates()
        keys = list(pairs.itertuples(index=False, name=None))
        order = method_order(series(*k) for k in keys)
        keys.sort(key=lambda k: (order.index(series(*k)), variant_rank(variants.get(k, "")), _natural(k[1])))
        tags = _bar_tags(keys, variants, task)
        start = x
        for method, model in keys:
            name = series(method, model)
            bars.append(
                {
                    "task": task,
                    "method": method,
                    "model": model,
                    "series": name,
                    "x": x,
                    "colour": colours[name],
                    "variant": tags[(method, model)],
                }
            )
            x += 1.0
        groups.append((task, (start + x - 1.0) / 2))
        x += GROUP_GAP
    return {
        "bars": bars,
        "groups": groups,
        "colours": {k: v for k, v in colours.items() if any(b["series"] == k for b in bars)},
    }


def _bar_tags(keys: list[tuple[str, str]], variants: dict, task: str) -> dict[tuple[str, str], str]:
    """(method, model) -> the name under its bar where its method has several bars in a task's group: its
    training variant ("clean" for none) where those bars differ in variant, its short model name where several
    share a variant; "" for a method's only bar."""
    out = {}
    for method, model in keys:
        mine = [k for k in keys if series(*k) == series(method, model)]
        variant = variants.get((method, model), "")
        parts = [variant or "clean"] if len({variants.get(k, "") for k in mine}) > 1 else []
        if sum(variants.get(k, "") == variant for k in mine) > 1:
            parts.append(_short_model(model, method, task))
        out[(method, model)] = ", ".join(parts)
    return out


def _degradation_panel(ax, de, layout: dict, title: str) -> None:
    """One eps: a bar (95% CI whiskers) per layout slot that has a row in `de`."""
    for bar in layout["bars"]:
        r = de[(de["task"] == bar["task"]) & (de["method"] == bar["method"]) & (de["model"] == bar["model"])]
        if not len(r):
            continue
        r = r.iloc[0]
        y = 100 * float(r["rel_drop"])
        err = np.nan_to_num(np.array([[y - 100 * r["rel_drop_lo"]], [100 * r["rel_drop_hi"] - y]]), nan=0.0)
        (patch,) = ax.bar(
            [bar["x"]],
            [y],
            width=0.9,
            color=bar["colour"],
            yerr=err.clip(min=0),
            capsize=2,
            error_kw={"elinewidth": 0.8, "ecolor": "#333333"},
        )
        patch.set_gid(f"{bar['task']}|{bar['series']}|{bar['model']}")
    ax.set_xticks([c for _, c in layout["groups"]])
    ax.set_xticklabels([t for t, _ in layout["groups"]])
    # tick_params, not set_xticklabels(fontsize=...): it also reaches the ticks matplotlib creates later
    ax.tick_params(axis="x", which="both", length=0, labelsize=9)
    variants = [b for b in layout["bars"] if b["variant"]]
    if variants:  # several models of one method in a group: name them under their bars, the task below
        ax.set_xticks([b["x"] for b in variants], minor=True)
        ax.set_xticklabels([b["variant"] for b in variants], minor=True)
        ax.tick_params(axis="x", which="minor", labelrotation=90, labelsize=6)
        ax.xaxis.remove_overlapping_locs = False  # a variant's bar may sit at its group's centre
        ax.tick_params(axis="x", which="major", pad=6 + 3.6 * max(len(b["variant"]) for b in variants))
    ax.set_xlim(-0.8, max([b["x"] for b in layout["bars"]] + [0.0]) + 0.8)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel("relative degradation (%)", fontsize=9)
    ax.axhline(0, color="black", linewidth=0.6)
    if len(de):
        top = float(np.nanmax(100 * de["rel_drop_hi"].to_numpy(float)))
        low = float(np.nanmin(100 * np.minimum(de["rel_drop"].to_numpy(float), de["rel_drop_lo"].to_numpy(float))))
        ax.set_ylim(
            min(0.0, 1.1 * low) if math.isfinite(low) else 0.0, max(5.0, 1.1 * top) if math.isfinite(top) else 100.0
        )
    ax.grid(axis="y", alpha=0.3)


def degradation_figure(summary, attack: str, max_panels: int = 6):
    """The figure of degradation(), unsaved (tests read its bars)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    d = summary[summary["attack"] == attack]
    layout = degradation_layout(summary, attack)
    eps_all = _panel_eps(d, max_panels)
    units = len(layout["bars"]) + GROUP_GAP * max(0, len(layout["groups"]) - 1)
    cols = min(2 if units > 12 else 3, max(1, len(eps_all)))
    rows = max(1, math.ceil(len(eps_all) / cols))
    extra = 0.35 if any(b["variant"] for b in layout["bars"]) else 0.0
    panel_w = max(4.0, 1.0 + 0.22 * units)
    fig = _figure(panel_w * cols, (3.0 + extra) * rows + 0.45)
    for k, e in enumerate(eps_all):
        ax = fig.add_subplot(rows, cols, k + 1)
        de = d[np.isclose(d["eps"].to_numpy(float), e, rtol=0, atol=1e-12)]
        lab = de["eps_label"].iloc[0] if len(de) else f"{e:g}"
        _degradation_panel(ax, de, layout, f"{attack}, eps={lab}")
    handles = [Patch(facecolor=c, label=_series_name(m)) for m, c in layout["colours"].items()]
    handles.append(Line2D([], [], color="#333333", marker="|", markersize=9, linestyle="none", label="95% CI"))
    _widen_for_legend(fig, handles)
    fig.tight_layout(rect=_legend(fig, handles))
    return fig


def degradation(summary, attack: str, path: Path, max_panels: int = 6) -> Path:
    """Relative degradation (%) bars with 95% CIs, one panel per eps: tasks along x, the methods side by side in
    each task's group, one colour per method in every panel (one legend), so that the eye compares methods
    within a task, as the paper's Figure 3 does."""
    return _save(degradation_figure(summary, attack, max_panels), path)


# ----------------------------------------------------------------------------- gallery


def transfer_heatmap(frame, task: str, attack: str, path: Path) -> Path:
    """The transfer matrix of one task and attack: rows the source crafted on, columns the target judged,
    each cell the robust metric (points); cells where source = target (white-box) outlined."""
    from matplotlib.patches import Rectangle

    from .transfer import matrix

    d = frame[(frame["task"] == task) & (frame["attack"] == attack)]
    eps_all = sorted(set(d["eps"].round(12)))
    _, targets0, _ = matrix(frame, task, attack, eps_all[0])
    sources0 = list(dict.fromkeys(d["source"]))
    wide = len(targets0) > 8  # many targets (one method tuned several ways): one eps per row, not side by side
    if wide:
        fig = _figure(2.4 + 0.62 * len(targets0), (2.6 + 0.42 * len(sources0)) * len(eps_all))
    else:
        fig = _figure(2.4 + 0.95 * len(targets0) * len(eps_all) + 0.5 * len(eps_all), 1.9 + 0.42 * len(sources0))
    fig.set_layout_engine("constrained")
    for k, e in enumerate(eps_all):
        sources, targets, cells = matrix(frame, task, attack, e)
        vals = np.array(
            [[100 * cells[(s, t)]["robust"] if (s, t) in cells else np.nan for t in targets] for s in sources]
        )
        ax = fig.add_subplot(len(eps_all), 1, k + 1) if wide else fig.add_subplot(1, len(eps_all), k + 1)
        im = ax.imshow(vals, cmap="RdYlGn", vmin=0, vmax=100, aspect="auto")
        for i, src in enumerate(sources):
            for j, tgt in enumerate(targets):
                if np.isfinite(vals[i, j]):
                    ax.text(j, i, f"{vals[i, j]:.1f}", ha="center", va="center", fontsize=8)
                if src == tgt:
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2, ec="black"))
        ax.set_xticks(range(len(targets)), [method_name(t) for t in targets], rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(sources)), [_source_name(s) for s in sources] if k == 0 or wide else [], fontsize=8)
        lab = d[np.isclose(d["eps"].to_numpy(float), e, rtol=0, atol=1e-12)]["eps_label"].iloc[0]
        ax.set_title(f"eps={lab}", fontsize=9)
        ax.set_xlabel("target (judged)", fontsize=8)
        if k == 0 or wide:
            ax.set_ylabel("source (crafted on)", fontsize=8)
    fig.colorbar(im, ax=fig.axes, shrink=0.9, label=f"robust {metric_axis(d['metric'].iloc[0])}")
    fig.suptitle(f"{task}: {attack} transfer matrix (outlined: white-box)", fontsize=10)
    return _save(fig, path)


def rce(frame, path: Path) -> Path:
    """Relative corruption error against the reference (corruption.py): one panel per task, one row per
    corruption (the means over each kind on top), a dot per method with its 95% CI, on a log axis shared
    by the panels (a ratio: 1/2 and 2 are as far from 1); 1 (dashed) degrades as much as the reference,
    left of it less. Values beyond the axis sit on its edge as triangles, intervals are cut there."""
    d = frame[frame["rce"].notna()]
    tasks = list(dict.fromkeys(d["task"]))
    rows_of = {t: _rce_rows(d[d["task"] == t]) for t in tasks}
    height = max(len(r) for r in rows_of.values()) if tasks else 1
    fig = _figure(3.6 * max(1, len(tasks)) + 1.2, 1.3 + 0.22 * height)
    colours, keys = method_colours(frame), _rce_keys(d)
    x_all = d["rce"].to_numpy(float)
    spread = np.abs(np.log2(x_all[x_all > 0])) if (x_all > 0).any() else np.array([1.0])
    lim = 2.0 ** min(3, max(1, math.ceil(float(np.max(spread)) + 0.25)))
    lo_edge, hi_edge = 1 / lim, lim
    handles: dict[str, object] = {}
    for k, task in enumerate(tasks):
        ax = fig.add_subplot(1, len(tasks), k + 1)
        names = rows_of[task]
        dt = d[d["task"] == task]
        for j, (m, variant, dot) in enumerate(keys):
            dm = dt[[k == (m, variant) for k in _rce_series(dt)]]
            y = np.array(
                [names.index((r["kind"], r["corruption"])) + (j - (len(keys) - 1) / 2) * 0.15 for _, r in dm.iterrows()]
            )
            x = np.clip(dm["rce"].to_numpy(float), lo_edge, hi_edge)
            lo = np.clip(dm["rce_lo"].to_numpy(float), lo_edge, hi_edge)
            hi = np.clip(dm["rce_hi"].to_numpy(float), lo_edge, hi_edge)
            ax.hlines(y, lo, hi, color=colours[m], lw=0.8)
            inside = (dm["rce"].to_numpy(float) > lo_edge) & (dm["rce"].to_numpy(float) < hi_edge)
            ax.plot(x[inside], y[inside], dot, ms=3.5, color=colours[m], label=_series_name(m, variant))
            for edge, marker in ((lo_edge, "<"), (hi_edge, ">")):
                out = ~inside & (x == edge)
                ax.plot(x[out], y[out], marker, ms=4.5, color=colours[m])
        ax.axvline(1.0, color="black", ls="--", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xlim(lo_edge / 1.1, hi_edge * 1.1)
        ticks = [2.0**e for e in range(-int(math.log2(lim)), int(math.log2(lim)) + 1)]
        ax.set_xticks(ticks, [f"1/{round(1 / t)}" if t < 1 else f"{t:g}" for t in ticks], fontsize=8)
        ax.minorticks_off()
        ax.set_yticks(range(len(names)), [c if c != "mean" else f"mean ({kind})" for kind, c in names], fontsize=7)
        ax.set_ylim(len(names) - 0.5, -0.5)
        ax.set_title(task, fontsize=10)
        ax.set_xlabel(f"rCE vs {reference_name(d['reference'].iloc[0])} (1: as much)", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    order = list(handles.values())
    fig.tight_layout(rect=_legend(fig, order))
    return _save(fig, path)


def _rce_series(d) -> list[tuple[str, str]]:
    """(series, training variant) of each row of a corruption frame (variant "" without a "variant" column)."""
    variants = d[VARIANT] if VARIANT in d.columns else [""] * len(d)
    return [(series(m, mo), str(v or "")) for m, mo, v in zip(d["method"], d["model"], variants)]


def _rce_keys(d) -> list[tuple[str, str, str]]:
    """(series, variant, marker) of each dot series of rce(): method_order, then load.variant_rank; a method's
    first variant a dot, its others the next markers (the colour stays the method's)."""
    pairs = list(dict.fromkeys(_rce_series(d)))
    order = method_order(m for m, _ in pairs)
    pairs.sort(key=lambda k: (order.index(k[0]), variant_rank(k[1])))
    return [(m, v, MARKERS[[p for p in pairs if p[0] == m].index((m, v)) % len(MARKERS)]) for m, v in pairs]


def _rce_rows(d) -> list[tuple[str, str]]:
    """(kind, corruption) rows of one task: the means first, then each kind's corruptions as they come."""
    keys = list(dict.fromkeys(zip(d["kind"], d["corruption"])))
    return [k for k in keys if k[1] == "mean"] + [k for k in keys if k[1] != "mean"]


def _source_name(source: str) -> str:
    return " + ".join(method_name(s) for s in source.split("+"))


def prompt_factors(summary, task: str, panels: list, path: Path) -> Path:
    """Robust metric (points, 95% CI) of prompt-tuned models against one prompt factor per panel;
    rows are attacks, columns factors; one line per eps, the clean metric dashed."""
    from .factors import TITLES, value_label

    mine = [p for p in panels if p.task == task]
    attacks = list(dict.fromkeys(p.attack for p in mine))
    factors = list(dict.fromkeys(p.factor for p in mine))
    fig = _figure(3.8 * len(factors) + 1.2, 3.2 * len(attacks))
    d = summary[summary["task"] == task]
    for p in mine:
        ax = fig.add_subplot(
            len(attacks), len(factors), attacks.index(p.attack) * len(factors) + factors.index(p.factor) + 1
        )
        da = d[(d["attack"] == p.attack) & d["model"].isin(p.models)]
        x = np.arange(len(p.models))
        clean = [
            100 * float(da[da["model"] == m]["clean"].iloc[0]) if (da["model"] == m).any() else np.nan for m in p.models
        ]
        ax.plot(x, clean, ls="--", color="#7f7f7f", marker="o", ms=3, label="clean")
        for k, (e, lab) in enumerate(
            da[["eps", "eps_label"]].drop_duplicates("eps").sort_values("eps").itertuples(index=False)
        ):
            rows = [da[(da["model"] == m) & np.isclose(da["eps"], e)] for m in p.models]
            y = np.array([100 * float(r["robust"].iloc[0]) if len(r) else np.nan for r in rows])
            lo = np.array([100 * float(r["robust_lo"].iloc[0]) if len(r) else np.nan for r in rows])
            hi = np.array([100 * float(r["robust_hi"].iloc[0]) if len(r) else np.nan for r in rows])
            ax.errorbar(
                x + 0.04 * (k - 1),
                y,
                yerr=[y - lo, hi - y],
                marker="o",
                ms=4,
                capsize=2,
                color=EXTRA[k % len(EXTRA)],
                label=f"eps {lab}",
            )
        ax.set_xticks(x)
        ax.set_xticklabels([value_label(p.factor, v) for v in p.values], fontsize=8)
        fixed = ", ".join(f"{TITLES[f].split()[-1]} {value_label(f, v)}" for f, v in p.fixed.items())
        ax.set_title(f"{p.attack}: {TITLES[p.factor]}\n({fixed})", fontsize=9)
        ax.set_ylabel(metric_axis(da["metric"].iloc[0] if len(da) else "metric"))
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        if factors.index(p.factor) == len(factors) - 1:  # one legend per row, beside it: never over the data
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    return _save(fig, path)


_safe = safe_id  # an example id as the engine writes it into a sample's file name


def _text_or_none(v) -> str | None:
    """A record's text field, or None when absent (pandas fills a missing one with nan)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return str(v)


@functools.lru_cache(maxsize=16)
def _builtin_task(name: str, split: str, seed: int, size: int, n: int):
    from ..tasks import load_task

    return load_task(name, split=split, seed=seed, size=size, num_examples=n)


def _example_text(run: RunData, ident: str) -> dict:
    """{"text", "target"} of a built-in ShapesWorld example, regenerated from its id (NAME:SPLIT:SEED:INDEX;
    generation is deterministic and cheap). Image attacks do not store the input text in their records, yet a
    gallery row without its question cannot be read. {} for real datasets or an id of another form."""
    from ..tasks import named

    parts = ident.rsplit(":", 3)
    if (
        len(parts) != 4
        or named.lookup(parts[0]) is None
        or parts[0] != run.task
        or not parts[2].isdigit()
        or not parts[3].isdigit()
    ):
        return {}
    i = int(parts[3])
    size = run.image_size or 64
    try:
        ex = _builtin_task(parts[0], parts[1], int(parts[2]), size, max(i + 1, len(run.records)))[i]
    except Exception:  # noqa: BLE001 - a caption is a nicety; the gallery must not fail for it
        return {}
    return {"text": ex.text, "target": ex.target}


def samples(run: RunData, limit: int = 6) -> list[dict]:
    """The engine's sample PNGs of a run, matched to their records: broken ones first, largest eps first."""
    folder = run.samples_dir
    if not folder.is_dir():
        return []
    tags: dict[str, float] = {}
    for e in run.eps:  # the run's unit; the pixel rule, which the engine once used for every unit; the number
        for tag in (sample_tag(e, run.eps_unit), sample_tag(e, "pixel")):
            tags.setdefault(tag.removeprefix("eps-"), e)
    tags.update({f"{e:g}": e for e in run.eps})
    found = []
    df = run.records
    for f in sorted(folder.glob("*.png")):
        m = SAMPLE_RE.match(f.name)
        if not m or m["eps"] not in tags:
            continue
        e = tags[m["eps"]]
        d = df[at_eps(df["eps"].to_numpy(float), e)]
        rec = d[d["id"].map(safe_id) == m["id"]]
        r = rec.iloc[0].to_dict() if len(rec) else {}
        ident = r.get("id", m["id"])
        known = _example_text(run, str(ident))
        if (
            known
            and r.get("clean_correct") == 1
            and run.declares.get("candidates")
            and _text_or_none(r.get("clean_pred")) != known.get("target")
        ):
            known = {}  # right yet not the regenerated answer: not the example that was attacked (older generator)
        found.append(
            {
                "path": f,
                "eps": e,
                "eps_label": run.eps_label(e),
                "id": ident,
                "broken": m["status"] == "broken",
                "clean_pred": _text_or_none(r.get("clean_pred")),
                "pred": _text_or_none(r.get("pred")),
                "text": _text_or_none(r.get("text")) or known.get("text"),
                "target": _text_or_none(r.get("target")) or known.get("target"),
                "adv_text": _text_or_none(r.get("adv_text")),
            }
        )
    found.sort(key=lambda s: (not s["broken"], -s["eps"], str(s["id"])))
    # spread over eps: the first sample of each eps first, then the rest
    firsts, rest, seen = [], [], set()
    for s in found:
        (rest if s["eps"] in seen else firsts).append(s)
        seen.add(s["eps"])
    return (firsts + rest)[:limit]


def _fonts() -> dict:
    """DejaVu Sans (shipped with matplotlib, so the same glyphs everywhere), else Pillow's default font."""
    from PIL import ImageFont

    ttf = Path(__import__("matplotlib").get_data_path()) / "fonts" / "ttf"
    out = {}
    for key, name, size in (
        ("title", "DejaVuSans-Bold.ttf", 15),
        ("bold", "DejaVuSans-Bold.ttf", 13),
        ("text", "DejaVuSans.ttf", 13),
        ("small", "DejaVuSans.ttf", 12),
    ):
        try:
            out[key] = ImageFont.truetype(str(ttf / name), size)
        except OSError:
            try:
                out[key] = ImageFont.load_default(size=size)
            except TypeError:  # Pillow < 10.1: the bitmap font
                out[key] = ImageFont.load_default()
    return out


def _wrap(draw, text: str, font, width: int) -> list[str]:
    """Greedy word wrap to `width` pixels; a word longer than a line is cut."""
    lines: list[str] = []
    cur = ""
    for word in str(text).split():
        while draw.textlength(word, font=font) > width:  # cut an over-long word
            k = max(1, next((j for j in range(len(word), 0, -1) if draw.textlength(word[:j], font=font) <= width), 1))
            if cur:
                lines.append(cur)
                cur = ""
            lines.append(word[:k])
            word = word[k:]
        trial = f"{cur} {word}".strip()
        if cur and draw.textlength(trial, font=font) > width:
            lines.append(cur)
            cur = word
        else:
            cur = trial
    return lines + [cur] if cur else lines or [""]


def _answer_text(value, image_size: int | None) -> str:
    """An answer as a reader wants it: location tokens ('<bin_8> <bin_18> ...') as a box in pixels."""
    from ..tasks.metrics import tokens_to_box

    text = "" if value is None else str(value)
    box = tokens_to_box(text, image_size) if image_size and text.startswith("<bin_") else None
    if box is None:
        return text
    x0, y0, x1, y1 = box
    return f"box ({x0:.0f}, {y0:.0f})-({x1:.0f}, {y1:.0f}) px"


def _sample_lines(s: dict, run: RunData) -> list[tuple[str, str, str]]:
    """(text, font key, colour) paragraphs of one gallery row: what was asked (called what the run's task
    declares: Question, Hypothesis, ...), the target (a graded task's reference), both answers."""
    image_size = run.image_size
    broken = "#b3261e" if s["broken"] else "#137333"
    out = [
        (f"eps={s['eps_label']}  -  {'broken' if s['broken'] else 'still correct'}", "bold", broken),
        (f"id {s['id']}", "small", "#666666"),
    ]
    if s.get("text"):
        out.append((f"{run.text_label}: {s['text']}", "text", "black"))
    if s.get("adv_text") and s["adv_text"] != s.get("text"):
        out.append((f"Adversarial text: {s['adv_text']}", "text", "#8a4b00"))
    if s.get("target"):
        name = "Reference" if run.declares.get("verdict") == "graded" else "Target"  # captions: one of several
        out.append((f"{name}: {_answer_text(s['target'], image_size)}", "text", "#444444"))
    out.append((f"Clean prediction: {_answer_text(s['clean_pred'], image_size)}", "text", "black"))
    out.append(
        (f"Adversarial prediction: {_answer_text(s['pred'], image_size)}", "bold" if s["broken"] else "text", broken)
    )
    return out


def gallery(run: RunData, items: list[dict], path: Path, width: int = 600, text_width: int = 420) -> Path:
    """One row per sample: the engine's clean | adversarial | difference image on the left, scaled by a whole
    factor (at most `width` px) so that pixels stay sharp, and on the right the input text (question,
    hypothesis, ...), the target and both predictions, wrapped to `text_width` px: a reader sees what the
    model was asked, not only that its answer changed. Composed with PIL."""
    from PIL import Image, ImageDraw

    fonts, pad, gap = _fonts(), 10, 16
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    rows = []
    for s in items:
        with Image.open(s["path"]) as im:
            tile = im.convert("RGB")
        k = max(1, width // tile.width)
        tile = (
            tile.resize((tile.width * k, tile.height * k), Image.NEAREST)
            if tile.width <= width
            else tile.resize((width, max(1, round(tile.height * width / tile.width))), Image.NEAREST)
        )
        lines = [
            (ln, f, c) for text, f, c in _sample_lines(s, run) for ln in _wrap(scratch, text, fonts[f], text_width)
        ]
        rows.append((tile, lines, max(tile.height, 18 * len(lines) + 4)))
    img_w = max([t.width for t, _, _ in rows] + [1])
    who = f"{run.model} ({method_label(run.method, run.variant)})" if run.method != UNKNOWN else run.model
    head = pad + 26 + 20
    canvas = Image.new(
        "RGB", (pad + img_w + gap + text_width + pad, head + sum(h + 2 * pad for *_, h in rows)), "white"
    )
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, pad), f"{who}, {run.task}, {run.attack}", fill="black", font=fonts["title"])
    for j, name in enumerate(("clean", "adversarial", "difference (amplified)")):
        draw.text((pad + j * img_w // 3 + 2, pad + 26), name, fill="#555555", font=fonts["small"])
    y = head
    for tile, lines, h in rows:
        draw.line([(pad, y), (canvas.width - pad, y)], fill="#dddddd", width=1)
        canvas.paste(tile, (pad, y + pad))
        for n, (ln, f, c) in enumerate(lines):
            draw.text((pad + img_w + gap, y + pad + 18 * n), ln, fill=c, font=fonts[f])
        y += h + 2 * pad
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, format="PNG", optimize=False)
    return path
