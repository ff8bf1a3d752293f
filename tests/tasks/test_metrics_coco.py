"""Our BLEU-4 and CIDEr-D against pycocoevalcap, the COCO caption reference implementation.

Both sides see the same tokens: ours gets the raw captions, pycocoevalcap gets
`" ".join(caption_tokens(text))` (its PTBTokenizer needs Java; its scorers split on
spaces). The corpora are seeded random ShapesWorld scene descriptions, so many n-grams
are shared and every code path (clipping, length penalty, brevity penalty, 1-5 references,
empty and very short hypotheses) is exercised.

Tolerances. CIDEr-D is the same algorithm with the same order of float operations; only
np.log / np.e ** x there versus math.log / math.exp here can differ in the last bit, so
rel 1e-9 is far above what is seen (~1e-15). BLEU-4: pycocoevalcap computes each
precision as (correct + 1e-15) / (guess + 1e-9), a relative change <= 1e-9 / guess, i.e.
<= 1e-12 on these corpora (thousands of n-grams), so rel 1e-9 holds. The one real
difference: when some n-gram order has no clipped match in the whole corpus, BLEU-4 is 0
(Papineni; ours) while those epsilons make pycocoevalcap return a small positive number
(test_bleu4_no_match_differs_by_design).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from robust_pt.tasks.metrics import bleu4, caption_tokens, cider, cider_per_example
from robust_pt.tasks.vocab import COLOURS, NUMBER_WORDS, SHAPES, SIZES, WORDS

Bleu = pytest.importorskip("pycocoevalcap.bleu.bleu").Bleu
Cider = pytest.importorskip("pycocoevalcap.cider.cider").Cider

Refs = list[list[str]]


# --------------------------------------------------------------------------- random corpora


def _scene(rng: np.random.Generator) -> list[tuple[str, str, str]]:
    return [
        (str(rng.choice(SIZES)), str(rng.choice(COLOURS)), str(rng.choice(SHAPES)))
        for _ in range(int(rng.integers(1, 4)))
    ]


def _describe(objs: list[tuple[str, str, str]], rng: np.random.Generator) -> str:
    """One of several phrasings of a scene: prefixes, dropped attributes, order, punctuation."""
    parts = []
    for k in rng.permutation(len(objs)):
        size, colour, shape = objs[int(k)]
        words = [w for w, keep in ((size, rng.random() < 0.7), (colour, rng.random() < 0.9)) if keep]
        parts.append(" ".join(["a", *words, shape]))
    body = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    prefix = str(
        rng.choice(
            [
                "",
                "",
                "there is ",
                "a picture of ",
                "an image with ",
                f"there are {NUMBER_WORDS[min(len(objs), 4)]} objects: ",
            ]
        )
    )
    text = prefix + body + str(rng.choice(["", "", " ."]))
    return text.capitalize() if rng.random() < 0.2 else text


def _hypothesis(refs: list[str], objs, rng: np.random.Generator) -> str:
    """A caption a model might produce: close to the refs, wrong, truncated, salad or empty."""
    kind = rng.random()
    if kind < 0.35:  # another phrasing of the scene, a word sometimes swapped
        words = _describe(objs, rng).split()
        if rng.random() < 0.5:
            words[int(rng.integers(len(words)))] = str(rng.choice(WORDS))
        return " ".join(words)
    if kind < 0.55:
        return _describe(_scene(rng), rng)  # another scene
    if kind < 0.70:
        return " ".join(str(w) for w in rng.choice(WORDS, size=int(rng.integers(0, 13))))
    if kind < 0.80:
        return str(rng.choice(refs))  # a reference verbatim
    if kind < 0.95:
        words = str(rng.choice(refs)).split()
        return " ".join(words[: int(rng.integers(1, 4))])  # truncated: length penalty, brevity
    return ""


def random_corpus(seed: int, n: int) -> tuple[Refs, list[str]]:
    rng = np.random.default_rng(seed)
    refs_list, hyps = [], []
    for _ in range(n):
        objs = _scene(rng)
        refs = [_describe(objs, rng) for _ in range(int(rng.integers(1, 6)))]
        refs_list.append(refs)
        hyps.append(_hypothesis(refs, objs, rng))
    return refs_list, hyps


# --------------------------------------------------------------------------- pycocoevalcap


def _coco_inputs(refs_list: Refs, hyps: list[str]) -> tuple[dict, dict]:
    def tok(text: str) -> str:
        return " ".join(caption_tokens(text))

    gts = {i: [tok(r) for r in refs] for i, refs in enumerate(refs_list)}
    res = {i: [tok(h)] for i, h in enumerate(hyps)}
    return gts, res


def coco_bleu4(refs_list: Refs, hyps: list[str]) -> float:
    score, _ = Bleu(4).compute_score(*_coco_inputs(refs_list, hyps), verbose=0)
    return float(score[3])


def coco_cider(refs_list: Refs, hyps: list[str]) -> tuple[float, np.ndarray]:
    score, scores = Cider().compute_score(*_coco_inputs(refs_list, hyps))
    return float(score), np.asarray(scores, dtype=np.float64)


# --------------------------------------------------------------------------- tests


def test_corpora_exercise_the_edge_cases():
    refs_list, hyps = random_corpus(0, 300)
    lengths = [len(caption_tokens(h)) for h in hyps]
    assert {len(r) for r in refs_list} == {1, 2, 3, 4, 5}
    assert min(lengths) == 0 and max(lengths) >= 12 and sum(L < 4 for L in lengths) > 20
    assert any(h != h.lower() for h in hyps) and any("," in h or ":" in h for h in hyps)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_corpus_bleu4_matches_pycocoevalcap(seed):
    refs_list, hyps = random_corpus(seed, 300)
    ours = bleu4(refs_list, hyps)
    assert 0.05 < ours < 0.95
    assert ours == pytest.approx(coco_bleu4(refs_list, hyps), rel=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cider_matches_pycocoevalcap(seed):
    refs_list, hyps = random_corpus(seed, 300)
    coco_corpus, coco_each = coco_cider(refs_list, hyps)
    ours_each = cider_per_example(refs_list, hyps)
    assert ours_each.shape == coco_each.shape
    assert (ours_each > 0).sum() > 100 and (ours_each == 0).sum() > 5
    np.testing.assert_allclose(ours_each, coco_each, rtol=1e-9, atol=1e-12)
    assert cider(refs_list, hyps) == pytest.approx(coco_corpus, rel=1e-9)


@pytest.mark.parametrize("n", [2, 3, 7, 20])
def test_small_corpora_match(n):
    """idf from a handful of images (log N small); BLEU guesses are small, so rel 1e-8."""
    refs_list, hyps = random_corpus(100 + n, n)
    _, coco_each = coco_cider(refs_list, hyps)
    np.testing.assert_allclose(cider_per_example(refs_list, hyps), coco_each, rtol=1e-9, atol=1e-12)
    ours, ref = bleu4(refs_list, hyps), coco_bleu4(refs_list, hyps)
    if ours > 0.0:
        assert ours == pytest.approx(ref, rel=1e-8)


def test_bleu4_no_match_differs_by_design():
    """No hypothesis has 4 tokens: no 4-gram to match. BLEU-4 is 0 (ours, Papineni, sacrebleu);
    pycocoevalcap's epsilons give p4 = (0 + 1e-15) / (0 + 1e-9) = 1e-6, so a score ~0.03 here."""
    refs_list = [["a large red circle"], ["a small blue square"], ["a green triangle"]]
    hyps = ["a large red", "a small blue", "a green triangle"]
    assert bleu4(refs_list, hyps) == 0.0
    # clipped matches / guesses: unigrams 9/9, bigrams 6/6, trigrams 3/3, 4-grams 0/0;
    # hyp length 9 against closest ref lengths 4 + 4 + 3 = 11 (brevity penalty)
    precisions = [(c + 1e-15) / (g + 1e-9) for c, g in ((9, 9), (6, 6), (3, 3), (0, 0))]
    expected = math.prod(precisions) ** 0.25 * math.exp(1 - (11 + 1e-9) / (9 + 1e-15))
    assert coco_bleu4(refs_list, hyps) == pytest.approx(expected, rel=1e-9)
    assert coco_bleu4(refs_list, hyps) > 0.01
