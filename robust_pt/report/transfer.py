"""The transfer matrix: sources (the surrogates attacks were crafted on) x targets (the models judged).

Why: a white-box number says what the holder of the tuned model can do; the question for
parameter-efficient tuning is what the holder of the public base (or of another model tuned
from it) can do. One row per (task, attack, eps, source, target) with the robust metric and
its 95% bootstrap interval (the report summary's), and the target's white-box value: the run
crafted on the target itself (source = target, the matrix diagonal), else the target's
white-box run of the same preset. `transfer_gap` = robust - white-box (>= 0 when transfer is
weaker, as it should be; sanity.check_transfer tests it).
"""

from __future__ import annotations

import math

import numpy as np

from .load import RunData, normalise_method
from .threats import PUBLIC_BASE

#: the kind under which Report.figures files a transfer matrix (its key: (MATRIX, "task: attack"))
MATRIX = "transfer"

COLUMNS = [
    "task",
    "attack",
    "eps",
    "eps_label",
    "metric",
    "source",
    "target",
    "model",
    "n",
    "clean",
    "robust",
    "robust_lo",
    "robust_hi",
    "white_box",
    "transfer_gap",
    "run",
]


def transfer_runs(runs: list[RunData]) -> list[RunData]:
    return [r for r in runs if r.source]


def _hashes(run: RunData) -> tuple[str | None, list]:
    """(the target's state hash, the surrogates' state hashes) of a run, from its config."""
    cfg = run.meta.get("config") or {}
    model = cfg.get("model") if isinstance(cfg.get("model"), dict) else {}
    sur = cfg.get("surrogates") if isinstance(cfg.get("surrogates"), list) else []
    return model.get("state_sha256"), [s.get("state_sha256") for s in sur if isinstance(s, dict)]


def crafted_on_itself(run: RunData) -> bool:
    """A transfer run whose one surrogate is the target itself (same weights): the white-box attack."""
    target, sources = _hashes(run)
    if target and sources:
        return sources == [target]
    return bool(run.source) and normalise_method(run.source) == run.method  # runs without hashes: by label


#: spec keys that may differ between a run and its white-box / untargeted partner
PARTNER_FREE = ("early_stop", "target", "eps", "description", "path")


def same_attack(a: RunData, b: RunData) -> bool:
    """The same preset with the same settings, apart from early stopping, target and eps grid."""
    keep = lambda r: {k: v for k, v in r.attack_spec.items() if k not in PARTNER_FREE}  # noqa: E731
    return a.attack_name == b.attack_name and keep(a) == keep(b)


def white_box_run(run: RunData, runs: list[RunData]) -> RunData | None:
    """The target's own attack for a transfer run: crafted on the target itself, else its untargeted
    white-box run of the same preset."""
    same = [r for r in runs if r.task == run.task and r.model == run.model and same_attack(r, run) and not r.target]
    own = [r for r in same if r.source and crafted_on_itself(r)]
    return (own or [r for r in same if not r.source] or [None])[0]


def transfer_frame(runs: list[RunData], summary):
    """The matrix's rows (COLUMNS), in the report's run order; None without transfer runs."""
    import pandas as pd

    tr = transfer_runs(runs)
    if not tr or summary is None or not len(summary):
        return None
    by_run = {path: d for path, d in summary.groupby("run")}
    rows = []
    for r in tr:
        wb = white_box_run(r, runs)
        own = by_run.get(str(r.path))
        base = by_run.get(str(wb.path)) if wb is not None else None
        for _, s in (own if own is not None else summary.iloc[:0]).iterrows():
            w = _at(base, s["eps"])
            rows.append(
                {
                    "task": r.task,
                    "attack": r.attack_name,
                    "eps": float(s["eps"]),
                    "eps_label": s["eps_label"],
                    "metric": s["metric"],
                    "source": r.source,
                    "target": target_key(r),
                    "model": r.model,
                    "n": int(s["n"]),
                    "clean": float(s["clean"]),
                    "robust": float(s["robust"]),
                    "robust_lo": float(s["robust_lo"]),
                    "robust_hi": float(s["robust_hi"]),
                    "white_box": w,
                    "transfer_gap": float(s["robust"]) - w if math.isfinite(w) else math.nan,
                    "run": str(r.path),
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS)


def target_key(run: RunData) -> str:
    """A target's column: its method, with its training variant where it has one ("finetune (robust base)"),
    so that one method tuned four ways is four columns, not one cell overwritten three times."""
    return f"{run.method} ({run.variant})" if run.variant else run.method


def _at(summary_rows, eps: float) -> float:
    if summary_rows is None:
        return math.nan
    hit = summary_rows[np.isclose(summary_rows["eps"].to_numpy(float), eps, rtol=0, atol=1e-12)]
    return float(hit["robust"].iloc[0]) if len(hit) else math.nan


def matrix(frame, task: str, attack: str, eps: float):
    """(sources, targets, values[source][target] rows of `frame`) of one task, attack and eps, in run order."""
    d = frame[
        (frame["task"] == task)
        & (frame["attack"] == attack)
        & np.isclose(frame["eps"].to_numpy(float), eps, rtol=0, atol=1e-12)
    ]
    sources = sorted(dict.fromkeys(d["source"]), key=order)
    targets = sorted(dict.fromkeys(d["target"]), key=order)
    cells = {(r["source"], r["target"]): r for _, r in d.iterrows()}
    return sources, targets, cells


def order(name: str) -> tuple:
    """The public base first, then the report's method order, ensembles last (in their order)."""
    from .load import method_rank

    parts = name.split("+")
    return (len(parts) > 1, [(p != PUBLIC_BASE, method_rank(p.partition(" (")[0]), p) for p in parts])


def groups(frame) -> list[tuple[str, str, list[float]]]:
    """(task, attack, eps values) of the matrices `frame` holds, in its order."""
    out = []
    for (task, attack), d in frame.groupby(["task", "attack"], sort=False):
        out.append((task, attack, sorted(set(d["eps"].round(12)))))
    return out
