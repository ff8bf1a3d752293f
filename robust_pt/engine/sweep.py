"""The per-batch eps loop: clean pass, perturb at each eps, one record per (example, eps).

Why: how a sweep reuses results depends only on two declarations, chosen once per run:
the threat model's `nested` (are its eps sets nested balls?) and the victim's `binary`
(right/wrong verdicts, or graded scores such as CIDEr):

* Survivors (nested, binary): only examples still standing are attacked at the next eps;
  an adversarial found at eps1 lies inside every larger ball, so its record is reused at
  every larger eps (the metric is non-increasing in eps by construction).
* WorstSoFar (nested, graded): every example at every eps; each keeps its worst
  (lowest-scoring) output over all eps so far, the clean one included.
* EveryLevel (not nested, e.g. corruption severities): every clean-correct example (every
  example, if graded) at every level, each level on its own.
* Targeted (a targeted attack, attacks/targeted.py): Survivors with "broken" meaning the
  target was produced; every example not wrong on the clean input is attacked (graded
  tasks too), and the records keep the task's verdict (`correct`) beside the target's.

Examples the victim already gets wrong are not robust and are not attacked.
"""

from __future__ import annotations

import time
from typing import Sequence

import torch

from ..models.predict import images_of


def _clean(rec: dict, fields: dict) -> dict:
    """The clean input as an output: the clean prediction, no perturbation, the threat model's defaults."""
    return {
        "pred": rec["clean_pred"],
        "score": rec["clean_score"],
        "linf": 0.0,
        "l2": 0.0,
        "broken": False,
        "broken_at": None,
        **fields,
    }


def _output(src: dict, fields: dict) -> dict:
    """The record fields of one output (prediction, score, perturbation size, the threat model's fields)."""
    return {
        "pred": src["pred"],
        "score": src["score"],
        "linf": src["linf"],
        "l2": src["l2"],
        **{k: src[k] for k in fields},
    }


class Survivors:
    def rows(self, n: int, clean_correct: list, found: list) -> list[int]:
        return [i for i in range(n) if clean_correct[i] and found[i] is None]

    def better(self, cand: dict, prev: dict) -> bool:
        return cand["broken"]

    def record(self, rec: dict, i: int, eps: float, new: dict, found: list, clean_correct: list, fields: dict) -> None:
        if not clean_correct[i]:  # not robust to begin with: not attacked
            rec.update(
                attacked=False,
                correct=False,
                steps=0,
                queries=None,
                broken_at=None,
                **_output(_clean(rec, fields), fields),
            )
        elif i in new:  # attacked at this eps
            cur = new[i]
            if cur["broken"]:
                found[i] = {**cur, "broken_at": eps}
            broken_at = eps if cur["broken"] else None
            rec.update(
                attacked=True,
                correct=cur.get("correct", not cur["broken"]),
                steps=cur["steps"],
                queries=cur["queries"],
                broken_at=broken_at,
                **_output(cur, fields),
            )
        else:  # broken at a smaller eps: that adversarial lies in this ball too
            adv = found[i]
            correct = adv.get("correct", False)
            rec.update(
                attacked=False,
                correct=correct,
                steps=0,
                queries=None,
                broken_at=adv["broken_at"],
                **_output(adv, fields),
            )

    def survivors(self, n: int, clean_correct: list, found: list) -> int:
        return sum(1 for i in range(n) if clean_correct[i] and found[i] is None)


class WorstSoFar:
    def rows(self, n, clean_correct, found):
        return list(range(n))

    def better(self, cand, prev):
        return cand["score"] < prev["score"]

    def record(self, rec, i, eps, new, found, clean_correct, fields):
        # the clean input lies in every ball: the worst output so far starts as the clean one
        cur = new[i]
        worst = found[i] or _clean(rec, fields)
        if cur["score"] < worst["score"]:
            worst = {**cur, "broken_at": eps}
        found[i] = worst
        broken_at = worst["broken_at"] if worst["broken"] else None
        rec.update(
            attacked=True,
            correct=None,
            steps=cur["steps"],
            queries=cur["queries"],
            broken_at=broken_at,
            **_output(worst, fields),
        )

    def survivors(self, n, clean_correct, found):
        return sum(1 for i in range(n) if found[i] is None or not found[i]["broken"])


class EveryLevel:
    def __init__(self, binary: bool):
        self.binary = binary

    def rows(self, n, clean_correct, found):
        return [i for i in range(n) if clean_correct[i] or not self.binary]

    def better(self, cand, prev):
        return cand["broken"] if self.binary else cand["score"] < prev["score"]

    def record(self, rec, i, eps, new, found, clean_correct, fields):
        if i not in new:  # not robust to begin with: not attacked
            Survivors().record(rec, i, eps, new, found, clean_correct, fields)
            return
        cur = new[i]
        found[i] = cur
        correct = (not cur["broken"]) if self.binary else None
        broken_at = eps if cur["broken"] else None
        rec.update(
            attacked=True,
            correct=correct,
            steps=cur["steps"],
            queries=cur["queries"],
            broken_at=broken_at,
            **_output(cur, fields),
        )

    def survivors(self, n, clean_correct, found):
        return sum(1 for i in range(n) if found[i] is not None and not found[i]["broken"])


class Targeted(Survivors):
    """Survivors for targeted attacks: broken = the target produced; only examples wrong on the clean input
    (False, not None: a graded verdict has no clean right or wrong) are left alone."""

    def rows(self, n, clean_correct, found):
        return [i for i in range(n) if clean_correct[i] is not False and found[i] is None]

    def record(self, rec, i, eps, new, found, clean_correct, fields):
        super().record(rec, i, eps, new, found, {i: clean_correct[i] is not False}, fields)

    def survivors(self, n, clean_correct, found):
        return sum(1 for i in range(n) if clean_correct[i] is not False and found[i] is None)


def choose(nested: bool, binary: bool, targeted: bool = False):
    """The sweep of a run, from its threat model's and its victim's declarations."""
    if targeted:
        return Targeted()
    if not nested:
        return EveryLevel(binary)
    return Survivors() if binary else WorstSoFar()


def _try(
    run, b: int, examples: Sequence, index: Sequence[int], x0: torch.Tensor, rows: list[int], eps: float, clean_scores
) -> dict[int, dict]:
    """Perturb these rows at eps, with restarts for the ones not yet broken: row -> the output in force."""
    victim, bound = run.victim, run.bound
    images = bound.threat.saves_samples  # the adversarial images are kept only to save samples of them
    new: dict[int, dict] = {}
    todo = rows
    for restart in range(bound.restarts):
        with torch.enable_grad():
            out = bound.perturb(b, [examples[i] for i in todo], [index[i] for i in todo], x0[todo], eps, restart)
        still = []
        for j, i in enumerate(todo):
            score, prev = float(out.scores[j]), new.get(i)
            broken = victim.broken(score, float(clean_scores[i]))
            cand = {
                "pred": victim.answer(out.preds[j]),
                "score": score,
                "linf": float(out.linf[j]),
                "l2": float(out.l2[j]),
                "steps": int(out.steps[j]) + (prev["steps"] if prev else 0),
                "queries": out.queries,
                "broken": broken if out.success is None else bool(out.success[j]),
                "_adv": out.adv[j] if images and out.adv is not None else None,
            }
            if out.success is not None:  # targeted: broken is the target's success, correct the task's verdict
                cand["correct"] = (not broken) if victim.binary else None
            if out.extra is not None:
                cand.update(out.extra[j])
            if prev is None or run.sweep.better(cand, prev):
                new[i] = cand
            else:
                prev["steps"] = cand["steps"]  # iterations spent over all restarts
            if not new[i]["broken"]:
                still.append(i)
        todo = still
        if not todo:
            break
    return new


def run_batch(
    run, b: int, index: list[int], examples: list, batch_of: list[int] | None = None
) -> tuple[list[dict], int]:
    """All records (every eps) of these examples, attacked together; also how many survive the largest eps.

    b: the (first) stored batch they belong to, which seeds the library attacks; index: each
    example's position in the task; batch_of: each example's stored batch (default: all b).
    `run` holds victim, bound (the threat model bound to it), sweep, eps, stats, the sample
    writer and the record defaults (early_stop, backend)."""
    victim, bound, sweep, st = run.victim, run.bound, run.sweep, run.stats
    n = len(examples)
    batch_of = batch_of or [b] * n
    x0 = images_of(examples, run.device)
    t0 = time.perf_counter()
    bound.start_batch()
    with torch.no_grad():
        clean_preds = bound.clean(x0, examples, index)
    clean_scores = victim.scores(examples, index, clean_preds)
    st["clean_seconds"] += time.perf_counter() - t0
    clean_correct = victim.clean_correct(clean_scores)
    fields = bound.record_fields
    found: list[dict | None] = [None] * n
    records: list[dict] = []
    t1 = time.perf_counter()
    for eps in run.eps:
        rows = sweep.rows(n, clean_correct, found)
        new = _try(run, b, examples, index, x0, rows, eps, clean_scores) if rows else {}
        st["examples_attacked"] = st.get("examples_attacked", 0) + len(rows)
        if new and bound.threat.saves_samples:
            run.save_samples(eps, examples, x0, new)
        for i, ex in enumerate(examples):
            rec = {
                "batch": batch_of[i],
                "index": index[i],
                "id": ex.id,
                "eps": eps,
                "clean_pred": victim.answer(clean_preds[i]),
                "clean_score": float(clean_scores[i]),
                "clean_correct": clean_correct[i],
                "early_stop": run.early_stop,
                "backend": run.backend,
            }
            if ex.qtype:
                rec["qtype"] = ex.qtype
            if not ex.image_decides:
                rec["image_decides"] = False
            sweep.record(rec, i, eps, new, found, clean_correct, fields)
            records.append(rec)
    st["attack_seconds"] += time.perf_counter() - t1
    return records, sweep.survivors(n, clean_correct, found)
