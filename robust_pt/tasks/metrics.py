"""Task metrics: box IoU and location tokens (grounding), corpus BLEU-4 and CIDEr-D (captioning).

Caption metrics follow the COCO caption evaluation (pycocoevalcap): texts are lowercased
and tokenised (here with `vocab.tokenize`), punctuation tokens are dropped, then
  * BLEU-4 is corpus BLEU (Papineni et al. 2002): clipped n-gram precisions summed over the
    corpus for n = 1..4, geometric mean, brevity penalty against the closest reference
    length; it equals nltk's `corpus_bleu` on the same tokens (no smoothing) whenever
    every hypothesis has at least 4 tokens (nltk counts at least one n-gram per sentence
    in the precision denominators; Papineni's definition, used here, does not).
  * CIDEr-D is pycocoevalcap's CiderScorer: tf-idf n-gram vectors (n = 1..4) with document
    frequencies from the references of the evaluated set, clipped cosine similarity, a
    gaussian length penalty (sigma = 6), mean over n, mean over references, times 10.
    Because idf comes from the evaluated set, scores depend on the set (a single-example
    set scores 0), exactly as in the reference implementation.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Sequence

import numpy as np

from .vocab import NUM_BINS, tokenize

Box = tuple[float, float, float, float]

_BIN_RE = re.compile(r"<bin_(\d+)>")
# Punctuation removed before caption scoring, as pycocoevalcap's PTBTokenizer does.
_PUNCT = frozenset({"'", "`", "-", ".", "?", "!", ",", ":", ";", '"', "(", ")", "[", "]", "{", "}"})


# --------------------------------------------------------------------------- boxes


def box_iou(a: Sequence[float] | None, b: Sequence[float] | None) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes; 0 if either is None or empty."""
    if a is None or b is None:
        return 0.0
    ax0, ay0, ax1, ay1 = (float(v) for v in a)
    bx0, by0, bx1, by1 = (float(v) for v in b)
    iw = min(ax1, bx1) - max(ax0, bx0)
    ih = min(ay1, by1) - max(ay0, by0)
    inter = max(0.0, iw) * max(0.0, ih)
    area_a = max(0.0, ax1 - ax0) * max(0.0, ay1 - ay0)
    area_b = max(0.0, bx1 - bx0) * max(0.0, by1 - by0)
    union = area_a + area_b - inter
    return inter / union if union > 0.0 else 0.0


def coord_to_bin(c: float, image_size: int) -> int:
    """Bin k covers [k*S/NUM_BINS, (k+1)*S/NUM_BINS); coordinates outside are clamped."""
    return max(0, min(int(float(c) * NUM_BINS / image_size), NUM_BINS - 1))


def bin_to_coord(k: int, image_size: int) -> float:
    """The centre of bin k in pixels."""
    return (k + 0.5) * image_size / NUM_BINS


def box_to_tokens(box: Sequence[float], image_size: int) -> str:
    """ "<bin_a> <bin_b> <bin_c> <bin_d>" for a pixel box (x0, y0, x1, y1)."""
    if len(box) != 4:
        raise ValueError(f"a box has 4 coordinates (x0, y0, x1, y1), got {len(box)}")
    return " ".join(f"<bin_{coord_to_bin(c, image_size)}>" for c in box)


def tokens_to_box(text: str, image_size: int) -> Box | None:
    """Decode the first four <bin_k> tokens of `text` into a pixel box (bin centres).

    Returns None when there are fewer than four location tokens or one names a bin
    >= NUM_BINS (box_iou then gives 0).
    """
    bins = [int(m) for m in _BIN_RE.findall(text or "")[:4]]
    if len(bins) < 4 or any(k >= NUM_BINS for k in bins):
        return None
    x0, y0, x1, y1 = (bin_to_coord(k, image_size) for k in bins)
    return (x0, y0, x1, y1)


# --------------------------------------------------------------------------- captions


def caption_tokens(text: str) -> list[str]:
    """The tokens caption metrics compare: vocab.tokenize without punctuation."""
    return [t for t in tokenize(text or "") if t not in _PUNCT]


def _ngrams(tokens: Sequence[str], n_max: int = 4) -> Counter:
    counts: Counter = Counter()
    for n in range(1, n_max + 1):
        for i in range(len(tokens) - n + 1):
            counts[tuple(tokens[i : i + n])] += 1
    return counts


def _check(refs_list: Sequence[Sequence[str]], hyps: Sequence[str]) -> None:
    if len(refs_list) != len(hyps):
        raise ValueError(f"{len(hyps)} hypotheses for {len(refs_list)} reference sets; give one each")
    for refs in refs_list:
        if isinstance(refs, str) or len(refs) == 0:
            raise ValueError("each example needs a non-empty list of reference strings")


def bleu4(refs_list: Sequence[Sequence[str]], hyps: Sequence[str]) -> float:
    """Corpus BLEU-4 in [0, 1] (uniform weights, brevity penalty, no smoothing)."""
    _check(refs_list, hyps)
    matches = [0] * 4
    totals = [0] * 4
    hyp_len = ref_len = 0
    for refs, hyp in zip(refs_list, hyps):
        h = caption_tokens(hyp)
        rs = [caption_tokens(r) for r in refs]
        for n in range(1, 5):
            h_counts = Counter(tuple(h[i : i + n]) for i in range(len(h) - n + 1))
            max_ref: Counter = Counter()
            for r in rs:
                for g, c in Counter(tuple(r[i : i + n]) for i in range(len(r) - n + 1)).items():
                    if c > max_ref[g]:
                        max_ref[g] = c
            matches[n - 1] += sum(min(c, max_ref[g]) for g, c in h_counts.items())
            totals[n - 1] += max(0, len(h) - n + 1)
        hyp_len += len(h)
        ref_len += min((len(r) for r in rs), key=lambda L: (abs(L - len(h)), L))
    if hyp_len == 0 or any(m == 0 for m in matches):
        return 0.0
    log_p = sum(math.log(m / t) for m, t in zip(matches, totals)) / 4.0
    bp = 1.0 if hyp_len > ref_len else math.exp(1.0 - ref_len / hyp_len)
    return float(bp * math.exp(log_p))


def cider_per_example(
    refs_list: Sequence[Sequence[str]],
    hyps: Sequence[str],
    n: int = 4,
    sigma: float = 6.0,
    df_refs: Sequence[Sequence[str]] | None = None,
) -> np.ndarray:
    """CIDEr-D of each hypothesis against its references, idf from this set's references (or from
    `df_refs`, another corpus: a targeted caption scored against its target with the run's idf)."""
    _check(refs_list, hyps)
    if not hyps:
        return np.zeros(0, dtype=np.float64)
    crefs = [[_ngrams(caption_tokens(r), n) for r in refs] for refs in refs_list]
    ctest = [_ngrams(caption_tokens(h), n) for h in hyps]
    corpus = crefs if df_refs is None else [[_ngrams(caption_tokens(r), n) for r in refs] for refs in df_refs]
    df: Counter = Counter()
    for refs in corpus:
        for g in {g for r in refs for g in r}:
            df[g] += 1
    log_n = math.log(float(len(corpus)))

    def vec(counts: Counter) -> tuple[list[dict], list[float], int]:
        v: list[dict] = [{} for _ in range(n)]
        norm = [0.0] * n
        length = 0
        for g, tf in counts.items():
            k = len(g) - 1
            w = float(tf) * (log_n - math.log(max(1.0, df[g])))
            v[k][g] = w
            norm[k] += w * w
            if k == 1:  # pycocoevalcap measures length in bigrams
                length += tf
        return v, [math.sqrt(x) for x in norm], length

    scores = np.zeros(len(hyps), dtype=np.float64)
    for i, (test, refs) in enumerate(zip(ctest, crefs)):
        vh, nh, lh = vec(test)
        total = np.zeros(n)
        for ref in refs:
            vr, nr, lr = vec(ref)
            penalty = math.exp(-((lh - lr) ** 2) / (2.0 * sigma**2))
            for k in range(n):
                if nh[k] == 0.0 or nr[k] == 0.0:
                    continue
                dot = sum(min(w, vr[k].get(g, 0.0)) * vr[k].get(g, 0.0) for g, w in vh[k].items())
                total[k] += dot / (nh[k] * nr[k]) * penalty
        scores[i] = float(total.mean()) / len(refs) * 10.0
    return scores


def cider(refs_list: Sequence[Sequence[str]], hyps: Sequence[str]) -> float:
    """Corpus CIDEr-D: the mean of `cider_per_example`."""
    s = cider_per_example(refs_list, hyps)
    return float(s.mean()) if len(s) else float("nan")
