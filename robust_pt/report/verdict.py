"""The answer a report opens with: one sentence per threat, computed from the adjusted counts, then how.

Why: readers of a report with hundreds of gaps want "is any tuning method more robust than
finetuning, where, and how often?" before any table, and the answer depends on who attacks.
So the comparisons are counted per threat, read from the runs' declarations (run.json), never
from attack names:

* white-box (and query) attacks on the model itself: crafted on the model they are judged on (no
  surrogates), with its gradients or, for black-box and text attacks, its answers;
* transferred from the public base: crafted on the untuned base only (every surrogate's method
  is the pretrained base) and judged on models that are not among the surrogates;
* transferred from a tuned sibling: crafted on other tuned models (or an ensemble with them);
* corruptions: natural corruptions (corruption.corruption_runs), not attacks at all;
* certified: randomized smoothing (certified.is_certified), a lower bound rather than an attack.

A cell where the reference (or the method compared with it) is itself among the surrogates is
a white-box attack on that model set against a transfer attack on the other: it says nothing
about which is more robust, so it is counted in no threat, and the verdict says how many were
left out. The sentences count the comparisons whose adjusted decision (`significant`,
`rel_drop_significant`; stats.py) goes each way, per method, with the attack families (image,
embedding, text, joint) they fall in. The comparisons are against the report's reference
method (finetuning unless it names another), and the sentences name that method; the last
sentence says how the cells were decided. Runs with a training variant (adversarially tuned, from a
robust base) are counted per method and variant, named with both.
"""

from __future__ import annotations

from collections import Counter

from . import stats
from .load import REFERENCE, RunData, method_rank, normalise_method, variant_rank
from .tables import VARIANT, method_label, reference_name
from .threats import CERTIFIED, CORRUPTIONS, FROM_BASE, FROM_SIBLING, PUBLIC_BASE, THREATS, WHITE_BOX


def _methods(gaps) -> list[tuple[str, str]]:
    """The (method, training variant) pairs of the gaps in report order (load.method_rank, then
    load.variant_rank), the other methods after them by name; the variant is "" for gaps without a
    "variant" column. Why pairs: an adversarially tuned prompt is counted apart from a clean one."""
    variants = gaps[VARIANT] if VARIANT in gaps.columns else [""] * len(gaps)
    present = list(dict.fromkeys(zip(gaps["method"], variants)))
    return sorted(present, key=lambda k: (method_rank(k[0]), k[0], variant_rank(k[1])))


def _of(gaps, key: tuple[str, str]):
    """The gaps of one (method, variant) (a boolean mask)."""
    mine = gaps["method"] == key[0]
    return mine & (gaps[VARIANT] == key[1]) if VARIANT in gaps.columns else mine


def _families(rows) -> str:
    counts = Counter(rows["kind"].fillna("other"))
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _cells(gaps, mask, methods: list[tuple[str, str]]) -> list[str]:
    """'prompt tuning in 5 of 66 cells (image 3, embedding 2)' for each (method, variant) with such cells."""
    out = []
    for key in methods:
        mine = _of(gaps, key)
        hit = gaps[mine & mask]
        if len(hit):
            out.append(f"{method_label(*key)} in {len(hit)} of {int(mine.sum())} cells ({_families(hit)})")
    return out


def _surrogates(run: RunData) -> list[dict]:
    sur = (run.meta.get("config") or {}).get("surrogates")
    return [s for s in sur if isinstance(s, dict)] if isinstance(sur, list) else []


def _among_surrogates(run: RunData) -> bool:
    """The run's own model is one of the models its inputs were crafted on (a white-box attack on it, at
    least in part): by weights hash where run.json has them, else by tuning method."""
    from .transfer import _hashes

    own, hashes = _hashes(run)
    if own and hashes and all(hashes):
        return own in hashes
    return run.method in {normalise_method(str(s.get("label"))) for s in _surrogates(run)}


def threat(run: RunData, ref: RunData | None) -> str | None:
    """The threat one comparison (run against the reference run `ref`) measures; None where one of the two
    models was among the surrogates while the other was not (a white-box attack against a transfer one)."""
    from .certified import is_certified
    from .corruption import corruption_runs

    if corruption_runs([run]):
        return CORRUPTIONS
    if is_certified(run):
        return CERTIFIED
    if not run.source:
        return WHITE_BOX
    if _among_surrogates(run) or (ref is not None and _among_surrogates(ref)):
        return None
    methods = {normalise_method(str(s.get("label"))) for s in _surrogates(run)}
    return FROM_BASE if methods == {PUBLIC_BASE} else FROM_SIBLING


def threats(gaps, runs: list[RunData] | None) -> list[str | None]:
    """The threat of each gap row (None: left out, see threat()); without runs, every attack is white-box."""
    if runs is None:
        return [WHITE_BOX] * len(gaps)
    by_key = {(r.task, r.attack, r.model): r for r in runs}
    out = []
    for t, a, m, ref in zip(gaps["task"], gaps["attack"], gaps["model"], gaps["reference"]):
        run = by_key.get((t, a, m))
        out.append(threat(run, by_key.get((t, a, ref))) if run is not None else WHITE_BOX)
    return out


def _answer(g, methods: list[tuple[str, str]], ref: str, what: str) -> str:
    """One threat's sentence: more robust than `ref` where, less robust where; or that nothing differs."""
    sig = g["significant"].astype(bool)
    more, less = _cells(g, sig & (g["gap"] > 0), methods), _cells(g, sig & (g["gap"] < 0), methods)
    head = what[:1].upper() + what[1:]
    if not more and not less:
        return f"{head}: no tuning method is significantly more or less robust than {ref} ({len(g)} cells)."
    parts = [
        (f"more robust than {ref}: " + "; ".join(more)) if more else f"no method significantly more robust than {ref}",
        ("less robust: " + "; ".join(less)) if less else "none significantly less robust",
    ]
    return f"{head}: " + "; ".join(parts) + "."


def _rel_drop(gaps, methods: list[tuple[str, str]], ref: str) -> str:
    """The relative-drop sentence; `ref` is the reference's display name."""
    rsig = gaps["rel_drop_significant"].astype(bool)
    lead = "With the clean gap taken out (relative drop), "
    sides = []
    for word, mask in (("larger", rsig & (gaps["rel_drop_gap"] < 0)), ("smaller", rsig & (gaps["rel_drop_gap"] > 0))):
        counts = [(key, int((mask & _of(gaps, key)).sum())) for key in methods]
        named = ", ".join(f"{method_label(*key)} in {k}" for key, k in counts if k)
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


def verdict(gaps, summary, correction: str, reference: str = REFERENCE, runs: list[RunData] | None = None) -> list[str]:
    """The report's opening sentences (none without gaps): the answer per threat first, then the cells left
    out, the relative drop and how the cells were decided. `summary` gives each attack's family; `runs`
    the declarations each threat is read from (without them every attack counts as white-box);
    `reference` is the method the gaps are against, named in every sentence."""
    if not len(gaps):
        return []
    ref = reference_name(reference)
    kinds = summary.drop_duplicates(["task", "attack"]).set_index(["task", "attack"])["kind"]
    g = gaps.assign(kind=[kinds.get((t, a)) for t, a in zip(gaps["task"], gaps["attack"])], threat=threats(gaps, runs))
    methods = _methods(g)
    present = [t for t in THREATS if (g["threat"] == t).any()]
    out = [_answer(g[g["threat"] == t], methods, ref, t) for t in present]
    left = g[g["threat"].isna()]
    counted = g[g["threat"].notna()]
    if len(left):
        out.append(
            f"Left out: {len(left)} cells where {ref} or the method compared with it was itself among the models "
            f"the inputs were crafted on (a white-box attack on one of the two against a transfer attack on the "
            f"other)."
        )
    if len(counted):
        out.append(_rel_drop(counted, methods, ref))
    tasks, n = g["task"].nunique(), len({m for m, _ in methods})
    out.append(
        f"{len(g)} comparisons against {ref} ({n} method{'s' * (n > 1)}, {tasks} "
        f"task{'s' * (tasks > 1)}, one per attack and eps), each decided by McNemar's exact test (a bootstrap "
        f"test for graded metrics) {_adjustment(correction)}, at the 5% level."
    )
    return out
