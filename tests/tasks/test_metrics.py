"""Metrics: IoU and location tokens, BLEU-4 against nltk, CIDEr-D against hand arithmetic."""

from __future__ import annotations

import math

import numpy as np
import pytest

from robust_pt.tasks import load_task
from robust_pt.tasks.metrics import (
    bleu4,
    box_iou,
    box_to_tokens,
    caption_tokens,
    cider,
    cider_per_example,
    tokens_to_box,
)
from robust_pt.tasks.vocab import NUM_BINS, WORDS, bin_tokens, tokenize

# --------------------------------------------------------------------------- vocab


def test_tokenize_and_bins():
    assert tokenize('Does the image describe " the red circle "?') == [
        "does",
        "the",
        "image",
        "describe",
        '"',
        "the",
        "red",
        "circle",
        '"',
        "?",
    ]
    assert tokenize("<bin_3> <bin_31>x, 12:") == ["<bin_3>", "<bin_31>", "x", ",", "12", ":"]
    assert NUM_BINS == 32 and bin_tokens()[0] == "<bin_0>" and bin_tokens()[-1] == "<bin_31>"
    assert len(bin_tokens()) == 32
    for w in ("?", ":", '"', ",", "yes", "no", "maybe", "zero", "four", "color", "left", "above"):
        assert w in WORDS


# --------------------------------------------------------------------------- boxes


def test_box_iou():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (10, 10, 20, 20)) == 0.0
    assert box_iou((0, 0, 10, 10), (2, 2, 4, 4)) == pytest.approx(4 / 100)
    assert box_iou(None, (0, 0, 1, 1)) == 0.0 and box_iou((0, 0, 1, 1), None) == 0.0
    assert box_iou((5, 5, 5, 5), (5, 5, 5, 5)) == 0.0  # empty boxes
    assert box_iou((10, 10, 0, 0), (0, 0, 10, 10)) == 0.0  # inverted box has no area


def test_box_tokens_roundtrip():
    # S = 64: bins are 2 px wide; c -> min(int(c * 32 / 64), 31)
    assert box_to_tokens((0, 1.9, 2, 64), 64) == "<bin_0> <bin_0> <bin_1> <bin_31>"
    assert box_to_tokens((63.9, -3, 100, 31.99), 64) == "<bin_31> <bin_0> <bin_31> <bin_15>"
    # decoding maps bin k to its centre (k + 0.5) * 2
    assert tokens_to_box("<bin_0> <bin_1> <bin_15> <bin_31>", 64) == (1.0, 3.0, 31.0, 63.0)
    assert tokens_to_box("<bin_0><bin_1> junk <bin_2> <bin_3> <bin_9>", 128) == (2.0, 6.0, 10.0, 14.0)
    assert tokens_to_box("<bin_0> <bin_1> <bin_2>", 64) is None
    assert tokens_to_box("", 64) is None
    assert tokens_to_box("<bin_0> <bin_1> <bin_2> <bin_32>", 64) is None  # no such bin
    rng = np.random.default_rng(0)
    for _ in range(200):  # any box of side >= 8 px survives quantisation with IoU >= 0.5
        x0, y0 = rng.uniform(0, 56, 2)
        x1, y1 = x0 + rng.uniform(8, 64 - x0), y0 + rng.uniform(8, 64 - y0)
        box = (x0, y0, x1, y1)
        assert box_iou(tokens_to_box(box_to_tokens(box, 64), 64), box) >= 0.5


def test_ground_task_scores():
    task = load_task("shapes-ground", limit=4)
    exs = list(task)
    preds = [exs[0].target, "<bin_0> <bin_0> <bin_1> <bin_1>", "no box", exs[3].target]
    assert task.example_scores(exs, preds).tolist() == [1.0, 0.0, 0.0, 1.0]
    assert task.corpus_metrics(exs, preds) == {"acc@0.5": 0.5}


# --------------------------------------------------------------------------- BLEU-4

CORPUS_REFS = [
    ["a large red circle and a small blue square", "there are two objects: a small blue square and a large red circle"],
    ["a small green triangle", "a picture of a small green triangle", "a green triangle"],
    [
        "a large yellow square, a small purple circle and a large red triangle",
        "a yellow square, a purple circle and a red triangle",
    ],
    ["a small blue circle and a large blue circle", "an image with a large blue circle and a small blue circle"],
]


def nltk_bleu(refs_list, hyps):
    from nltk.translate.bleu_score import corpus_bleu

    return corpus_bleu([[caption_tokens(r) for r in refs] for refs in refs_list], [caption_tokens(h) for h in hyps])


@pytest.mark.parametrize(
    "hyps",
    [
        [
            "a large red circle and a small blue square",
            "a small green triangle",
            "a large yellow square and a small purple circle",
            "a small blue circle and a large blue circle",
        ],
        [
            "a red circle and a blue square",
            "there is a small green triangle",  # shorter: brevity penalty
            "a yellow square and a red triangle",
            "a large blue circle and a small blue circle",
        ],
        [
            "a large red circle",
            "a large green triangle",
            "a small purple circle and a large red triangle",
            "there are two blue circles",
        ],
        [
            "there are two objects: a small blue square and a large red circle, really",
            "a small green triangle",
            "a picture of a large yellow square, a small purple circle and a large red triangle",
            "an image with a large blue circle and a small blue circle",
        ],  # longer than the closest refs
    ],
)
def test_bleu4_matches_nltk(hyps):
    ours = bleu4(CORPUS_REFS, hyps)
    assert 0.0 < ours <= 1.0
    assert ours == pytest.approx(nltk_bleu(CORPUS_REFS, hyps), rel=1e-9)


def test_bleu4_edge_cases():
    refs = [["a red circle and a blue square"], ["a green triangle and a yellow circle"]]
    assert bleu4(refs, ["a red circle and a blue square", "a green triangle and a yellow circle"]) == 1.0
    assert bleu4(refs, ["", ""]) == 0.0  # empty hypotheses
    assert bleu4(refs, ["purple purple purple purple", "square square square square"]) == 0.0
    # unigram matches but no 4-gram match: 0 without smoothing (nltk returns ~1e-308 and warns)
    assert bleu4(refs, ["circle red a square", "triangle green a circle"]) == 0.0
    assert bleu4([], []) == 0.0
    with pytest.raises(ValueError):
        bleu4(refs, ["only one hypothesis"])
    # punctuation does not count: "," and ":" are dropped before scoring
    assert (
        bleu4([["a red circle, a blue square and a green circle"]], ["a red circle a blue square and a green circle ."])
        == 1.0
    )


# --------------------------------------------------------------------------- CIDEr-D


def test_cider_hand_computed():
    """Two images, one reference each; N = 2 so log N = L = ln 2.

    Document frequency over the references: "a" occurs in both (df 2), every other n-gram
    in one (df 1). idf(g) = log N - log(max(1, df(g))): "a" -> 0, everything else -> L,
    n-grams absent from all references (df 0) -> L as well.

    Image 1, hyp == ref == "a red circle":
      n=1: vec {a:0, red:L, circle:L}, |vec| = sqrt(2) L, dot = 2 L^2 -> 2L^2 / 2L^2 = 1
      n=2: {a red:L, red circle:L} -> 1;  n=3: {a red circle:L} -> L^2 / L^2 = 1;  n=4: none -> 0
      same length -> penalty 1;  CIDEr-D = 10 * mean(1, 1, 1, 0) = 7.5
    Image 2, ref "a blue square", hyp "a blue circle":
      n=1: hyp {a:0, blue:L, circle:L} (circle has df 1 from image 1), ref {a:0, blue:L, square:L}
           dot = min(L, L) L (blue) = L^2, norms sqrt(2) L each -> 1/2
      n=2: hyp {a blue:L, blue circle:L}, ref {a blue:L, blue square:L} -> L^2 / 2L^2 = 1/2
      n=3: no shared trigram -> 0;  n=4 -> 0
      CIDEr-D = 10 * mean(1/2, 1/2, 0, 0) = 2.5
    """
    refs = [["a red circle"], ["a blue square"]]
    got = cider_per_example(refs, ["a red circle", "a blue circle"])
    assert got == pytest.approx([7.5, 2.5])
    assert cider(refs, ["a red circle", "a blue circle"]) == pytest.approx(5.0)


def test_cider_length_penalty_hand_computed():
    """Image 1 with hyp "a red" against ref "a red circle" (idf as above).

    n=1: hyp {a:0, red:L}, |hyp| = L, |ref| = sqrt(2) L, dot = L^2 -> 1/sqrt(2)
    n=2: hyp {a red:L}, |hyp| = L, ref {a red:L, red circle:L} -> 1/sqrt(2)
    n=3, n=4: 0
    length (pycocoevalcap counts bigrams): hyp 1, ref 2 -> delta = -1,
    penalty = exp(-1 / (2 * 6^2)) = exp(-1/72)
    CIDEr-D = 10 * (2 / sqrt(2)) / 4 * exp(-1/72) = 3.535534 * 0.986207 = 3.486769
    """
    got = cider_per_example([["a red circle"], ["a blue square"]], ["a red", "a blue square"])
    assert got[0] == pytest.approx(10 * (2 / math.sqrt(2)) / 4 * math.exp(-1 / 72))
    assert got[0] == pytest.approx(3.486769, abs=1e-6)
    assert got[1] == pytest.approx(7.5)


def test_cider_clipping_and_multiple_refs():
    """Repeating a word cannot buy score: min(tf_hyp, tf_ref) clips it; refs average.

    refs image 1: ["a red circle", "a red square"]; image 2: ["a blue square"]. N = 2.
    df: a 2, red 1, circle 1, square 2, blue 1 ... idf: a 0, square 0, the rest L.
    hyp 1 = "red red": n=1 vec {red: 2L}, |hyp| = 2L.
      vs "a red circle": {a:0, red:L, circle:L}, |ref| = sqrt(2) L; dot = min(2L, L) L = L^2
        -> L^2 / (2L * sqrt(2) L) = 1 / (2 sqrt 2)
      vs "a red square": {a:0, red:L, square:0}, |ref| = L -> L^2 / (2L * L) = 1/2
      n=2: hyp {red red: L}, no overlap -> 0;  n=3, n=4: 0
      lengths in bigrams: hyp 1, refs 2 -> penalty exp(-1/72) for both
      CIDEr-D = 10 * (1/(2 sqrt 2) + 1/2) / 4 / 2 * exp(-1/72)
    """
    refs = [["a red circle", "a red square"], ["a blue square"]]
    got = cider_per_example(refs, ["red red", "a blue square"])
    expected = 10 * (1 / (2 * math.sqrt(2)) + 0.5) / 4 / 2 * math.exp(-1 / 72)
    assert got[0] == pytest.approx(expected)


def test_cider_edge_cases():
    refs = [
        ["a large red circle and a small blue square", "a red circle and a blue square"],
        ["a small green triangle", "a green triangle"],
        ["a large yellow square and a small purple circle", "a yellow square and a purple circle"],
    ]
    same = cider_per_example(refs, [r[0] for r in refs])
    assert (same > 3.0).all()  # identical to a reference: high
    empty = cider_per_example(refs, ["", "", ""])
    assert empty.tolist() == [0.0, 0.0, 0.0]
    assert cider_per_example(refs, ["purple", "blue", "red"]).max() < same.min()
    # idf from the evaluated set: one image alone scores 0, as in pycocoevalcap
    assert cider_per_example(refs[:1], [refs[0][0]]).tolist() == [0.0]
    assert cider_per_example([], []).shape == (0,)
    assert math.isnan(cider([], []))
    with pytest.raises(ValueError):
        cider_per_example(refs, ["a"])
    with pytest.raises(ValueError):
        cider_per_example([[]], ["a"])


def test_caption_task_scores():
    task = load_task("shapes-caption", limit=20)
    exs = list(task)
    good = task.corpus_metrics(exs, [ex.target for ex in exs])
    bad = task.corpus_metrics(exs, ["a small red circle"] * len(exs))
    assert set(good) == {"cider", "bleu4"}
    assert good["cider"] > bad["cider"] and good["bleu4"] > bad["bleu4"]
