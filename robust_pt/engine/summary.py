"""A run's result: the Run type, the per-eps summary rows, and a completed run read back.

Why: the summary is computed from the completed records only (sorted by example and eps), so
it does not depend on which process or sitting wrote which batch; the statistics themselves
are runformat's, shared with the report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..attacks import Attack
from ..attacks.core import threat_model
from ..attacks.victim import corpus_summary, verdict_traits
from ..errors import ConfigError
from ..runformat import (
    SUMMARY_COLUMNS,
    TEXT_SUMMARY_COLUMNS,
    at_eps,
    eps_label,
    eps_stats,
    records_frame,
    rel_drop,
    target_rate,
)
from ..store import RunStore
from ..tasks.base import Task

if TYPE_CHECKING:
    from .prepare import Prepared


@dataclass
class Run:
    """The result of `evaluate`: summary and records as DataFrames, plus where they live."""

    summary: Any  # pandas.DataFrame
    records: Any  # pandas.DataFrame
    config: dict
    path: Path | None
    stats: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"Run(path={self.path}, rows={len(self.summary)}, records={len(self.records)})"


def _row(d, e: float, *, model: str, task: Task, spec, seed: int, binary: bool, stops: bool) -> dict:
    clean = float(d["clean_score"].mean()) if len(d) else math.nan
    robust = float(d["score"].mean()) if len(d) else math.nan
    st = eps_stats(d, binary)
    return {
        "model": model,
        "task": task.name,
        "attack": spec.name,
        "eps": e,
        "eps_label": eps_label(e, spec.eps_unit),
        "n": len(d),
        "metric": task.metric,
        "clean": clean,
        "robust": robust,
        "drop": clean - robust,
        "rel_drop": rel_drop(clean, robust),
        **{k: st[k] for k in ("success_rate", "mean_linf", "mean_l2", "n_attacked", "n_broken", "mean_steps")},
        "backend": spec.backend,
        "norm": spec.norm,
        "kind": spec.kind,
        "early_stop": bool(spec.early_stop and stops),
        "seed": seed,
        **({k: st[k] for k in TEXT_SUMMARY_COLUMNS} if bool(threat_model(spec.kind).record_fields) else {}),
    }


def summarize(
    records,
    *,
    model: str,
    task: Task,
    attack: Attack,
    eps: list[float],
    seed: int,
    n: int,
    surrogate: str | None = None,
) -> Any:
    """One row per eps from the records (what run.summary holds); the statistics are runformat's.
    `surrogate`: the label of the model(s) a transfer attack crafted on (a `surrogate` column)."""
    import pandas as pd

    spec = attack.spec
    binary, stops = verdict_traits(task)
    df = records if isinstance(records, pd.DataFrame) else pd.DataFrame(records)
    rows = []
    for e in eps:
        d = df[at_eps(df["eps"], e)] if len(df) else df
        rows.append(_row(d, e, model=model, task=task, spec=spec, seed=seed, binary=binary, stops=stops))
        rows[-1].update(corpus_summary(task, d))
        if surrogate:
            rows[-1]["surrogate"] = surrogate
        if getattr(spec, "target", ""):
            rows[-1].update(target=spec.target, target_success=target_rate(d))
    out = pd.DataFrame(rows)
    cols = SUMMARY_COLUMNS + [c for c in out.columns if c not in SUMMARY_COLUMNS]
    return out[[c for c in cols if c in out.columns]]


def finish(prep: Prepared, store: RunStore, stats: dict) -> Run:
    """Summary from the completed records (sorted by example and eps, so it does not depend
    on which process or run wrote which batch), written to the run directory."""
    frame = records_frame(store.records, prep.model_name, prep.task.name, prep.attack.name)
    surrogate = "+".join(s["label"] for s in prep.config.get("surrogates", [])) or None
    summary = summarize(
        frame,
        model=prep.model_name,
        task=prep.task,
        attack=prep.attack,
        eps=prep.eps,
        seed=prep.seed,
        n=prep.n,
        surrogate=surrogate,
    )
    store.finish(summary.to_dict(orient="records"), stats, summary.to_csv(index=False))
    return Run(summary=summary, records=frame, config=prep.config, path=store.path, stats=dict(stats))


def load_run(path: str | Path) -> Run:
    """A completed run directory as a Run (summary, records, config, stats)."""
    import pandas as pd

    from ..store import read_run

    meta, recs = read_run(path)
    if meta.get("status") != "complete":
        raise ConfigError(f"{path} holds an unfinished run; run the same command again to complete it")
    cfg = meta["config"]
    summary = pd.DataFrame(meta["summary"])
    frame = records_frame(recs, meta.get("model_name", ""), cfg["task"]["name"], cfg["attack"]["name"])
    return Run(summary=summary, records=frame, config=cfg, path=Path(path), stats=dict(meta.get("stats", {})))
