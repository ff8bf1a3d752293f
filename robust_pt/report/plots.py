"""Report figures as PNG files (matplotlib's object API on the Agg canvas: no pyplot, no
global backend switch, no display needed).

metric_vs_eps    per task: robust metric vs eps (clean at eps = 0), one line per tuning
                 method / model, one panel per attack, the 95% CI shaded;
degradation      per attack: relative degradation bars per task for each method, one
                 panel per eps (the paper's Figure 3, with CIs);
prompt_factors   per task: robust metric vs prompt length / depth / reparameterisation
                 (factors.py decides which models form each panel), one line per eps;
gallery          per run: the engine's clean | adversarial | amplified-difference sample
                 images (runs/ID/samples/*.png) with the clean and adversarial predictions,
                 composed with PIL so that pixels stay sharp.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from .load import RunData, eps_label
from .tables import method_name

DPI = 110
PALETTE = {"finetune": "#1f77b4", "prompt": "#d62728", "adapter": "#2ca02c", "bitfit": "#9467bd", "lora": "#ff7f0e",
           "pretrain": "#7f7f7f"}
EXTRA = ["#8c564b", "#e377c2", "#17becf", "#bcbd22", "#393b79", "#637939"]


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


def _labels(summary) -> dict[tuple[str, str], str]:
    """(method, model) -> legend label: the method's name, plus the model when a method has several."""
    out = {}
    per = summary.groupby("method")["model"].nunique().to_dict() if len(summary) else {}
    for (method, model) in summary[["method", "model"]].drop_duplicates().itertuples(index=False):
        name = method_name(method) if method != "unknown" else model
        out[(method, model)] = f"{name} ({model})" if per.get(method, 1) > 1 and method != "unknown" else name
    return out


def _colours(keys: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    out, used, k = {}, set(), 0
    for key in keys:
        c = PALETTE.get(key[0])
        if c is None or c in used:
            c = EXTRA[k % len(EXTRA)]
            k += 1
        used.add(c)
        out[key] = c
    return out


def metric_vs_eps(summary, task: str, path: Path) -> Path:
    """Robust metric (points) vs eps for one task."""
    d = summary[summary["task"] == task]
    attacks = list(dict.fromkeys(d["attack"]))
    cols = min(3, len(attacks))
    rows = math.ceil(len(attacks) / cols)
    fig = _figure(4.2 * cols, 3.3 * rows)
    labels = _labels(d)
    colours = _colours(list(labels))
    for k, attack in enumerate(attacks):
        ax = fig.add_subplot(rows, cols, k + 1)
        da = d[d["attack"] == attack]
        for key in labels:
            dm = da[(da["method"] == key[0]) & (da["model"] == key[1])].sort_values("eps")
            if not len(dm):
                continue
            x = np.concatenate([[0.0], dm["eps"].to_numpy(float)])
            y = 100 * np.concatenate([[dm["clean"].iloc[0]], dm["robust"].to_numpy(float)])
            lo = 100 * np.concatenate([[dm["clean_lo"].iloc[0]], dm["robust_lo"].to_numpy(float)])
            hi = 100 * np.concatenate([[dm["clean_hi"].iloc[0]], dm["robust_hi"].to_numpy(float)])
            ax.plot(x, y, marker="o", ms=4, color=colours[key], label=labels[key])
            ax.fill_between(x, lo, hi, color=colours[key], alpha=0.15, linewidth=0)
        ticks = sorted(set(da["eps"].round(12)))
        names = {round(e, 12): lab for e, lab in zip(da["eps"], da["eps_label"])}
        if ticks and ticks[0] > 0 and ticks[-1] / ticks[0] > 16:  # e.g. 1/255 ... 128/255: keep small eps apart
            ax.set_xscale("symlog", linthresh=ticks[0])
        top = float(np.nanmax(100 * da[["clean_hi", "robust_hi"]].to_numpy(float))) if len(da) else math.nan
        ax.set_ylim(0, max(5.0, 1.05 * top) if math.isfinite(top) else 100.0)
        if len(ticks) <= 8:
            ax.set_xticks([0.0] + ticks)
            ax.set_xticklabels(["0"] + [names[t] for t in ticks], rotation=30, fontsize=8)
        ax.set_title(f"{task}: {attack}", fontsize=10)
        ax.set_xlabel("eps")
        ax.set_ylabel(f"{da['metric'].iloc[0] if len(da) else 'metric'} (x100)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def degradation(summary, attack: str, path: Path, max_panels: int = 6) -> Path:
    """Relative degradation (%) bars per task for each method, one panel per eps, with 95% CIs."""
    d = summary[summary["attack"] == attack]
    eps_all = sorted(set(d["eps"].round(12)))
    if len(eps_all) > max_panels:
        pick = np.unique(np.linspace(0, len(eps_all) - 1, max_panels).round().astype(int))
        eps_all = [eps_all[i] for i in pick]
    tasks = list(dict.fromkeys(d["task"]))
    labels = _labels(d)
    keys = list(labels)
    colours = _colours(keys)
    cols = min(3, len(eps_all))
    rows = math.ceil(len(eps_all) / cols)
    fig = _figure(max(4.0, 1.5 + 0.55 * len(tasks) * max(1, len(keys))) * cols, 3.4 * rows)
    width = 0.8 / max(1, len(keys))
    for k, e in enumerate(eps_all):
        ax = fig.add_subplot(rows, cols, k + 1)
        de = d[np.isclose(d["eps"].to_numpy(float), e, rtol=0, atol=1e-12)]
        for j, key in enumerate(keys):
            xs, ys, los, his = [], [], [], []
            for t, task in enumerate(tasks):
                r = de[(de["task"] == task) & (de["method"] == key[0]) & (de["model"] == key[1])]
                if not len(r):
                    continue
                r = r.iloc[0]
                xs.append(t - 0.4 + width * (j + 0.5))
                ys.append(100 * r["rel_drop"])
                los.append(100 * (r["rel_drop"] - r["rel_drop_lo"]))
                his.append(100 * (r["rel_drop_hi"] - r["rel_drop"]))
            if xs:
                err = np.nan_to_num(np.array([los, his]), nan=0.0).clip(min=0)
                ax.bar(xs, ys, width=width * 0.95, color=colours[key], label=labels[key], yerr=err, capsize=2,
                       error_kw={"elinewidth": 0.8})
        ax.set_xticks(range(len(tasks)))
        ax.set_xticklabels(tasks, fontsize=8, rotation=15)
        lab = de["eps_label"].iloc[0] if len(de) else f"{e:g}"
        ax.set_title(f"{attack}, eps={lab}", fontsize=10)
        ax.set_ylabel("relative degradation (%)")
        ax.axhline(0, color="black", linewidth=0.6)
        top = np.nanmax(100 * (de["rel_drop_hi"].to_numpy(float))) if len(de) else math.nan
        ax.set_ylim(min(0.0, float(np.nanmin(100 * de["rel_drop"].to_numpy(float)))) if len(de) else 0.0,
                    max(5.0, 1.1 * top) if math.isfinite(top) else 100.0)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


# ----------------------------------------------------------------------------- gallery

SAMPLE_RE = re.compile(r"^eps-(?P<eps>.+?)_(?P<id>.+)_(?P<status>broken|robust)\.png$")


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
        ax = fig.add_subplot(len(attacks), len(factors), attacks.index(p.attack) * len(factors)
                             + factors.index(p.factor) + 1)
        da = d[(d["attack"] == p.attack) & d["model"].isin(p.models)]
        x = np.arange(len(p.models))
        clean = [100 * float(da[da["model"] == m]["clean"].iloc[0]) if (da["model"] == m).any() else np.nan
                 for m in p.models]
        ax.plot(x, clean, ls="--", color="#7f7f7f", marker="o", ms=3, label="clean")
        for k, (e, lab) in enumerate(da[["eps", "eps_label"]].drop_duplicates("eps").sort_values("eps").itertuples(
                index=False)):
            rows = [da[(da["model"] == m) & np.isclose(da["eps"], e)] for m in p.models]
            y = np.array([100 * float(r["robust"].iloc[0]) if len(r) else np.nan for r in rows])
            lo = np.array([100 * float(r["robust_lo"].iloc[0]) if len(r) else np.nan for r in rows])
            hi = np.array([100 * float(r["robust_hi"].iloc[0]) if len(r) else np.nan for r in rows])
            ax.errorbar(x + 0.04 * (k - 1), y, yerr=[y - lo, hi - y], marker="o", ms=4, capsize=2,
                        color=EXTRA[k % len(EXTRA)], label=f"eps {lab}")
        ax.set_xticks(x)
        ax.set_xticklabels([value_label(p.factor, v) for v in p.values], fontsize=8)
        fixed = ", ".join(f"{TITLES[f].split()[-1]} {value_label(f, v)}" for f, v in p.fixed.items())
        ax.set_title(f"{p.attack}: {TITLES[p.factor]}\n({fixed})", fontsize=9)
        ax.set_ylabel(f"{da['metric'].iloc[0] if len(da) else 'metric'} (x100)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        if factors.index(p.factor) == len(factors) - 1:  # one legend per row, beside it: never over the data
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    return _save(fig, path)


def _safe(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(s))[:60]


def samples(run: RunData, limit: int = 6) -> list[dict]:
    """The engine's sample PNGs of a run, matched to their records: broken ones first, largest eps first."""
    folder = run.samples_dir
    if not folder.is_dir():
        return []
    tags = {eps_label(e).replace("/", "-"): e for e in run.eps}
    tags.update({f"{e:g}": e for e in run.eps})
    found = []
    df = run.records
    for f in sorted(folder.glob("*.png")):
        m = SAMPLE_RE.match(f.name)
        if not m or m["eps"] not in tags:
            continue
        e = tags[m["eps"]]
        d = df[np.isclose(df["eps"].to_numpy(float), e, rtol=0, atol=1e-12)]
        rec = d[d["id"].map(_safe) == m["id"]]
        r = rec.iloc[0].to_dict() if len(rec) else {}
        found.append({"path": f, "eps": e, "eps_label": eps_label(e) if run.eps_unit == "pixel" else f"{e:g}",
                      "id": r.get("id", m["id"]), "broken": m["status"] == "broken",
                      "clean_pred": r.get("clean_pred"), "pred": r.get("pred"), "text": r.get("text")})
    found.sort(key=lambda s: (not s["broken"], -s["eps"], str(s["id"])))
    # spread over eps: the first sample of each eps first, then the rest
    firsts, rest, seen = [], [], set()
    for s in found:
        (rest if s["eps"] in seen else firsts).append(s)
        seen.add(s["eps"])
    return (firsts + rest)[:limit]


def gallery(run: RunData, items: list[dict], path: Path, width: int = 600) -> Path:
    """The samples stacked (composed with PIL, pixels kept sharp), each with eps, id and both predictions."""
    from PIL import Image, ImageDraw, ImageFont

    def font(size: int):
        try:
            return ImageFont.load_default(size=size)
        except TypeError:  # Pillow < 10.1: the bitmap font
            return ImageFont.load_default()

    f_title, f_text = font(15), font(13)
    who = f"{run.model} ({method_name(run.method)})" if run.method != "unknown" else run.model
    blocks = []
    for s in items:
        with Image.open(s["path"]) as im:
            tile = im.convert("RGB")
        scale = width / tile.width
        tile = tile.resize((width, max(1, round(tile.height * scale))), Image.NEAREST)
        verdict = "broken" if s["broken"] else "still correct"
        caption = (f"eps={s['eps_label']}   id {s['id']}:   clean '{s['clean_pred']}'  ->  adversarial "
                   f"'{s['pred']}'   ({verdict})")
        blocks.append((caption, tile))
    pad, line = 10, 20
    height = pad + 24 + line + sum(line + t.height + pad for _, t in blocks)
    canvas = Image.new("RGB", (width + 2 * pad, height), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, pad), f"{who}, {run.task}, {run.attack}", fill="black", font=f_title)
    y = pad + 24
    for k, name in enumerate(("clean", "adversarial", "difference (amplified)")):
        draw.text((pad + k * width // 3 + 4, y), name, fill="#555555", font=f_text)
    y += line
    for caption, tile in blocks:
        draw.text((pad, y), caption, fill="black", font=f_text)
        y += line
        canvas.paste(tile, (pad, y))
        y += tile.height + pad
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, format="PNG", optimize=False)
    return path
