"""Targeted attacks: make the victim produce a chosen answer, caption or box, not just a wrong one.

Why: "can an attacker make the tuned model say X?" is a different and often more relevant
threat than "can it be made wrong?". The preset key `target` (CLI --target, --target-text,
--target-box; recipe key `target:`) reads by what the task's kind aims at (TaskKind.target):

* "answer" (closed tasks and classifiers): an answer of the task, or `random` (per example, seeded by
  (seed, example id), never the true answer) or `least-likely` (the victim's lowest clean
  logit);
* "text" (captioning): the caption to make the model write (success: the generated caption equals
  it after normalising case and spaces; `target_cider`: CIDEr-D of the caption against the
  target alone, with the document frequencies of the run's references);
* "box" (grounding): a box "x0,y0,x1,y1" in pixels of the model's input (success: IoU >= 0.5
  between the predicted box and the target box).

The attack loops are the untargeted ones (our PGD and FGSM, image and embedding) on the
objective `Toward`: the target's loss (cross-entropy to the target answer, the target
sequence's NLL) descended instead of the truth's ascended; early stopping stops an example
once its logits give the target. Target success takes the place of "broken" in the sweep
(sweep.Targeted): an example is attacked at the next eps until the target is produced, and
a success at eps1 counts at every larger eps. Its robust metric stays the task's (right or
wrong against the truth), so a targeted run's untargeted success can be compared with the
untargeted attack's (report/sanity.py). Examples whose true answer is the fixed target are
not attacked (their target is None). Library backends pick their own targets (torchattacks'
APGD-T its top-k classes), so a given target runs with the ours backend only.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np

from ..errors import AttackError
from . import methods

SPECIAL = ("random", "least-likely")
FIELDS = {"target": None, "target_success": False, "target_cider": None}


def check_spec(spec) -> None:
    """Refuse, with one line, a preset that asks for a target it cannot aim at."""
    if not spec.target:
        return
    m = methods.get(spec.kind, spec.method)
    if m is None or not m.aims or spec.backend != "ours":
        aiming = sorted({f"{a.kind} {a.name}" for a in methods._methods.values() if a.aims})
        raise AttackError(
            f"attack {spec.name} ({spec.kind} {spec.method}, {spec.backend}) cannot take a target: targeted "
            f"attacks are {', '.join(aiming)} with the ours backend (e.g. --attack pgd --target red)"
        )


def check_task(spec, task) -> None:
    """Refuse a target the task cannot produce (an answer it does not have, a malformed box)."""
    if not spec.target:
        return
    form = _form(task)
    if form is None:
        raise AttackError(f"the {task.kind} task {task.name} takes no target; leave out --target")
    if form == "answer":
        if spec.target not in SPECIAL and spec.target not in task.answers:
            shown = ", ".join(list(task.answers)[:8])
            raise AttackError(
                f"target {spec.target!r} is not an answer of task {task.name} ({shown}, ...); give one of its "
                f"answers, random or least-likely"
            )
    elif form == "box":
        parse_box(spec.target, task.image_size)
    elif spec.target in SPECIAL:
        raise AttackError(f"{spec.target} targets pick answers of closed tasks; give the caption to aim at")


def _form(task) -> str | None:
    """What a target is on this task: "answer", "box" or "text" (its kind's declaration), None: no target."""
    from ..tasks.kinds import kind_of

    return kind_of(task).target


def parse_box(text: str, size: int) -> tuple[float, float, float, float]:
    try:
        box = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        box = ()
    if len(box) != 4 or not (0 <= box[0] < box[2] <= size and 0 <= box[1] < box[3] <= size):
        raise AttackError(
            f"target box {text!r} must be x0,y0,x1,y1 in pixels with 0 <= x0 < x1 <= {size} and 0 <= y0 < y1 <= {size}"
        )
    return box  # type: ignore[return-value]


def _normal(text: str) -> str:
    return " ".join(str(text).lower().split())


class Toward:
    """An objective turned toward its labels: the loss is negated (descended), and an example is done
    (early stopping) once its logits give its label, the target."""

    def __init__(self, inner):
        self.inner = inner
        self.labels = inner.labels

    def loss(self, xs, rows):
        loss, logits = self.inner.loss(xs, rows)
        return -loss, logits

    def logits(self, xs, rows):
        return self.inner.logits(xs, rows)

    def reached(self, logits, rows):
        return logits.argmax(-1) == self.labels[rows]


class Targeting:
    """One run's targets: chosen per example (and kept), the objectives toward them, their success."""

    def __init__(self, spec, seed: int):
        self.spec, self.seed = spec, seed
        self.chosen: dict[str, object] = {}  # example id -> target (answer index, caption or box text)

    # -- choosing
    def targets(self, victim, examples: Sequence, x0) -> list:
        """Each example's target: an answer index (closed), the caption or box text (generative); None when
        the fixed target is the example's own answer (nothing to attack)."""
        todo = [i for i, ex in enumerate(examples) if ex.id not in self.chosen]
        if todo:
            for i, t in zip(todo, self._choose(victim, [examples[i] for i in todo], x0[todo])):
                self.chosen[examples[i].id] = t
        return [self.chosen[ex.id] for ex in examples]

    def _choose(self, victim, examples, x0) -> list:
        t = self.spec.target
        if not victim.has_logits:
            return [t] * len(examples)
        answers = list(victim.task.answers)
        if t == "random":
            from .seeds import derive_seed

            out = []
            for ex in examples:
                rng = np.random.default_rng(derive_seed(self.seed, ex.id, "target"))
                others = [k for k in range(len(answers)) if k != ex.label]
                out.append(int(others[rng.integers(len(others))]))
            return out
        if t == "least-likely":
            import torch

            with torch.no_grad():
                rows = torch.arange(len(examples), device=x0.device)
                logits = victim.image_objective(examples).logits([x0], rows)
            victim.stats["fwd_evals"] += len(examples)
            return [int(k) for k in logits.argmin(-1).tolist()]
        k = answers.index(t)
        return [None if ex.label == k else k for ex in examples]

    def text(self, victim, target) -> str | None:
        """A target as the records write it (the answer's text)."""
        if target is None:
            return None
        return victim.task.answers[int(target)] if victim.has_logits else str(target)

    # -- objectives
    def aimed(self, task, examples, targets: list) -> list:
        """The examples re-labelled with their targets (an example without one keeps its own answer):
        the answer index, the caption, or the box as the model writes it (location tokens)."""
        from ..tasks.metrics import box_to_tokens

        out = []
        for ex, t in zip(examples, targets):
            if t is None:
                out.append(ex)
            elif isinstance(t, int):
                out.append(replace(ex, label=t))
            elif _form(task) == "box":
                out.append(replace(ex, target=box_to_tokens(parse_box(t, task.image_size), task.image_size)))
            else:
                out.append(replace(ex, target=t))
        return out

    def image_objective(self, victim, examples, targets: list):
        return Toward(victim.image_objective(self.aimed(victim.task, examples, targets)))

    def embeds_objective(self, victim, examples, e0, targets: list):
        return Toward(victim.embeds_objective(self.aimed(victim.task, examples, targets), e0))

    # -- success
    def judge(self, victim, examples, preds: list, targets: list) -> tuple[np.ndarray, list[dict]]:
        """(success per row, the record fields per row)."""
        form = "answer" if victim.has_logits else _form(victim.task)
        ok = []
        for ex, p, t in zip(examples, preds, targets):
            if t is None:
                ok.append(False)
            elif form == "answer":
                ok.append(int(p) == int(t))
            elif form == "box":
                box = parse_box(t, victim.task.image_size)
                ok.append(bool(victim.task.example_scores([replace(ex, box=box)], [p])[0] >= 0.5))
            else:
                ok.append(_normal(p) == _normal(t))
        cider = self._cider(victim, preds, targets) if form == "text" else [None] * len(preds)
        fields = [
            {"target": self.text(victim, t), "target_success": bool(s), "target_cider": c}
            for t, s, c in zip(targets, ok, cider)
        ]
        return np.asarray(ok, dtype=bool), fields

    def _cider(self, victim, preds, targets) -> list:
        """CIDEr-D of each caption against its target alone, idf from all the run's references (so a
        row's value does not depend on which rows are judged with it)."""
        from ..tasks.metrics import cider_per_example

        scores = cider_per_example([[str(t)] for t in targets], list(preds), df_refs=victim.refs_all)
        return [float(x) for x in scores]
