"""Zero-shot classification: the task kind of CLIP-style evaluation, and its ShapesWorld class sets.

Why: prompt learning on CLIP (CoOp, VPT, MaPLe) and nearly all adversarial prompt tuning
work is measured by one protocol: tune on some classes, then score clean and robust
accuracy on those and zero-shot on held-out classes. A classification task is a list of
class names and a prompt template ("a picture of a {}"); a dual encoder's logits are its
temperature times the cosine between the image and the template with each class name
written in (models/miniclip.py), so every image attack, transfer, targeted attack and
corruption applies as to any closed-answer task. The kind declares that a model must
read class names in prompts (a dual encoder), and that a model tuned on one class set
may be evaluated on another (base-to-novel, CoCoOp's protocol).

ShapesWorld class sets (scenes from the generator in tasks/shapes.py):
  shapes-objects         one object per scene; 15 classes "red circle" ... "purple triangle"
  shapes-objects-base    the 8 classes whose colour and shape indices sum to an even number
  shapes-objects-novel   the other 7: every colour and every shape is in both halves, so a
                         novel class is a new combination of words the base classes teach
  shapes-counting        1-4 objects; classes "one object" ... "four objects"
  shapes-pairs           image-caption pairs from the pretraining seed stream (contrastive
                         pretraining of builtin:clip-small; a training set, no victim)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from ..errors import TaskError
from .base import Example, Task
from .kinds import TaskKind, _closed
from .kinds import register as register_kind
from .named import NamedTask
from .named import register as register_task
from .shapes import generate_scene
from .shapes_tasks import PRETRAIN_SIZES, PRETRAIN_SPLIT_CODES, SPLIT_CODES, SPLIT_SIZES, captions
from .vocab import COLOURS, NUMBER_WORDS, SHAPES

CLASSIFY = "classify"
PAIRS = "pairs"
DEFAULT_TEMPLATE = "a picture of a {}"
DUAL_ENCODER = (
    "fills_class_prompts",
    "a dual encoder that reads class names in prompts (builtin:clip-small, a Hugging Face CLIP or SigLIP)",
)

register_kind(
    TaskKind(
        CLASSIFY,
        "binary",
        "accuracy",
        _closed,
        victim="closed",
        candidates=True,
        early_stop=True,
        text_label="Prompt",
        target="answer",
        needs=DUAL_ENCODER,
        open_classes=True,
    )
)
register_kind(TaskKind(PAIRS, "binary", "score", _closed, candidates=True))  # training pairs: nothing judges them


def check_classes(names: Sequence[str], where: str) -> list[str]:
    """The class names as a list; an empty or duplicated list is refused in one line."""
    names = [str(n).strip() for n in names]
    if not names or not all(names):
        raise TaskError(f"{where}: the class list is empty or has an empty name; give one name per class")
    seen: set[str] = set()
    for n in names:
        if n.lower() in seen:
            raise TaskError(f"{where}: class {n!r} appears twice in the class list; class names must be distinct")
        seen.add(n.lower())
    return names


def check_template(template: str, where: str) -> str:
    if not isinstance(template, str) or template.count("{}") != 1:
        raise TaskError(f"{where}: a prompt template holds exactly one {{}} for the class name, got {template!r}")
    return template


OBJECT_CLASSES: tuple[str, ...] = tuple(f"{c} {s}" for c in COLOURS for s in SHAPES)
BASE_CLASSES: tuple[str, ...] = tuple(
    f"{c} {s}" for i, c in enumerate(COLOURS) for j, s in enumerate(SHAPES) if (i + j) % 2 == 0
)
NOVEL_CLASSES: tuple[str, ...] = tuple(n for n in OBJECT_CLASSES if n not in BASE_CLASSES)
COUNT_CLASSES: tuple[str, ...] = tuple(f"{w} object{'s' if k > 1 else ''}" for k, w in enumerate(NUMBER_WORDS) if k)


@dataclass
class ShapesClassTask(Task):
    """A ShapesWorld class set, generated lazily (one random stream per index, as ShapesTask)."""

    template: str = DEFAULT_TEMPLATE
    source: str = "objects"  # "objects": one object per scene; "count": 1-4 objects; "pairs": captions
    task_code: int = 0
    split_code: int = 0
    num_examples: int = 0

    def __len__(self) -> int:
        return self.num_examples

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i) + (self.num_examples if int(i) < 0 else 0)
        if not 0 <= i < self.num_examples:
            raise IndexError(f"example {i} out of range for {self.name}/{self.split} of {self.num_examples}")
        rng = np.random.default_rng([self.seed, self.split_code, self.task_code, i])
        scene, name, refs = self._draw(rng, i)
        return Example(
            id=f"{self.name}:{self.split}:{self.seed}:{i}",
            image=scene.image,
            text=self.template,
            target=name,
            label=self.answers.index(name) if name in (self.answers or ()) else -1,
            refs=refs,
            qtype=self.source,
        )

    def _draw(self, rng, index: int):
        if self.source == "pairs":
            scene = generate_scene(rng, self.image_size)
            refs = captions(rng, scene)
            return scene, refs[0], refs
        if self.source == "count":  # balanced: example i asks for i % 4 + 1 objects (a full scene may hold fewer)
            scene = generate_scene(rng, self.image_size, n_objects=index % len(COUNT_CLASSES) + 1)
            return scene, COUNT_CLASSES[len(scene.objects) - 1], ()
        name = self.answers[index % len(self.answers)]  # balanced: example i shows class i % K
        scene = generate_scene(rng, self.image_size, n_objects=1, first=tuple(name.split()))
        return scene, name, ()

    def batches(self, batch_size: int, start: int = 0) -> Iterator[list[Example]]:
        for s in range(start, len(self), batch_size):
            yield [self[j] for j in range(s, min(s + batch_size, len(self)))]


_SETS = {
    # name: (task code, source, classes, split codes, split sizes)
    "shapes-objects": (11, "objects", OBJECT_CLASSES),
    "shapes-objects-base": (12, "objects", BASE_CLASSES),
    "shapes-objects-novel": (13, "objects", NOVEL_CLASSES),
    "shapes-counting": (14, "count", COUNT_CLASSES),
}


def make_class_task(name: str, split: str, n: int, seed: int = 0, size: int = 64) -> ShapesClassTask:
    code, source, classes = _SETS[name]
    return ShapesClassTask(
        name=name,
        kind=CLASSIFY,
        split=split,
        metric="accuracy",
        answers=list(classes),
        image_size=size,
        seed=seed,
        template=DEFAULT_TEMPLATE if source == "objects" else "a picture of {}",
        source=source,
        task_code=code,
        split_code=SPLIT_CODES[split],
        num_examples=n,
    )


def make_pairs(split: str, n: int, seed: int = 0, size: int = 64) -> ShapesClassTask:
    """Image-caption pairs from the pretraining seed stream (example.refs: 3-5 captions of the scene)."""
    return ShapesClassTask(
        name="shapes-pairs",
        kind=PAIRS,
        split=split,
        metric="score",
        answers=None,
        image_size=size,
        seed=seed,
        template="",
        source="pairs",
        task_code=15,
        split_code=PRETRAIN_SPLIT_CODES[split],
        num_examples=n,
    )


for _name in _SETS:
    register_task(
        NamedTask(
            _name,
            CLASSIFY,
            SPLIT_SIZES,
            lambda split, n, seed, size, name=_name: make_class_task(name, split, n, seed=seed, size=size),
            "Prompt",
        )  # fmt: skip
    )
register_task(NamedTask("shapes-pairs", PAIRS, PRETRAIN_SIZES, make_pairs, "Caption"))
