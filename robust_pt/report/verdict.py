"""The answer a report opens with: two to four sentences computed from the adjusted counts.

Why: readers of a report with hundreds of gaps want "is any tuning method more robust than
finetuning, where, and how often?" before any table. The sentences count the comparisons
whose adjusted decision (`significant`, `rel_drop_significant`; stats.py) goes each way,
per method, with the attack families (image, embedding, text, joint) they fall in. The
comparisons are against the report's reference method (finetuning unless it names
another), and the sentences name that method.
"""

from __future__ import annotations

from collections import Counter

from . import stats
from .load import REFERENCE, method_rank
from .tables import method_name, reference_name


def _methods(gaps) -> list[str]:
    """The methods of the gaps in report order (load.method_rank), the others after them by name."""
    present = list(dict.fromkeys(gaps["method"]))
    return sorted(present, key=lambda m: (method_rank(m), m))


def _families(rows) -> str:
    counts = Counter(rows["kind"].fillna("other"))
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _cells(gaps, mask, methods: list[str]) -> list[str]:
    """'prompt tuning in 5 of 66 cells (image 3, embedding 2)' for each method with such cells."""
    out = []
    for m in methods:
        mine = gaps["method"] == m
        hit = gaps[mine & mask]
        if len(hit):
            out.append(f"{method_name(m)} in {len(hit)} of {int(mine.sum())} cells ({_families(hit)})")
    return out


def _rel_drop(gaps, methods: list[str], ref: str) -> str:
    """The relative-drop sentence; `ref` is the reference's display name."""
    rsig = gaps["rel_drop_significant"].astype(bool)
    lead = "With the clean gap taken out (relative drop), "
    sides = []
    for word, mask in (("larger", rsig & (gaps["rel_drop_gap"] < 0)), ("smaller", rsig & (gaps["rel_drop_gap"] > 0))):
        counts = [(m, int((mask & (gaps["method"] == m)).sum())) for m in methods]
        named = ", ".join(f"{method_name(m)} in {k}" for m, k in counts if k)
        sides.append(
            f"the degradation is significantly {word} than {ref}'s for {named} cells"
            if named
            else f"significantly {word} for no method"
        )
    if not rsig.any():
        return lead + f"no difference from {ref} is significant."
    return lead + "; ".join(sides) + "."


def _adjustment(correction: str) -> str:
    if correction == "none":
        return "without adjustment for multiplicity"
    return f"with {stats.CORRECTION_NAMES[correction]} adjustment across them"


def verdict(gaps, summary, correction: str, reference: str = REFERENCE) -> list[str]:
    """The report's opening sentences (none without gaps). `summary` gives each attack's family;
    `reference` is the method the gaps are against, named in every sentence."""
    if not len(gaps):
        return []
    ref = reference_name(reference)
    kinds = summary.drop_duplicates(["task", "attack"]).set_index(["task", "attack"])["kind"]
    g = gaps.assign(kind=[kinds.get((t, a)) for t, a in zip(gaps["task"], gaps["attack"])])
    methods = _methods(g)
    sig = g["significant"].astype(bool)
    tasks = g["task"].nunique()
    first = (
        f"{len(g)} comparisons against {ref} ({len(methods)} method{'s' * (len(methods) > 1)}, {tasks} "
        f"task{'s' * (tasks > 1)}, one per attack and eps), each decided by McNemar's exact test (a bootstrap "
        f"test for graded metrics) {_adjustment(correction)}, at the 5% level."
    )
    more, less = _cells(g, sig & (g["gap"] > 0), methods), _cells(g, sig & (g["gap"] < 0), methods)
    second = (
        f"More robust than {ref}: " + "; ".join(more) + "."
        if more
        else f"No tuning method is significantly more robust than {ref} anywhere."
    )
    third = (
        f"Less robust than {ref}: " + "; ".join(less) + "."
        if less
        else f"No tuning method is significantly less robust than {ref} anywhere."
    )
    return [first, second, third, _rel_drop(g, methods, ref)]
