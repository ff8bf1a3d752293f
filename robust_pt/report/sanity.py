"""Sanity checks for gradient masking, run on every report.

Each (task, model) gets five checks, each `pass`, `fail` or `not checked` with the reason:

monotone     the robust metric is non-increasing in eps (within each run whose threat model
             declares nested eps sets; severities and other non-nested levels are not judged);
huge-eps     at the very large eps its threat model declares (huge_eps: L-inf pixel eps >=
             64/255, L2 pixel eps >= a quarter of sqrt(pixels), embedding eps >= 1 RMS) the
             attack breaks nearly everything: relative drop >= 90%; attacks that leave the
             text alone (image_only) are judged on the examples whose answer the image
             decides (records with image_decides false, e.g. ShapesWorld VE's "maybe"
             statements, are left out and counted in the detail);
more-steps   an attack with more steps is never weaker than the same attack with fewer
             (methods in the "steps" role: PGD; same kind, norm, eps);
black-box    an attack in the "black-box" role (square) is never stronger than the strongest
             in the "white-box" role (pgd, apgd) of the same kind and norm at the same eps;
fgsm-vs-pgd  a "one-step" attack (FGSM) is never stronger than the strongest "steps" attack
             (PGD) of the same kind and norm;

Which run plays which part comes from what the run declares (run.json's `declares`, read by
load.py; attacks/declarations.py): never from an attack's or a method's name.
targeted     (only for models with targeted runs) a targeted attack's untargeted success is
             never above the untargeted attack's of the same preset (it leaves no less
             robust metric), else the untargeted attack is not finding what it should;
transfer     (only for models with transfer runs) an attack crafted on another model is never
             stronger than the same attack crafted on the target itself (or its white-box
             run): stronger would mean the target's own gradients mislead (masking).

Tolerance rule (so that sampling noise never fails a check): a check fails only when the
95% paired-bootstrap CI of the violating difference lies entirely on the violating side of
0 (e.g. robust(more steps) - robust(fewer steps) has CI lower bound > 0); for huge-eps,
when the upper bound of the 95% CI of the relative drop is below 90%. A violation inside
the CI passes, and the detail says so.
"""

from __future__ import annotations

import math

import numpy as np

from . import stats
from .load import RunData, eps_label, per_eps
from .tables import common_eps, paired, run_matrix

CHECKS = (
    ("monotone", "robust metric non-increasing in eps"),
    ("huge-eps", "attack succeeds at a very large eps"),
    ("more-steps", "more PGD steps never weaker"),
    ("black-box", "black-box never stronger than white-box"),
    ("fgsm-vs-pgd", "FGSM never stronger than PGD"),
)
TRANSFER_CHECK = ("transfer", "transfer never stronger than white-box")
TARGETED_CHECK = ("targeted", "targeted never more successful (untargeted) than untargeted")
PASS, FAIL, NOT_CHECKED = "pass", "fail", "not checked"
HUGE_LINF = 64 / 255
HUGE_RMS = 1.0
NEARLY_ALL = 0.90
RULE = (
    "A check fails only when the violation exceeds sampling noise: the 95% paired-bootstrap CI of the "
    "violating difference lies entirely on the violating side of 0; the large-eps check fails when the upper "
    f"bound of the 95% CI of the relative drop is below {NEARLY_ALL:.0%}. Violations within the CI pass, "
    "with the violation noted."
)


def _pts(x: float) -> str:
    return f"{100 * x:+.1f}" if math.isfinite(x) else "n/a"


def _lab(run: RunData, e: float) -> str:
    return run.eps_label(e)


def _row(check: str, task: str, model: str, method: str, status: str, detail: str) -> dict:
    title = dict(CHECKS + (TRANSFER_CHECK, TARGETED_CHECK))[check]
    return {
        "check": check,
        "description": title,
        "task": task,
        "model": model,
        "method": method,
        "status": status,
        "detail": detail,
    }


def _diff(worse: RunData, better: RunData, e: float, B: int, seed: int) -> tuple[float, float, float, int]:
    """robust(worse) - robust(better) on paired examples at eps: (diff, lo, hi, n)."""
    ids, dw, db = paired(worse, better, e)
    if not ids:
        return math.nan, math.nan, math.nan, 0
    d, lo, hi = stats.paired_diff_ci(dw["score"].to_numpy(float), db["score"].to_numpy(float), B, seed)
    return d, lo, hi, len(ids)


def _robust(run: RunData, e: float) -> float:
    d = per_eps(run, e)
    return float(d["score"].mean()) if len(d) else math.nan


# ----------------------------------------------------------------------------- the checks


def check_monotone(runs: list[RunData], B: int, seed: int) -> tuple[str, str]:
    swept = [r for r in runs if len(r.eps) >= 2 and r.nested]
    if not swept and any(len(r.eps) >= 2 for r in runs):
        return NOT_CHECKED, "no run sweeps nested eps (its threat model declares nested: false)"
    if not swept:
        return NOT_CHECKED, ("every run has a single eps; sweep several (e.g. --eps 1/255,2/255,4/255,8/255)")
    fails, notes, steps = [], [], 0
    for r in swept:
        _, clean, scores = run_matrix(r)
        reps = stats.bootstrap_means(scores, B, seed)
        for j in range(len(r.eps) - 1):
            a, b = scores[:, j], scores[:, j + 1]
            ok = np.isfinite(a) & np.isfinite(b)
            if not ok.any():
                continue
            steps += 1
            d = float(b[ok].mean() - a[ok].mean())
            if d <= 1e-12:
                continue
            lo, hi = stats.percentile_ci(reps[:, j + 1] - reps[:, j])
            txt = (
                f"{r.attack} {_lab(r, r.eps[j])} -> {_lab(r, r.eps[j + 1])}: {_pts(d)} points "
                f"(95% CI {_pts(lo)} to {_pts(hi)})"
            )
            (fails if lo > 0 else notes).append(txt)
    if not steps:
        return NOT_CHECKED, "no two eps of a run share examples"
    if fails:
        return FAIL, "robust metric rises with eps beyond noise: " + "; ".join(fails)
    if notes:
        return PASS, f"{steps} eps steps in {len(swept)} run(s); rises within noise: " + "; ".join(notes)
    return PASS, f"non-increasing over {steps} eps step(s) in {len(swept)} run(s)"


def huge_threshold(run: RunData) -> float | None:
    """The very large eps its threat model declares for the run's norm and unit (None: not checked)."""
    t = run.declares.get("huge_eps")
    return float(t) if isinstance(t, (int, float)) else None


def check_huge(runs: list[RunData], B: int, seed: int) -> tuple[str, str]:
    cands = []
    for r in runs:
        t = huge_threshold(r)
        if t is not None and r.eps and max(r.eps) >= t - 1e-12:
            cands.append(r)
    if not cands:
        return NOT_CHECKED, (
            f"no run reaches a very large eps (L-inf >= {eps_label(HUGE_LINF)}, embedding >= "
            f"{HUGE_RMS:g} RMS); add one, e.g. --eps 1/255,2/255,4/255,8/255,128/255"
        )
    fails, passes = [], []
    for r in cands:
        e = max(r.eps)
        d, left_out = _image_decided(r, per_eps(r, e))
        c, s = d["clean_score"].to_numpy(float), d["score"].to_numpy(float)
        if not len(d) or not np.nanmean(c) > 0:
            passes.append(f"{r.attack} {_lab(r, e)}: clean metric is 0, nothing to break")
            continue
        reps = stats.bootstrap_means(np.column_stack([c, s]), B, seed)
        with np.errstate(invalid="ignore", divide="ignore"):
            lo, hi = stats.percentile_ci(1 - reps[:, 1] / reps[:, 0])
        rd = stats.rel_drop(float(np.nanmean(c)), float(np.nanmean(s)))
        txt = f"{r.attack} eps={_lab(r, e)}: relative drop {100 * rd:.1f}% (95% CI {100 * lo:.1f} to {100 * hi:.1f})"
        if left_out:
            txt += f" on the {len(d)} examples the image decides ({left_out} decided by the text alone left out)"
        (fails if hi < NEARLY_ALL else passes).append(txt)
    if fails:
        return FAIL, (
            f"attack does not break nearly everything (>= {NEARLY_ALL:.0%}) at a very large eps, a sign "
            f"of gradient masking: " + "; ".join(fails)
        )
    return PASS, "; ".join(passes)


def _image_decided(run: RunData, d):
    """The records of an attack that leaves the text alone without the examples the text alone decides, and how
    many were left out.

    No image perturbation should flip an answer the text fixes, so counting those examples
    would make a sound attack look like gradient masking; threat models that also move the
    text (embedding attacks) declare image_only false and keep every example."""
    if not run.declares.get("image_only") or "image_decides" not in d.columns:
        return d, 0
    keep = d["image_decides"].map(lambda v: v is not False).to_numpy(bool)
    return d[keep], int((~keep).sum())


def _by(runs, role: str):
    """The runs whose attack method declares this gradient-masking role (attacks/declarations.py)."""
    return [r for r in runs if role in r.roles]


def _excesses(comparisons, B: int, seed: int, say) -> tuple[list[str], list[str], int]:
    """Each (worse, better, eps) of `comparisons` compared on their shared examples, where the attack of `worse`
    should leave no more robust accuracy: (fails, notes, n). n counts the comparisons with shared examples; each
    where `worse` leaves more is worded by say(worse, better, eps, excess) and its 95% CI, and is a fail when
    the CI excludes 0, else a note (within noise)."""
    fails, notes, n = [], [], 0
    for worse, better, e in comparisons:
        d, lo, hi, k = _diff(worse, better, e, B, seed)
        if not k:
            continue
        n += 1
        if d > 1e-12:
            txt = f"{say(worse, better, e, d)} (95% CI {100 * lo:.1f} to {100 * hi:.1f})"
            (fails if lo > 0 else notes).append(txt)
    return fails, notes, n


def _decide(comparisons, B: int, seed: int, say, unchecked: str, failing: str, noted: str = "within noise"):
    """A check's (status, detail) from its comparisons (_excesses): not checked (`unchecked` says why) when
    none share examples, a fail (`failing` and the fails) beyond noise, else a pass with the notes."""
    fails, notes, n = _excesses(comparisons, B, seed, say)
    if not n:
        return NOT_CHECKED, unchecked
    if fails:
        return FAIL, failing + "; ".join(fails)
    return PASS, f"{n} comparison(s)" + (f"; {noted}: " + "; ".join(notes) if notes else "")


def check_more_steps(runs: list[RunData], B: int, seed: int) -> tuple[str, str]:
    pgd = _by(runs, "steps")
    pairs = []
    for a in pgd:
        for b in pgd:
            sa, sb = a.attack_spec.get("steps"), b.attack_spec.get("steps")
            if (
                isinstance(sa, (int, float))
                and isinstance(sb, (int, float))
                and sa < sb
                and (a.attack_kind, a.norm, a.eps_unit) == (b.attack_kind, b.norm, b.eps_unit)
                and common_eps(a, b)
            ):
                pairs.append((a, b))
    if not pairs:
        steps = sorted({str(r.attack_spec.get("steps")) for r in pgd})
        why = f"only one PGD step count ({', '.join(steps)}) per norm" if pgd else "no PGD run"
        return NOT_CHECKED, f"{why}; add a PGD run with more steps at the same eps (e.g. --attack pgd --steps 50)"

    def say(many: RunData, few: RunData, e: float, d: float) -> str:
        return (
            f"at eps={_lab(few, e)} {many.attack} leaves {100 * _robust(many, e):.1f}, {few.attack} "
            f"{100 * _robust(few, e):.1f}: more steps weaker by {100 * d:.1f} points"
        )

    more_vs_fewer = ((many, few, e) for few, many in pairs for e in common_eps(few, many))
    unchecked = "the PGD runs with different steps share no examples"
    return _decide(more_vs_fewer, B, seed, say, unchecked, "more PGD steps are weaker beyond noise: ")


def _strongest(whites: list[RunData], other: RunData, e: float) -> RunData | None:
    cands = [
        w
        for w in whites
        if any(abs(e - f) <= 1e-12 for f in w.eps)
        and (w.attack_kind, w.norm, w.eps_unit) == (other.attack_kind, other.norm, other.eps_unit)
    ]
    if not cands:
        return None
    return min(cands, key=lambda w: (_robust(w, e), w.attack))


def _weaker_than(
    attackers: list[RunData], whites: list[RunData], what: str, B: int, seed: int, hint: str
) -> tuple[str, str]:
    def say(w: RunData, r: RunData, e: float, d: float) -> str:
        return (
            f"at eps={_lab(r, e)} {r.attack} leaves {100 * _robust(r, e):.1f}, {w.attack} "
            f"{100 * _robust(w, e):.1f}: {r.attack} stronger by {100 * d:.1f} points"
        )

    against_pgd = ((w, r, e) for r in attackers for e in r.eps if (w := _strongest(whites, r, e)) is not None)
    failing = f"{what} is stronger than white-box PGD beyond noise (gradient masking?): "
    return _decide(against_pgd, B, seed, say, hint, failing, "stronger within noise")


def check_black_box(runs: list[RunData], B: int, seed: int) -> tuple[str, str]:
    bb = _by(runs, "black-box")
    wb = _by(runs, "white-box")
    hint = (
        "needs a black-box run (e.g. --attack square) and a PGD run at the same eps and norm"
        if not bb or not wb
        else "the black-box and PGD runs share no eps and norm"
    )
    return _weaker_than(bb, wb, "the black-box attack", B, seed, hint)


def check_fgsm(runs: list[RunData], B: int, seed: int) -> tuple[str, str]:
    fg = _by(runs, "one-step")
    wb = _by(runs, "steps")
    hint = (
        "needs an FGSM run and a PGD run at the same eps and norm (e.g. --attack fgsm and --attack pgd)"
        if not fg or not wb
        else "the FGSM and PGD runs share no eps, kind and norm"
    )
    return _weaker_than(fg, wb, "FGSM", B, seed, hint)


FUNCS = {
    "monotone": check_monotone,
    "huge-eps": check_huge,
    "more-steps": check_more_steps,
    "black-box": check_black_box,
    "fgsm-vs-pgd": check_fgsm,
}


def check_transfer(runs: list[RunData], B: int, seed: int) -> tuple[str, str]:
    """Transfer runs of one (task, model) against its own attack of the same preset (transfer.white_box_run)."""
    from .transfer import white_box_run

    pairs = [(w, r) for r in runs if r.source and (w := white_box_run(r, runs)) is not None and w is not r]

    def say(w: RunData, r: RunData, e: float, d: float) -> str:
        return (
            f"at eps={_lab(r, e)} {r.attack} leaves {100 * _robust(r, e):.1f}, the target's own "
            f"{w.attack} {100 * _robust(w, e):.1f}: transfer stronger by {100 * d:.1f} points"
        )

    comparisons = ((w, r, e) for w, r in pairs for e in common_eps(r, w))
    unchecked = "needs the same attack crafted on the target itself (surrogate = target) or a white-box run"
    failing = "a transfer attack is stronger than the white-box one beyond noise (gradient masking?): "
    return _decide(comparisons, B, seed, say, unchecked, failing, "stronger within noise")


def check_targeted(runs: list[RunData], B: int, seed: int) -> tuple[str, str]:
    """Targeted runs of one (task, model) against the untargeted white-box runs of the same preset."""
    from .transfer import same_attack

    plain = [r for r in runs if not r.source and not r.target]
    pairs = [(u, t) for t in runs if t.target and not t.source for u in plain if same_attack(u, t)]

    def say(u: RunData, t: RunData, e: float, d: float) -> str:
        return (
            f"at eps={_lab(t, e)} {t.attack} leaves {100 * _robust(t, e):.1f}, the untargeted {u.attack} "
            f"{100 * _robust(u, e):.1f}: the targeted attack more often wrong by {100 * d:.1f} points"
        )

    comparisons = ((u, t, e) for u, t in pairs for e in common_eps(t, u))
    unchecked = "needs the untargeted run of the same preset at the same eps"
    failing = "a targeted attack fools the model more often than the untargeted one beyond noise: "
    return _decide(comparisons, B, seed, say, unchecked, failing)


def run_checks(runs: list[RunData], B: int = stats.DEFAULT_B, seed: int = stats.DEFAULT_SEED) -> list[dict]:
    """One row per (task, model, check). Natural corruptions are not attacks (their severities need not
    be monotone and no gradient is involved): they take no part in the gradient-masking checks. Transfer
    runs take part in the transfer check only (a row only for models that have them)."""
    runs = [r for r in runs if not r.corruption]
    out = []
    keys = []
    for r in runs:
        if (r.task, r.model) not in keys:
            keys.append((r.task, r.model))
    for task, model in keys:
        everything = [r for r in runs if r.task == task and r.model == model]
        group = [r for r in everything if not r.source and not r.target]
        for check, _ in CHECKS if group else ():
            status, detail = FUNCS[check](group, B, seed)
            out.append(_row(check, task, model, group[0].method, status, detail))
        for (name, _), func, has in (
            (TARGETED_CHECK, check_targeted, lambda r: r.target and not r.source),
            (TRANSFER_CHECK, check_transfer, lambda r: r.source),
        ):
            if any(has(r) for r in everything):
                status, detail = func(everything, B, seed)
                out.append(_row(name, task, model, everything[0].method, status, detail))
    return out
