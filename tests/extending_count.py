"""The worked example of docs/extending.md: a task kind in one file.

Counting with partial credit: the right count scores 1, a count one off 0.5, anything
else 0. A score between 0 and 1 is a graded verdict, so an attack on it does not "break"
an example but lowers its score, and the engine keeps each example's worst score so far
(as for captions' CIDEr). The answers are closed (the counts are candidates), so the
closed-answer victim judges it and logit attacks run on it. Nothing else changes: the
victim, the engine, the report and the gate read the kind's declarations.
"""

from __future__ import annotations

import numpy as np

from robust_pt.tasks.kinds import TaskKind, register

COUNTS = ("zero", "one", "two", "three", "four")


def near_count(task, examples, predictions) -> np.ndarray:
    """1 for the right count, 0.5 for one off, else 0 (predictions: indices into task.answers)."""
    out = []
    for ex, p in zip(examples, predictions):
        guess, truth = task.answers[int(p)], ex.target
        off = abs(COUNTS.index(guess) - COUNTS.index(truth)) if guess in COUNTS and truth in COUNTS else 2
        out.append(max(0.0, 1.0 - off / 2))
    return np.array(out)


NEAR_COUNT = register(  # the one registration
    TaskKind(
        "near-count",
        verdict="graded",  # a score, not right/wrong: the worst score so far counts
        metric="near-count",
        score=near_count,
        victim="closed",  # judged by the logits over the candidate answers
        candidates=True,
        text_label="Question",
    )
)
