"""Prompt-tuning factors: the robust metric against prompt length, depth and reparameterisation.

OFA-PT's robustness claim is about one prompt setting; whether it holds depends on the
setting. For every task and attack, the models of a prompt-like method (its `factors`,
tuning/registry.py; prompt tuning: length, depth, reparameterisation) are grouped by one
factor while the others stay at their reference values (the most common value of each
factor among the task's models of that method, e.g. length 16, both, no
reparameterisation), and each group with two or more values of its factor becomes one
panel: robust metric (points, 95% CI) against the factor, one line per eps, clean dashed.
The settings come from each run's run.json (model_meta.tuning), so a committed report
regenerates from its runs alone.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ..tuning import registry
from .load import RunData


def _factors() -> dict:
    """{option: Factor} of every prompt-like method."""
    return {f.option: f for m in registry.methods() if m.prompt_like for f in m.factors}


#: option -> axis title, for every prompt-like method's factors (read from the registry on every access).
TITLES = registry.Live(lambda: {k: f.title for k, f in _factors().items()})


def _method_factors(run: RunData):
    m = registry.find(run.method)
    return m.factors if m is not None and m.prompt_like else ()


def prompt_settings(run: RunData) -> dict | None:
    """{factor: value} of a run of a prompt-like method, or None for any other run."""
    factors = _method_factors(run)
    if not factors:
        return None
    tuning = (run.meta.get("model_meta") or {}).get("tuning") or {}
    if not all(f.option in tuning for f in factors):
        return None
    return {f.option: tuning[f.option] for f in factors}


@dataclass
class Panel:
    """One factor of one task and attack: the models that differ only in it, ordered by its value."""

    task: str
    attack: str
    factor: str
    values: list  # the factor's values, in plotting order
    models: list[str]  # the model of each value
    fixed: dict  # the other factors' reference values
    method: str = "prompt"  # the prompt-like method the models were tuned with


def panels(runs: list[RunData]) -> list[Panel]:
    """Every (task, attack, method, factor) with at least two settings that differ only in that factor."""
    out = []
    keys = dict.fromkeys((r.task, r.attack) for r in runs)
    for task, attack in keys:
        mine = [r for r in runs if r.task == task and r.attack == attack]
        for method in dict.fromkeys(r.method for r in mine if _method_factors(r)):
            factors = registry.get(method).factors
            settings = {r.model: s for r in mine if r.method == method for s in [prompt_settings(r)] if s is not None}
            if len(settings) < 2:
                continue
            names = [f.option for f in factors]
            ref = {f: Counter(s[f] for s in settings.values()).most_common(1)[0][0] for f in names}
            for f in factors:
                others = [g for g in names if g != f.option]
                group = {s[f.option]: m for m, s in settings.items() if all(s[g] == ref[g] for g in others)}
                if len(group) >= 2:
                    values = sorted(group, key=f.sort_key)
                    out.append(
                        Panel(
                            task,
                            attack,
                            f.option,
                            values,
                            [group[v] for v in values],
                            {g: ref[g] for g in others},
                            method,
                        )
                    )
    return out


def value_label(factor: str, value) -> str:
    f = _factors().get(factor)
    return str(value) if f is None else f.value_label(value)


__all__ = ["Panel", "TITLES", "panels", "prompt_settings", "value_label"]
