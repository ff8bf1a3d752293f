"""The four OFA-PT task types on ShapesWorld scenes, plus the pretraining mix.

Every example is generated on demand from its own random stream,
`np.random.default_rng([seed, split_code, task_code, index])`, so example i of any split
costs the same to make whether or not examples 0..i-1 were ever made, and a task of a
million examples holds nothing in memory.

Questions only name objects they can refer to unambiguously: a referring phrase
("the red circle", "the small square", "the red object") is used only when exactly one
object of the scene fits it; scenes that offer no such object are redrawn from the same
stream (deterministic).

Each task registers itself by name (tasks/named.py), and the pretraining mix registers
its own task kind, `mixed` (tasks/kinds.py: scored per example by its type, judged by no
victim), so nothing outside this module knows the ShapesWorld names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, NamedTuple, Sequence

import numpy as np

from .base import CAPTION, CLOSED, GROUND, MIXED, Example, Task
from .kinds import TaskKind
from .kinds import register as register_kind
from .metrics import box_iou, box_to_tokens, caption_tokens, cider_per_example, tokens_to_box
from .named import NamedTask
from .named import register as register_task
from .shapes import Scene, SceneObject, generate_scene
from .vocab import COLOURS, NUMBER_WORDS, SHAPES, UNDECIDABLE

VQA_ANSWERS: list[str] = sorted({*COLOURS, *SHAPES, *NUMBER_WORDS, "yes", "no"})
VE_ANSWERS: list[str] = ["yes", "no", "maybe"]
PRETRAIN_ANSWERS: list[str] = sorted({*VQA_ANSWERS, *VE_ANSWERS})
VQA_TYPES: tuple[str, ...] = ("colour", "shape", "count", "exist", "spatial")
VE_FORMS: tuple[str, ...] = ("exist", "count", "spatial", "size")
PRETRAIN_KINDS: tuple[str, ...] = ("vqa", "ve", "ground", "caption")

PRETRAIN_MIX = "shapes-pretrain"  # the multi-task mix the built-in base pretrains on (a training mix: no victim)

TASK_CODES: dict[str, int] = {
    "shapes-vqa": 1,
    "shapes-ve": 2,
    "shapes-ground": 3,
    "shapes-caption": 4,
    "shapes-pretrain": 5,
}
# Downstream splits and the pretraining split draw from disjoint seed streams.
SPLIT_CODES: dict[str, int] = {"train": 0, "val": 1, "test": 2}
PRETRAIN_SPLIT_CODES: dict[str, int] = {"train": 3}
SPLIT_SIZES: dict[str, int] = {"train": 20000, "val": 1000, "test": 1000}
PRETRAIN_SIZES: dict[str, int] = {"train": 200000}

# Spatial relations are asked only about centres at least this far apart (px at 64 x 64).
SPATIAL_MARGIN_64 = 6.0


class Item(NamedTuple):
    """What a task generator produces for one index, before it becomes an Example."""

    scene: Scene
    text: str
    target: str
    qtype: str
    refs: tuple[str, ...] = ()
    box: tuple[float, float, float, float] | None = None
    image_decides: bool = True  # see Example.image_decides


# --------------------------------------------------------------------------- referring


def _unique(objs: Sequence[SceneObject], o: SceneObject, attrs: Sequence[str]) -> bool:
    key = tuple(getattr(o, a) for a in attrs)
    return sum(tuple(getattr(p, a) for a in attrs) == key for p in objs) == 1


def _phrase(o: SceneObject, attrs: Sequence[str]) -> str:
    """Noun phrase from attributes in `attrs` (size, colour, shape), "object" if no shape."""
    words = [getattr(o, a) for a in ("size", "colour") if a in attrs]
    words.append(o.shape if "shape" in attrs else "object")
    return " ".join(words)


def _referable(objs: Sequence[SceneObject], options: Sequence[Sequence[str]]) -> list[tuple[SceneObject, str]]:
    """(object, phrase) for each object that one of the attribute sets names uniquely."""
    out = []
    for o in objs:
        for attrs in options:
            if _unique(objs, o, attrs):
                out.append((o, _phrase(o, attrs)))
                break
    return out


def _pick(rng: np.random.Generator, seq: Sequence):
    return seq[int(rng.integers(len(seq)))]


def _margin(size: int) -> float:
    return SPATIAL_MARGIN_64 * size / 64.0


def _holds(rel: str, a: SceneObject, b: SceneObject, margin: float) -> bool:
    """a is clearly `rel` b (image y grows downwards)."""
    if rel == "left of":
        return a.cx <= b.cx - margin
    if rel == "above":
        return a.cy <= b.cy - margin
    raise ValueError(rel)


def _spatial_pair(
    rng: np.random.Generator, scene: Scene, truth: bool, rels: Sequence[str]
) -> tuple[str, str, str] | None:
    """(phrase_a, rel, phrase_b) whose statement "a is rel b" has truth value `truth`."""
    size = scene.size
    refs = _referable(scene.objects, (("colour", "shape"),))
    for rel in rels:
        pairs = [
            (pa, pb)
            for a, pa in refs
            for b, pb in refs
            if a is not b and _holds(rel, *((a, b) if truth else (b, a)), _margin(size))
        ]
        if pairs:
            pa, pb = _pick(rng, pairs)
            return pa, rel, pb
    return None


def _rels(rng: np.random.Generator) -> tuple[str, str]:
    return ("left of", "above") if rng.random() < 0.5 else ("above", "left of")


def _scene_with(rng, size, accept, **kw):
    """Draw scenes until `accept(scene)` returns something truthy; return (scene, result)."""
    for _ in range(1000):  # a handful of draws at most in practice
        scene = generate_scene(rng, size, **kw)
        got = accept(scene)
        if got:
            return scene, got
    raise RuntimeError(f"no usable scene in 1000 draws at image size {size}")


# --------------------------------------------------------------------------- VQA


def _vqa(rng: np.random.Generator, size: int, qtype: str | None = None) -> Item:
    qtype = qtype or VQA_TYPES[int(rng.integers(len(VQA_TYPES)))]
    if qtype == "colour":
        scene, cands = _scene_with(rng, size, lambda s: _referable(s.objects, (("shape",), ("size", "shape"))))
        o, ref = _pick(rng, cands)
        return Item(scene, f"what color is the {ref}?", o.colour, qtype)
    if qtype == "shape":
        scene, cands = _scene_with(rng, size, lambda s: _referable(s.objects, (("colour",), ("size", "colour"))))
        o, ref = _pick(rng, cands)
        return Item(scene, f"what shape is the {ref}?", o.shape, qtype)
    if qtype == "count":
        if rng.random() < 0.5:
            scene = generate_scene(rng, size)
            return Item(scene, "how many objects are there?", NUMBER_WORDS[len(scene.objects)], qtype)
        scene = generate_scene(rng, size)
        present = sorted({o.colour for o in scene.objects}, key=COLOURS.index)
        colour = _pick(rng, present) if rng.random() < 0.7 else _pick(rng, COLOURS)
        n = sum(o.colour == colour for o in scene.objects)
        return Item(scene, f"how many {colour} objects are there?", NUMBER_WORDS[n], qtype)
    if qtype == "exist":
        truth = rng.random() < 0.5
        scene = generate_scene(rng, size)
        return Item(
            scene,
            f"is there a {_exist_phrase(rng, scene, truth, allow_partial=True)}?",
            "yes" if truth else "no",
            qtype,
        )
    if qtype == "spatial":
        truth = rng.random() < 0.5
        rels = _rels(rng)
        scene, (pa, rel, pb) = _scene_with(rng, size, lambda s: _spatial_pair(rng, s, truth, rels), min_objects=2)
        return Item(scene, f"is the {pa} {rel} the {pb}?", "yes" if truth else "no", qtype)
    raise ValueError(f"unknown VQA question type {qtype!r}")


def _exist_phrase(rng: np.random.Generator, scene: Scene, truth: bool, allow_partial: bool) -> str:
    """A noun phrase ("blue triangle", "blue object", "triangle") present iff `truth`."""
    forms = [("colour", "shape")]
    if allow_partial:
        u = rng.random()
        forms = (
            [("colour",), ("colour", "shape")] if u < 0.2 else [("shape",), ("colour", "shape")] if u < 0.4 else forms
        )
    for attrs in forms:
        values = {tuple(getattr(o, a) for a in attrs) for o in scene.objects}
        if truth:
            cands = sorted(values)
        else:
            domain = {"colour": COLOURS, "shape": SHAPES}
            allv = [(c, s) for c in COLOURS for s in SHAPES] if len(attrs) == 2 else [(v,) for v in domain[attrs[0]]]
            cands = [v for v in allv if v not in values]
        if cands:
            v = _pick(rng, cands)
            d = dict(zip(attrs, v))
            return f"{d['colour']} {d.get('shape', 'object')}" if "colour" in d else d["shape"]
    raise AssertionError("unreachable: a scene of at most 4 objects misses some colour+shape")


# --------------------------------------------------------------------------- VE


def _ve(rng: np.random.Generator, size: int) -> Item:
    label = int(rng.integers(3))
    answer = VE_ANSWERS[label]
    if answer == "maybe":
        scene, cands = _scene_with(rng, size, lambda s: _referable(s.objects, (("colour", "shape"),)))
        o, ref = _pick(rng, cands)
        hyp = f"the {ref} is {_pick(rng, UNDECIDABLE)}"
        form = "property"
    else:
        truth = answer == "yes"
        form = VE_FORMS[int(rng.integers(len(VE_FORMS)))]
        scene = generate_scene(rng, size, min_objects=2 if form == "spatial" else 1)
        hyp = None
        if form == "spatial":
            got = _spatial_pair(rng, scene, truth, _rels(rng))
            if got:
                pa, rel, pb = got
                hyp = f"the {pa} is {rel} the {pb}"
            else:  # no clear pair in this scene: state something else about it
                form = "exist"
        if form == "size":
            cands = _referable(scene.objects, (("colour", "shape"),))
            if cands:
                o, ref = _pick(rng, cands)
                size_word = o.size if truth else ("small" if o.size == "large" else "large")
                hyp = f"the {ref} is {size_word}"
            else:
                form = "exist"
        if form == "count":
            n = len(scene.objects)
            m = n if truth else _pick(rng, [k for k in range(1, 5) if k != n])
            hyp = "there is one object" if m == 1 else f"there are {NUMBER_WORDS[m]} objects"
        if form == "exist":
            hyp = f"there is a {_exist_phrase(rng, scene, truth, allow_partial=False)}"
    # "maybe" statements name a property no image shows: the text alone decides them
    return Item(scene, f'does the image describe " {hyp} "?', answer, form, image_decides=answer != "maybe")


# --------------------------------------------------------------------------- grounding


def _ground(rng: np.random.Generator, size: int) -> Item:
    scene, cands = _scene_with(rng, size, lambda s: _referable(s.objects, (("colour", "shape"),)))
    o, ref = _pick(rng, cands)
    box = tuple(float(v) for v in o.box)
    return Item(
        scene, f'which region does the text " the {ref} " describe?', box_to_tokens(box, size), "ground", box=box
    )


# --------------------------------------------------------------------------- captions


def _describe(o: SceneObject, sized: bool = True) -> str:
    return f"a {o.size} {o.colour} {o.shape}" if sized else f"a {o.colour} {o.shape}"


def _join(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def captions(rng: np.random.Generator, scene: Scene) -> tuple[str, ...]:
    """3-5 templated references; the first lists the objects left to right (canonical)."""
    objs = list(scene.objects)
    n = len(objs)
    by_x = sorted(objs, key=lambda o: o.cx)
    shuffled = [objs[k] for k in rng.permutation(n)]
    shuffled2 = [objs[k] for k in rng.permutation(n)]
    head = "there is one object: " if n == 1 else f"there are {NUMBER_WORDS[n]} objects: "
    canonical = _join([_describe(o) for o in by_x])
    others = [
        head + _join([_describe(o) for o in shuffled]),
        "a picture of " + _join([_describe(o) for o in sorted(objs, key=lambda o: o.cy)]),
        _join([_describe(o, sized=False) for o in shuffled2]),
        "an image with " + _join([_describe(o) for o in reversed(by_x)]),
    ]
    k = int(rng.integers(3, 6))
    order = rng.permutation(len(others))
    return (canonical, *[others[j] for j in order[: k - 1]])


def _caption(rng: np.random.Generator, size: int) -> Item:
    scene = generate_scene(rng, size)
    refs = captions(rng, scene)
    return Item(scene, "what does the image describe?", refs[0], "caption", refs=refs)


# --------------------------------------------------------------------------- tasks

_GENERATORS = {"shapes-vqa": _vqa, "shapes-ve": _ve, "shapes-ground": _ground, "shapes-caption": _caption}
_KIND_GEN = {"vqa": _vqa, "ve": _ve, "ground": _ground, "caption": _caption}
DOWNSTREAM: tuple[str, ...] = tuple(_GENERATORS)  # the tasks a pretrained base is tuned and scored on


@dataclass
class ShapesTask(Task):
    """A ShapesWorld task whose examples are generated lazily, one random stream per index."""

    task_code: int = 0
    split_code: int = 0
    num_examples: int = 0

    def __len__(self) -> int:
        return self.num_examples

    def _index(self, i: int) -> int:
        i = int(i)
        if i < 0:
            i += self.num_examples
        if not 0 <= i < self.num_examples:
            raise IndexError(f"example {i} out of range for {self.name}/{self.split} of {self.num_examples}")
        return i

    def _item(self, i: int) -> Item:
        rng = np.random.default_rng([self.seed, self.split_code, self.task_code, i])
        if self.name == "shapes-pretrain":
            kind = PRETRAIN_KINDS[i % len(PRETRAIN_KINDS)]  # equal shares
            item = _KIND_GEN[kind](rng, self.image_size)
            return item._replace(qtype=f"vqa:{item.qtype}" if kind == "vqa" else kind)
        return _GENERATORS[self.name](rng, self.image_size)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = self._index(i)
        it = self._item(i)
        label = self.answers.index(it.target) if self.answers and it.target in self.answers else -1
        return Example(
            id=f"{self.name}:{self.split}:{self.seed}:{i}",
            image=it.scene.image,
            text=it.text,
            target=it.target,
            label=label,
            refs=it.refs,
            box=it.box,
            qtype=it.qtype,
            image_decides=it.image_decides,
        )

    def scene(self, i: int) -> Scene:
        """The scene (image and scene graph) example i was made from."""
        return self._item(self._index(i)).scene

    def batches(self, batch_size: int, start: int = 0) -> Iterator[list[Example]]:
        """Consecutive lists of up to `batch_size` examples, from example `start` on."""
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        for s in range(start, len(self), batch_size):
            yield [self[j] for j in range(s, min(s + batch_size, len(self)))]


def _score_mix(task: Task, examples: Sequence[Example], predictions: Sequence) -> np.ndarray:
    """The pretraining mix scores each example by its own type: closed -> exact answer (text, or int
    label), ground -> IoU >= 0.5, caption -> CIDEr-D (idf over the caption examples in `examples`)."""
    out = np.zeros(len(examples))
    cap = [k for k, ex in enumerate(examples) if ex.qtype == "caption"]
    for k, (ex, p) in enumerate(zip(examples, predictions)):
        if ex.qtype == "ground":
            out[k] = float(box_iou(tokens_to_box(str(p), task.image_size), ex.box) >= 0.5)
        elif ex.qtype != "caption":
            if isinstance(p, (int, np.integer)):
                out[k] = float(int(p) == ex.label)
            else:
                out[k] = float(caption_tokens(str(p)) == caption_tokens(ex.target))
    if cap:
        out[cap] = cider_per_example([list(examples[k].refs) for k in cap], [str(predictions[k]) for k in cap])
    return out


# the mix is for training only: no victim judges it (attack one of its downstream tasks)
register_kind(TaskKind(MIXED, "binary", "score", _score_mix, candidates=True))


class _Spec(NamedTuple):
    kind: str
    metric: str
    answers: list[str] | None
    text_label: str
    split_codes: dict[str, int] = SPLIT_CODES
    sizes: dict[str, int] = SPLIT_SIZES


_SPECS = {
    "shapes-vqa": _Spec(CLOSED, "accuracy", VQA_ANSWERS, "Question"),
    "shapes-ve": _Spec(CLOSED, "accuracy", VE_ANSWERS, "Hypothesis"),
    "shapes-ground": _Spec(GROUND, "acc@0.5", None, "Expression"),
    "shapes-caption": _Spec(CAPTION, "cider", None, "Prompt"),
    "shapes-pretrain": _Spec(MIXED, "score", PRETRAIN_ANSWERS, "Text", PRETRAIN_SPLIT_CODES, PRETRAIN_SIZES),
}


def make_task(name: str, split: str, num_examples: int, seed: int = 0, size: int = 64) -> ShapesTask:
    """Build a ShapesTask (no validation; see robust_pt.tasks.load_task)."""
    spec = _SPECS[name]
    return ShapesTask(
        name=name,
        kind=spec.kind,
        split=split,
        metric=spec.metric,
        answers=list(spec.answers) if spec.answers is not None else None,
        image_size=size,
        seed=seed,
        task_code=TASK_CODES[name],
        split_code=spec.split_codes[split],
        num_examples=num_examples,
    )


for _name, _spec in _SPECS.items():  # each is loadable by name (tasks/named.py)
    register_task(
        NamedTask(
            _name,
            _spec.kind,
            _spec.sizes,
            lambda split, n, seed, size, name=_name: make_task(name, split, n, seed=seed, size=size),
            _spec.text_label,
        )
    )
