"""ShapesWorld: determinism, scene-graph correctness of every answer, boxes, vocabulary, loading."""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache

import numpy as np
import pytest

from robust_pt.errors import RobustPTError, TaskError
from robust_pt.tasks import TASKS, load_task, metrics, named, stack_images
from robust_pt.tasks.base import CAPTION, CLOSED, GROUND, MIXED
from robust_pt.tasks.shapes import COLOUR_RGB, generate_scene
from robust_pt.tasks.shapes_tasks import PRETRAIN_ANSWERS, VE_ANSWERS, VQA_ANSWERS
from robust_pt.tasks.vocab import COLOURS, NUMBER_WORDS, SHAPES, SIZES, UNDECIDABLE, WORDS, bin_tokens, tokenize

N = 240  # examples per downstream task in the shared samples
MARGIN = 6.0  # px at 64 x 64


@lru_cache(maxsize=None)
def sample(name: str, n: int = N, split: str = "val", seed: int = 0, size: int = 64):
    task = load_task(name, split=split, limit=n, seed=seed, size=size)
    return task, [task[i] for i in range(len(task))], [task.scene(i) for i in range(len(task))]


# --------------------------------------------------------------------------- independent checks


def matching(objs, colour=None, shape=None, size=None):
    return [
        o
        for o in objs
        if (colour is None or o.colour == colour)
        and (shape is None or o.shape == shape)
        and (size is None or o.size == size)
    ]


def the(objs, **attrs):
    """The one object a definite description refers to (fails unless exactly one fits)."""
    found = matching(objs, **attrs)
    assert len(found) == 1, f"'the {attrs}' is ambiguous or empty in {objs}"
    return found[0]


def parse_np(words: list[str]) -> dict:
    """'small red circle' / 'red object' / 'circle' -> attribute dict."""
    out = {}
    for w in words:
        if w in SIZES:
            out["size"] = w
        elif w in COLOURS:
            out["colour"] = w
        elif w in SHAPES:
            out["shape"] = w
        else:
            assert w == "object", w
    return out


def relation(rel, a, b, margin=MARGIN):
    """True / False when clearly decided, None when too close to call."""
    d = (b.cx - a.cx) if rel == "left of" else (b.cy - a.cy)
    return True if d >= margin else False if d <= -margin else None


def vqa_answer(question: str, objs) -> str:
    if m := re.fullmatch(r"what color is the ((?:\w+ )?\w+)\?", question):
        return the(objs, **parse_np(m[1].split())).colour
    if m := re.fullmatch(r"what shape is the ((?:\w+ )?\w+ object)\?", question):
        return the(objs, **parse_np(m[1].split())).shape
    if question == "how many objects are there?":
        return NUMBER_WORDS[len(objs)]
    if m := re.fullmatch(r"how many (\w+) objects are there\?", question):
        return NUMBER_WORDS[len(matching(objs, colour=m[1]))]
    if m := re.fullmatch(r"is there a ((?:\w+ )?\w+)\?", question):
        return "yes" if matching(objs, **parse_np(m[1].split())) else "no"
    if m := re.fullmatch(r"is the (\w+ \w+) (left of|above) the (\w+ \w+)\?", question):
        a, b = the(objs, **parse_np(m[1].split())), the(objs, **parse_np(m[3].split()))
        r = relation(m[2], a, b)
        assert r is not None, "spatial question about objects too close to call"
        return "yes" if r else "no"
    raise AssertionError(f"unparsed question {question!r}")


def ve_answer(instruction: str, objs) -> str:
    m = re.fullmatch(r'does the image describe " (.+) "\?', instruction)
    assert m, instruction
    hyp = m[1]
    if m := re.fullmatch(r"there is a (\w+ \w+)", hyp):
        return "yes" if matching(objs, **parse_np(m[1].split())) else "no"
    if hyp == "there is one object" or re.fullmatch(r"there are \w+ objects", hyp):
        n = 1 if hyp == "there is one object" else NUMBER_WORDS.index(hyp.split()[2])
        assert n >= 1
        return "yes" if n == len(objs) else "no"
    if m := re.fullmatch(r"the (\w+ \w+) is (left of|above) the (\w+ \w+)", hyp):
        a, b = the(objs, **parse_np(m[1].split())), the(objs, **parse_np(m[3].split()))
        r = relation(m[2], a, b)
        assert r is not None
        return "yes" if r else "no"
    if m := re.fullmatch(r"the (\w+ \w+) is (small|large)", hyp):
        return "yes" if the(objs, **parse_np(m[1].split())).size == m[2] else "no"
    if m := re.fullmatch(r"the (\w+ \w+) is (.+)", hyp):
        the(objs, **parse_np(m[1].split()))  # it is in the scene...
        assert m[2] in UNDECIDABLE  # ...but the property is not depicted
        return "maybe"
    raise AssertionError(f"unparsed hypothesis {hyp!r}")


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("name", TASKS)
def test_same_seed_same_bytes_and_texts(name):
    a = load_task(name, split="train", limit=12, seed=3)
    b = load_task(name, split="train", limit=12, seed=3)
    for i in (11, 0, 5):  # any order: each example is made on its own
        ea, eb = a[i], b[i]
        assert ea.image.tobytes() == eb.image.tobytes()
        assert (ea.id, ea.text, ea.target, ea.label, ea.refs, ea.box, ea.qtype) == (
            eb.id,
            eb.text,
            eb.target,
            eb.label,
            eb.refs,
            eb.box,
            eb.qtype,
        )


@pytest.mark.parametrize("name", TASKS)
def test_different_seed_or_split_differs(name):
    base = load_task(name, split="train", limit=8, seed=0)
    other_seed = load_task(name, split="train", limit=8, seed=1)
    assert all(base[i].image.tobytes() != other_seed[i].image.tobytes() for i in range(8))
    if "val" in named.lookup(name).splits:  # the pretraining streams have only "train"
        val = load_task(name, split="val", limit=8, seed=0)
        assert all(base[i].image.tobytes() != val[i].image.tobytes() for i in range(8))


def test_pretrain_scenes_disjoint_from_downstream():
    pre = load_task("shapes-pretrain", split="train", limit=40)
    pre_bytes = {pre[i].image.tobytes() for i in range(40)}
    for name in TASKS[:4]:
        for split in ("train", "val", "test"):
            t = load_task(name, split=split, limit=10)
            assert not pre_bytes & {t[i].image.tobytes() for i in range(10)}


def test_generate_scene_deterministic_from_rng():
    a = generate_scene(np.random.default_rng([1, 2, 3]))
    b = generate_scene(np.random.default_rng([1, 2, 3]))
    assert a.image.tobytes() == b.image.tobytes() and a.objects == b.objects


# --------------------------------------------------------------------------- images and scenes


@pytest.mark.parametrize("size", [64, 96])
def test_images_and_scene_graphs(size):
    task, exs, scenes = sample("shapes-caption", 60, size=size)
    n_objects = Counter()
    for ex, sc in zip(exs, scenes):
        img = ex.image
        assert img.dtype == np.float32 and img.shape == (3, size, size)
        assert img.min() >= 0.0 and img.max() <= 1.0 and np.isfinite(img).all()
        assert 1 <= len(sc.objects) <= 4
        n_objects[len(sc.objects)] += 1
        taken = np.zeros((size, size), dtype=bool)
        for o in sc.objects:
            assert o.shape in SHAPES and o.colour in COLOURS and o.size in SIZES
            x0, y0, x1, y1 = o.box
            assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size  # fully inside
            mask = o.mask(size)
            assert not (mask & taken).any(), "objects overlap"
            taken |= mask
            # the box is tight around the painted pixels
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            assert (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1) == (x0, y0, x1, y1)
            # size in pixels scales with the image
            side = max(x1 - x0, y1 - y0) * 64 / size
            assert (10 <= side <= 14) if o.size == "small" else (16 <= side <= 23)
            # painted in (about) its colour, recognisably different from the others
            mean = img[:, mask].mean(axis=1)
            assert np.abs(mean - np.asarray(COLOUR_RGB[o.colour])).max() < 0.08
            for other, rgb in COLOUR_RGB.items():
                if other != o.colour:
                    assert np.abs(mean - np.asarray(rgb)).max() > 0.2
    assert set(n_objects) == {1, 2, 3, 4}


def test_background_is_cluttered_but_low_contrast():
    _, exs, scenes = sample("shapes-caption", 60)
    for ex, sc in zip(exs[:20], scenes[:20]):
        free = np.ones(ex.image.shape[1:], dtype=bool)
        for o in sc.objects:
            free &= ~o.mask(ex.image.shape[1])
        bg = ex.image[:, free]
        assert bg.std() > 0.02  # noise, gradient, lines: not a flat colour
        # grey-ish: channel spread small compared with the saturated object colours
        assert np.median(bg.max(0) - bg.min(0)) < 0.15


# --------------------------------------------------------------------------- answers re-derived


def test_vqa_answers_follow_from_scene_graph():
    task, exs, scenes = sample("shapes-vqa")
    assert task.kind == CLOSED and task.metric == "accuracy" and task.answers == VQA_ANSWERS
    for ex, sc in zip(exs, scenes):
        assert vqa_answer(ex.text, sc.objects) == ex.target, ex.text
        assert task.answers[ex.label] == ex.target


def test_ve_answers_follow_from_scene_graph():
    task, exs, scenes = sample("shapes-ve")
    assert task.kind == CLOSED and task.answers == ["yes", "no", "maybe"]
    for ex, sc in zip(exs, scenes):
        assert ve_answer(ex.text, sc.objects) == ex.target, ex.text
        assert task.answers[ex.label] == ex.target


def test_grounding_boxes_contain_their_object():
    task, exs, scenes = sample("shapes-ground")
    assert task.kind == GROUND and task.metric == "acc@0.5"
    for ex, sc in zip(exs, scenes):
        m = re.fullmatch(r'which region does the text " the (\w+) (\w+) " describe\?', ex.text)
        assert m, ex.text
        o = the(sc.objects, colour=m[1], shape=m[2])
        x0, y0, x1, y1 = ex.box
        rows, cols = np.nonzero(o.mask(64))
        assert cols.min() >= x0 and cols.max() + 1 <= x1 and rows.min() >= y0 and rows.max() + 1 <= y1
        assert ex.box == tuple(float(v) for v in o.box)
        assert ex.target == metrics.box_to_tokens(ex.box, 64)
        # a model that outputs the target exactly scores 1
        assert metrics.box_iou(metrics.tokens_to_box(ex.target, 64), ex.box) >= 0.5
    scores = task.example_scores(exs, [ex.target for ex in exs])
    assert scores.tolist() == [1.0] * len(exs)


def test_captions_describe_the_scene():
    task, exs, scenes = sample("shapes-caption")
    assert task.kind == CAPTION and task.metric == "cider"
    for ex, sc in zip(exs, scenes):
        assert ex.text == "what does the image describe?"
        assert 3 <= len(ex.refs) <= 5 and ex.target == ex.refs[0] and len(set(ex.refs)) == len(ex.refs)
        left_to_right = sorted(sc.objects, key=lambda o: o.cx)
        phrases = [f"a {o.size} {o.colour} {o.shape}" for o in left_to_right]
        expected = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
        assert ex.target == expected
        for ref in ex.refs:  # every reference names every object
            toks = tokenize(ref)
            assert Counter(t for t in toks if t in SHAPES) == Counter(o.shape for o in sc.objects)
            assert Counter(t for t in toks if t in COLOURS) == Counter(o.colour for o in sc.objects)
    refs = [list(ex.refs) for ex in exs]
    assert task.corpus_metrics(exs, [ex.target for ex in exs])["cider"] > 3.0
    assert metrics.bleu4(refs, [ex.target for ex in exs]) == pytest.approx(1.0)


# --------------------------------------------------------------------------- balance


def test_vqa_question_types_and_yes_no_balanced():
    _, exs, _ = sample("shapes-vqa")
    types = Counter(ex.qtype for ex in exs)
    assert set(types) == {"colour", "shape", "count", "exist", "spatial"}
    for qtype, n in types.items():
        assert abs(n / len(exs) - 0.2) < 0.07, types
    for qtype in ("exist", "spatial"):
        answers = Counter(ex.target for ex in exs if ex.qtype == qtype)
        assert set(answers) == {"yes", "no"} and abs(answers["yes"] / sum(answers.values()) - 0.5) < 0.17
    seen = Counter(ex.target for ex in exs)
    assert set(COLOURS) | set(SHAPES) <= set(seen)


def test_ve_labels_balanced():
    _, exs, _ = sample("shapes-ve")
    labels = Counter(ex.target for ex in exs)
    for a in VE_ANSWERS:
        assert abs(labels[a] / len(exs) - 1 / 3) < 0.08, labels
    forms = Counter(ex.qtype for ex in exs if ex.target != "maybe")
    assert set(forms) == {"exist", "count", "spatial", "size"}


# --------------------------------------------------------------------------- pretraining mix


def test_pretrain_mix():
    task = load_task("shapes-pretrain", split="train", limit=800)
    assert task.kind == MIXED and task.answers == PRETRAIN_ANSWERS
    exs = [task[i] for i in range(len(task))]
    kinds = Counter(ex.qtype.split(":")[0] for ex in exs)
    assert kinds == {"vqa": 200, "ve": 200, "ground": 200, "caption": 200}
    vqa_types = {ex.qtype for ex in exs if ex.qtype.startswith("vqa:")}
    assert vqa_types == {"vqa:colour", "vqa:shape", "vqa:count", "vqa:exist", "vqa:spatial"}
    targets = {ex.target for ex in exs}
    assert set(VQA_ANSWERS) | set(VE_ANSWERS) <= targets  # every downstream answer word
    for ex in exs:
        if ex.qtype.startswith("vqa:") or ex.qtype == "ve":
            assert task.answers[ex.label] == ex.target
        if ex.qtype == "ground":
            assert ex.box is not None and ex.label == -1
        if ex.qtype == "caption":
            assert ex.refs and ex.target == ex.refs[0]
    # every type scores 1 when the prediction is the target
    scores = task.example_scores(exs[:200], [ex.target for ex in exs[:200]])
    closed_and_ground = [s for s, ex in zip(scores, exs[:200]) if ex.qtype != "caption"]
    assert closed_and_ground == [1.0] * len(closed_and_ground)
    assert all(s > 0 for s, ex in zip(scores, exs[:200]) if ex.qtype == "caption")


# --------------------------------------------------------------------------- vocabulary


def test_vocabulary_closure():
    allowed = set(WORDS) | set(bin_tokens())
    assert WORDS == sorted(set(WORDS)) and all(w == w.lower() for w in WORDS)
    texts = []
    for name in TASKS[:4]:
        _, exs, _ = sample(name)
        texts += [t for ex in exs for t in (ex.text, ex.target, *ex.refs)]
    pre = load_task("shapes-pretrain", split="train", limit=200)
    texts += [t for i in range(200) for t in (pre[i].text, pre[i].target, *pre[i].refs)]
    used = Counter(tok for t in texts for tok in tokenize(t))
    assert set(used) <= allowed, set(used) - allowed
    for a in PRETRAIN_ANSWERS:
        assert tokenize(a) == [a] and a in WORDS


# --------------------------------------------------------------------------- loading


def test_load_task_errors():
    with pytest.raises(TaskError) as e:
        load_task("shapes-nope")
    msg = str(e.value)
    assert "\n" not in msg and all(n in msg for n in TASKS)
    assert issubclass(TaskError, RobustPTError)
    with pytest.raises(TaskError):
        load_task("shapes-vqa", split="dev")
    with pytest.raises(TaskError):
        load_task("shapes-pretrain", split="test")
    for bad in (0, -3):
        with pytest.raises(TaskError):
            load_task("shapes-vqa", limit=bad)
    with pytest.raises(TaskError):
        load_task("shapes-vqa", seed=-1)
    with pytest.raises(TaskError):
        load_task("shapes-vqa", size=8)


def test_sizes_limits_and_laziness():
    assert [
        len(load_task(n, split=s))
        for n, s in [
            ("shapes-vqa", "train"),
            ("shapes-vqa", "val"),
            ("shapes-ve", "test"),
            ("shapes-pretrain", "train"),
        ]
    ] == [20000, 1000, 1000, 200000]
    assert len(load_task("shapes-ground", split="test", limit=7)) == 7
    assert len(load_task("shapes-ground", split="test", limit=10**9)) == 1000
    assert len(load_task("shapes-ground", split="train", num_examples=10**6)) == 10**6
    big = load_task("shapes-caption", split="train", num_examples=10**6)
    assert big[-1].id == big[10**6 - 1].id  # made on demand, nothing stored
    t = load_task("shapes-vqa", split="test", limit=5)
    with pytest.raises(IndexError):
        t[5]
    assert [e.id for e in t[1:3]] == [t[1].id, t[2].id]
    assert len({e.id for e in t}) == 5
    batches = list(t.batches(2))
    assert [len(b) for b in batches] == [2, 2, 1] and batches[2][0].id == t[4].id


def test_stack_images():
    pytest.importorskip("torch")
    t = load_task("shapes-vqa", split="test", limit=3)
    x = stack_images(list(t))
    assert tuple(x.shape) == (3, 3, 64, 64) and str(x.dtype) == "torch.float32"
    assert np.array_equal(x[1].numpy(), t[1].image)
