"""What a task is: a lazily generated or read sequence of examples plus its metric.

Every task, built-in or loaded from a real dataset, yields `Example`s with an image in
[0, 1] and an instruction text, and scores predictions with its own metric, so the
engine never needs to know which task it runs. How a kind scores lives with the kind
(tasks/kinds.py); the name constants here are the built-in kinds' names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np

CLOSED, GROUND, CAPTION = "closed", "ground", "caption"
MIXED = "mixed"  # a mix of the three (the ShapesWorld pretraining task); scored per Example.qtype


@dataclass(frozen=True)
class Example:
    """One example. `target` is the reference answer text the model is trained on."""

    id: str
    image: np.ndarray  # float32 (3, H, W) in [0, 1]
    text: str  # the instruction, e.g. "what color is the circle?"
    target: str  # closed: the answer; ground: "<bin_a> <bin_b> <bin_c> <bin_d>"; caption: a reference
    label: int = -1  # closed tasks: index of `target` in Task.answers
    refs: tuple[str, ...] = ()  # caption references (all of them)
    box: tuple[float, float, float, float] | None = None  # ground: x0, y0, x1, y1 in pixels
    qtype: str = ""  # question type, for per-type breakdowns (colour, count, ...)
    # False when the text alone decides the answer (ShapesWorld VE's "maybe" statements about
    # properties no image shows): no image perturbation should flip it, so the large-eps
    # gradient-masking check leaves these examples out
    image_decides: bool = True


@dataclass
class Task:
    """A sized, indexable, deterministic collection of examples and how to score them.

    kind: the name of a registered task kind (tasks/kinds.py), which scores the predictions:
    CLOSED (score = prediction == label over `answers`), GROUND (Acc@0.5 of the decoded
    box), CAPTION (CIDEr, BLEU-4 over the generated captions), or one of your own.
    """

    name: str
    kind: str
    split: str
    metric: str  # the headline metric name: "accuracy", "acc@0.5", "cider"
    answers: list[str] | None = None  # closed tasks: the candidate list
    image_size: int = 64
    seed: int = 0
    _examples: Sequence[Example] | None = field(default=None, repr=False)
    # set by load_task when no size was asked for: the same task at another image size, so that
    # evaluate() can give a task loaded without a size the model's size
    at_size: Callable[..., Task] | None = field(default=None, repr=False, compare=False)  # (size, resize mode)

    # Subclasses that generate lazily override these two.
    def __len__(self) -> int:
        assert self._examples is not None
        return len(self._examples)

    def __getitem__(self, i: int) -> Example:
        assert self._examples is not None
        return self._examples[i]

    def __iter__(self) -> Iterator[Example]:
        for i in range(len(self)):
            yield self[i]

    def example_scores(self, examples: Sequence[Example], predictions: Sequence) -> np.ndarray:
        """Per-example score in [0, 1], as the task's kind scores it (tasks/kinds.py; closed: int
        label predictions; ground/caption: text)."""
        from .kinds import get

        return get(self.kind).score(self, examples, predictions)

    def corpus_metrics(self, examples: Sequence[Example], predictions: Sequence) -> dict[str, float]:
        """Headline metrics over a set, plus the kind's corpus metrics (captioning: corpus BLEU-4)."""
        from .kinds import get

        scores = self.example_scores(examples, predictions)
        out = {self.metric: float(scores.mean()) if len(scores) else float("nan")}
        corpus = get(self.kind).corpus
        if corpus is not None:
            out.update(corpus(self, examples, predictions))
        return out
