"""Prompt-tuning factors: the robust metric against prompt length, depth and reparameterisation.

OFA-PT's robustness claim is about one prompt setting; whether it holds depends on the
setting. For every task and attack, the prompt-tuned models of a report are grouped by
one factor while the other two stay at their reference values (the most common value of
each factor among the task's prompt-tuned models, e.g. length 16, both, no
reparameterisation), and each group with two or more values of its factor becomes one
panel: robust metric (points, 95% CI) against the factor, one line per eps, clean dashed.
The settings come from each run's run.json (model_meta.tuning), so a committed report
regenerates from its runs alone.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from .load import RunData

FACTORS = ("prompt_length", "prompt_depth", "prompt_reparam")
TITLES = {"prompt_length": "prompt length", "prompt_depth": "prompt depth",
          "prompt_reparam": "reparameterisation"}
DEPTH_ORDER = {"encoder": 0, "decoder": 1, "both": 2}


def prompt_settings(run: RunData) -> dict | None:
    """{factor: value} of a prompt-tuned run's model, or None for any other run."""
    if run.method != "prompt":
        return None
    tuning = (run.meta.get("model_meta") or {}).get("tuning") or {}
    if not all(f in tuning for f in FACTORS):
        return None
    return {f: tuning[f] for f in FACTORS}


@dataclass
class Panel:
    """One factor of one task and attack: the models that differ only in it, ordered by its value."""

    task: str
    attack: str
    factor: str
    values: list  # the factor's values, in plotting order
    models: list[str]  # the model of each value
    fixed: dict  # the other factors' reference values


def _order(factor: str, value):
    return DEPTH_ORDER.get(value, 9) if factor == "prompt_depth" else value


def panels(runs: list[RunData]) -> list[Panel]:
    """Every (task, attack, factor) with at least two prompt settings that differ only in that factor."""
    out = []
    keys = dict.fromkeys((r.task, r.attack) for r in runs)
    for task, attack in keys:
        settings = {r.model: s for r in runs if r.task == task and r.attack == attack
                    for s in [prompt_settings(r)] if s is not None}
        if len(settings) < 2:
            continue
        ref = {f: Counter(s[f] for s in settings.values()).most_common(1)[0][0] for f in FACTORS}
        for f in FACTORS:
            others = [g for g in FACTORS if g != f]
            group = {s[f]: m for m, s in settings.items() if all(s[g] == ref[g] for g in others)}
            if len(group) >= 2:
                values = sorted(group, key=lambda v: _order(f, v))
                out.append(Panel(task, attack, f, values, [group[v] for v in values], {g: ref[g] for g in others}))
    return out


def value_label(factor: str, value) -> str:
    if factor == "prompt_reparam":
        return "MLP" if value else "none"
    return str(value)


__all__ = ["FACTORS", "Panel", "panels", "prompt_settings", "value_label"]
