"""Task kinds, registered by name with what they declare, so that nobody branches on a kind's name.

Why: a task's kind decides how a prediction is scored, whether the verdict is right/wrong
(binary) or graded (CIDEr), whether there are candidate answers to take logits over,
whether an attack may stop at the first wrong answer, which victim judges it
(attacks/victim.py) and what its instruction text is called in reports. Those used to
be `if kind == ...` branches in five modules; now a kind is one `TaskKind` and one
`register(...)`, and the victim, the engine's summaries and the report ask it.
`Task.kind` stays the kind's name (a string: run.json and the committed reports store it).

    from robust_pt.tasks.kinds import TaskKind, register
    register(TaskKind("near-count", verdict="graded", metric="near-count", score=near_count,
                      victim="closed", candidates=True))

The built-in kinds (closed, ground, caption) are registered here; the ShapesWorld
pretraining mix (`mixed`) registers itself in tasks/shapes_tasks.py. A named task
(tasks/named.py) or dataset format (tasks/formats/) may name its text otherwise (a VE
"Hypothesis" is a closed task, like a VQA "Question"): registering it records that here.
`declarations(task)` is what a run writes into run.json, and what the report reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import TaskError

#: (task, examples, predictions) -> per-example scores in [0, 1]
Scorer = Callable[[Any, Sequence[Any], Sequence[Any]], np.ndarray]
VERDICTS = ("binary", "graded")
#: who judges a kind's tasks (attacks/victim.py): logits over the candidate answers, or generated text
VICTIMS = ("closed", "generative")


@dataclass(frozen=True)
class TaskKind:
    """What a kind of task declares.

    verdict: "binary" (each example right or wrong: an attack breaks it) or "graded" (a
      score such as CIDEr: an attack lowers it; the worst so far counts).
    metric: the headline metric's name when a task does not name its own.
    score: how predictions are scored, (task, examples, predictions) -> per-example scores.
    victim: who judges it on a vision-language model: "closed" (logits over `Task.answers`),
      "generative" (generated text), or None (it cannot be attacked, e.g. a training mix).
    candidates: its tasks have closed answers (`Task.answers`), so attacks that need logits
      over candidates can run on them.
    early_stop: an attack may stop at the first wrong answer it sees (needs a binary verdict
      and candidates the attack sees logits over).
    text_label: what the instruction text is called in reports (a task may say otherwise).
    corpus: extra corpus-level metrics, (task, examples, predictions) -> {name: value}
      (captions: BLEU-4); the run summary reports each as NAME_clean and NAME_robust.
    run_scorer: for graded verdicts that depend on the whole run (CIDEr-D's document
      frequencies come from all the run's references): task -> a RunScorer; None: `score`.
    gen_len: how many tokens a generative victim generates for an answer (a box: 5).
    target: what a targeted attack (attacks/targeted.py) aims at on it: "answer" (one of its candidate
      answers), "box" (a box x0,y0,x1,y1 in pixels), "text" (a text to generate), or None (no target).
    needs: (model attribute, what it means) a model must have (true) to serve its tasks, e.g.
      ("fills_class_prompts", "a dual encoder ..."): zero-shot classification needs a text encoder
      that reads class names in prompts; None: every model.
    open_classes: a model tuned on one of its tasks may be evaluated on another of them (new classes:
      the zero-shot protocol), not only on the task it was tuned on.
    """

    name: str
    verdict: str
    metric: str
    score: Scorer
    victim: str | None = None
    candidates: bool = False
    early_stop: bool = False
    text_label: str = "Text"
    corpus: Callable[[Any, Sequence[Any], Sequence[Any]], dict] | None = None
    run_scorer: Callable[[Any], "RunScorer"] | None = None
    gen_len: int = 24
    target: str | None = None
    needs: tuple[str, str] | None = None
    open_classes: bool = False

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise TaskError(
                f"task kind {self.name}: verdict must be one of {', '.join(VERDICTS)}, got {self.verdict!r}"
            )
        if self.victim is not None and self.victim not in VICTIMS:
            raise TaskError(f"task kind {self.name}: victim must be one of {', '.join(VICTIMS)} or None")
        if self.early_stop and self.verdict != "binary":
            raise TaskError(f"task kind {self.name}: early stopping needs a binary verdict")
        if self.victim == "closed" and not self.candidates:
            raise TaskError(f"task kind {self.name}: a closed-answer victim needs candidates=True")

    def refuses(self, model) -> str | None:
        """Why `model` cannot serve this kind's tasks (one line), or None when it can."""
        if self.needs is None or getattr(model, self.needs[0], False):
            return None
        arch = getattr(model, "architecture", None) or type(model).__name__
        return f"{self.name} tasks need {self.needs[1]}; {arch} is not one"

    @property
    def binary(self) -> bool:
        return self.verdict == "binary"

    def scorer(self, task) -> "RunScorer":
        """How a victim scores predictions of rows `index` of this run's task."""
        if self.run_scorer is not None:
            return self.run_scorer(task)
        return RunScorer(task)


class RunScorer:
    """Scores of predictions for some rows of a run (default: the task's own per-example scores)."""

    refs: list | None = None  # every reference of the run, where the scores use them (CIDEr-D)

    def __init__(self, task):
        self.task = task

    def __call__(self, examples: Sequence[Any], index: Sequence[int], preds: Sequence[Any]) -> np.ndarray:
        return np.asarray(self.task.example_scores(examples, preds), dtype=float)


_kinds: dict[str, TaskKind] = {}


def register(kind: TaskKind) -> TaskKind:
    """Add (or replace) a task kind; returns it."""
    _kinds[kind.name] = kind
    return kind


def get(name: str) -> TaskKind:
    """The registered kind called `name` (unknown: one line naming the known ones)."""
    if name not in _kinds:
        raise TaskError(f"unknown task kind {name!r}; registered kinds: {', '.join(_kinds)}")
    return _kinds[name]


def refusal(model, task) -> str | None:
    """Why `model` cannot serve `task` (one line), or None: the kinds the model says it serves (Hugging Face
    families, the built-in CLIP), then what the task's kind needs of a model."""
    kinds = getattr(model, "task_kinds", None)
    if kinds is not None and task.kind not in kinds:
        arch = getattr(model, "architecture", None) or model.display_name
        return f"{arch} cannot serve the {task.kind} task {task.name}; it serves {', '.join(kinds)} tasks"
    return kind_of(task).refuses(model)


def names() -> tuple[str, ...]:
    return tuple(_kinds)


def kind_of(task) -> TaskKind:
    return get(task.kind)


_text_labels: dict[str, str] = {}  # task name -> its text label, where it differs from its kind's


def label_text(task_name: str, label: str) -> None:
    """Record what the instruction text of the tasks called `task_name` is called (named tasks and formats)."""
    if label:
        _text_labels[task_name] = label


def text_label(task) -> str:
    """What the task's instruction text is called: the task's own label, its name's, else its kind's."""
    return getattr(task, "text_label", None) or _text_labels.get(task.name) or kind_of(task).text_label


def declarations(task) -> dict:
    """What a task declares, as run.json records it (kind, verdict, metric, candidates: how many or None,
    early stopping, victim, text label); the report reads these instead of recognising a task by name."""
    k = kind_of(task)
    return {
        "kind": k.name,
        "verdict": k.verdict,
        "metric": task.metric,
        "candidates": len(task.answers) if k.candidates and task.answers is not None else None,
        "early_stop": k.early_stop,
        "victim": k.victim,
        "text_label": text_label(task),
    }


# ----------------------------------------------------------------------------- the built-in kinds


def _closed(task, examples, predictions) -> np.ndarray:
    """1 when the predicted candidate index is the example's label."""
    return np.array([float(int(p) == ex.label) for ex, p in zip(examples, predictions)])


def _ground(task, examples, predictions) -> np.ndarray:
    """Acc@0.5: the decoded box's IoU with the reference box is at least 0.5."""
    from .metrics import box_iou, tokens_to_box

    return np.array(
        [float(box_iou(tokens_to_box(p, task.image_size), ex.box) >= 0.5) for ex, p in zip(examples, predictions)]
    )


def _caption(task, examples, predictions) -> np.ndarray:
    """CIDEr-D per example (document frequencies from `examples`' references)."""
    from .metrics import cider_per_example

    return cider_per_example([list(ex.refs) for ex in examples], list(predictions))


def _caption_corpus(task, examples, predictions) -> dict:
    from .metrics import bleu4

    return {"bleu4": bleu4([list(ex.refs) for ex in examples], list(predictions))}


class CorpusCIDEr(RunScorer):
    """Captions judged by CIDEr-D with document frequencies from all the run's references, so a
    row's score does not depend on which rows are judged with it."""

    def __init__(self, task):
        super().__init__(task)
        self.refs = [list(task[i].refs) for i in range(len(task))]

    def __call__(self, examples, index, preds):
        from .metrics import cider_per_example

        hyps = [""] * len(self.refs)
        for i, p in zip(index, preds):
            hyps[i] = p
        return cider_per_example(self.refs, hyps)[list(index)]


register(
    TaskKind(
        "closed",
        "binary",
        "accuracy",
        _closed,
        victim="closed",
        candidates=True,
        early_stop=True,
        text_label="Question",
        target="answer",
    )
)
register(
    TaskKind(
        "ground", "binary", "acc@0.5", _ground, victim="generative", text_label="Expression", gen_len=5, target="box"
    )
)
register(
    TaskKind(
        "caption",
        "graded",
        "cider",
        _caption,
        victim="generative",
        text_label="Prompt",
        corpus=_caption_corpus,
        run_scorer=CorpusCIDEr,
        target="text",
    )
)
