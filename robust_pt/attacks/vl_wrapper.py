"""TextAttack's view of a vision-language model: a ModelWrapper with the image held fixed.

Why a wrapper of our own: TextAttack attacks one example at a time and asks the model
about lists of candidate texts; a plain ModelWrapper (`PlainVLWrapper`, the benchmark's
baseline) recomputes the whole model, image included, for every candidate. Here each
example's goal function gets a `SlotWrapper` that hands its texts to the lockstep
coordinator (lockstep.py), which passes every pending request of a batch of examples to
one `VLScorer`; the scorer

* computes the examples' image features once (`set_images`) and reuses them for every
  candidate text of that example;
* scores each distinct token sequence once per example: texts that tokenize alike (in
  the built-in model every out-of-vocabulary misspelling becomes <unk>, so most
  character-level candidates collapse into a handful of sequences) share one model row;
* scores the distinct (example, sequence) rows of all requests together in large batches;
* counts what it was asked (`queries`, candidate texts) and what it ran (`rows`).

Two more savings that change no result: the clean pass's logits of each original text
are handed in (`prime`), and the word-importance probe of the greedy searches puts a
word the model reads as unknown in a word's place (`unk_token`: TextAttack's "[UNK]" is
BERT's unknown token), so a misspelt candidate of that word, also unknown, is already scored.

The split image/text path exists for models with `embed_image(images)` and a text path:
either `embed_text(texts) -> (text_embeds, text_mask)` or the built-in MiniOFA's word
tokenizer and embedding table. Any other VLModel falls back to `candidate_logits` on
the repeated image (correct, just without the image cache).

This module imports textattack at import time (set up by text/setup.py);
robust_pt.attacks.text.recipes imports it only when a text attack runs. Also here: the
word-budget constraints and a local counter-fitted embedding (TextAttack's on-the-fly
neighbour search has a bug).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from .text.setup import load_textattack

load_textattack()  # NLTK data and cache set up before the imports below

from textattack.constraints import Constraint, PreTransformationConstraint  # noqa: E402
from textattack.models.wrappers import ModelWrapper  # noqa: E402
from textattack.shared import WordEmbedding  # noqa: E402

from ..models.base import Embeds  # noqa: E402


def word_limit(n_words: int, fraction: float) -> int:
    """The most words an attack may change in a text of n_words: floor(fraction * n), at least 1."""
    return max(1, int(math.floor(fraction * n_words + 1e-9)))


class VLScorer:
    """Scores candidate texts for a batch of examples, each with its own fixed image.

    `set_images(x)` computes the image features of the examples once; `score(requests)`
    takes (example slot, texts) pairs from any number of examples and runs every distinct
    (slot, token sequence) not seen before in batches of `batch_size` rows.
    """

    def __init__(self, model, answers: Sequence[str], batch_size: int = 512):
        self.model = model
        self.answers = list(answers)
        self.batch_size = int(batch_size)
        self.device = next(model.parameters()).device
        self.queries = 0  # candidate texts asked about
        self.rows = 0  # distinct (example, token sequence) pairs run through the model
        self.calls = 0  # model forward calls
        self._x: torch.Tensor | None = None
        self._feat: torch.Tensor | None = None
        self._memo: list[dict] = []
        self._path = self._text_path(model)

    @staticmethod
    def _text_path(model) -> str:
        from ..models.ofa import MiniOFA

        if hasattr(model, "embed_image") and hasattr(model, "embed_text"):
            return "embed_text"
        if isinstance(model, MiniOFA) and type(model).embed is MiniOFA.embed:
            return "word"  # the built-in model: embed = (embed_image(images), embed_tokens(word ids))
        return "full"

    def set_images(self, images: torch.Tensor, features: torch.Tensor | None = None) -> None:
        """The images (N, C, H, W) of the examples about to be attacked; slot i is images[i].

        features: their image features (Embeds.image) if already computed (the clean pass's).
        """
        x = images.detach().to(self.device)
        self._x = x
        self._memo = [{} for _ in range(x.shape[0])]
        if self._path != "full":
            if features is not None:
                self._feat = features.detach().to(self.device)
            else:
                with torch.no_grad():
                    self._feat = self.model.embed_image(x)

    def _key(self, text: str):
        if self._path == "word":
            ids = self.model.tok.encode(text)[: self.model.cfg.max_text_len]
            return tuple(ids or [self.model.tok.unk_id])
        return text

    def score(self, requests: list[tuple[int, list[str]]]) -> list[torch.Tensor]:
        """For each (slot, texts): logits (len(texts), K) over the candidate answers (CPU, float32)."""
        keyed = [(slot, [self._key(t) for t in texts]) for slot, texts in requests]
        todo = list(dict.fromkeys((slot, k) for slot, keys in keyed for k in keys if k not in self._memo[slot]))
        self.queries += sum(len(keys) for _, keys in keyed)
        for s in range(0, len(todo), self.batch_size):
            chunk = todo[s : s + self.batch_size]
            with torch.no_grad():
                logits = self._forward(chunk).float().cpu()
            self.rows += len(chunk)
            self.calls += 1
            for (slot, k), row in zip(chunk, logits):
                self._memo[slot][k] = row
        empty = torch.zeros(0, len(self.answers))
        return [torch.stack([self._memo[slot][k] for k in keys]) if keys else empty for slot, keys in keyed]

    def prime(self, slot: int, text: str, logits: torch.Tensor) -> None:
        """Record logits already computed for (slot, text), e.g. the clean pass's for the original text."""
        self._memo[slot].setdefault(self._key(text), logits.detach().float().cpu())

    def unk_token(self) -> str:
        """The text a word-importance probe puts in a word's place: one word the model reads as unknown."""
        if self._path == "word":
            word = "unk"
            while word in self.model.tok.stoi:
                word += "k"
            return word
        return "[UNK]"

    def logits(self, slot: int, text: str) -> torch.Tensor:
        """(K,) logits of one text of one slot (from the memo when it was scored)."""
        return self.score([(slot, [text])])[0][0]

    def _forward(self, rows: list) -> torch.Tensor:
        m, b = self.model, len(rows)
        slots = torch.tensor([r[0] for r in rows], device=self.device)
        keys = [r[1] for r in rows]
        if self._path == "full":
            return m.candidate_logits(self._x[slots], list(keys), self.answers)
        if self._path == "word":
            width = max(len(k) for k in keys)
            ids = torch.full((b, width), m.tok.pad_id, dtype=torch.long)
            for i, k in enumerate(keys):
                ids[i, : len(k)] = torch.tensor(k, dtype=torch.long)
            ids = ids.to(self.device)
            text, mask = m.embed_tokens(ids), ids != m.tok.pad_id
        else:
            text, mask = m.embed_text(list(keys))
        return m.candidate_logits_from_embeds(Embeds(self._feat[slots], text, mask), self.answers)


class SlotWrapper(ModelWrapper):
    """What one example's TextAttack goal function calls: hands its texts to the lockstep coordinator."""

    def __init__(self, model, lockstep):
        self.model = model  # TextAttack reads the class name from it
        self.lockstep = lockstep

    def __call__(self, text_input_list, **kwargs) -> torch.Tensor:
        texts = [t if isinstance(t, str) else " ".join(t) for t in text_input_list]
        return self.lockstep.ask(texts)


class PlainVLWrapper(ModelWrapper):
    """The baseline: every query recomputes the whole model (image included) in TextAttack's batches."""

    def __init__(self, model, answers: Sequence[str]):
        self.model = model
        self.answers = list(answers)
        self.image: torch.Tensor | None = None
        self.queries = 0

    def __call__(self, text_input_list, **kwargs) -> torch.Tensor:
        texts = list(text_input_list)
        self.queries += len(texts)
        x = self.image[None].expand(len(texts), *self.image.shape)
        with torch.no_grad():
            return self.model.candidate_logits(x, texts, self.answers).float().cpu()


# ----------------------------------------------------------------------------- budget


class WordBudget(PreTransformationConstraint):
    """No further word may be modified once word_limit(words, fraction) words were changed."""

    def __init__(self, fraction: float = 1.0):
        self.fraction = float(fraction)
        self.n_words: int | None = None  # the original text's word count (set per example)

    def limit(self, current_text) -> int:
        n = self.n_words if self.n_words is not None else current_text.num_words
        return word_limit(n, self.fraction)

    def _get_modifiable_indices(self, current_text):
        if len(current_text.attack_attrs["modified_indices"]) >= self.limit(current_text):
            return set()
        return set(range(len(current_text.words)))

    def extra_repr_keys(self):
        return ["fraction"]


class WordBudgetCheck(Constraint):
    """The same budget checked on every candidate (a transformation may change several words at once)."""

    def __init__(self, budget: WordBudget):
        super().__init__(compare_against_original=True)
        self.budget = budget

    def _check_constraint(self, transformed_text, reference_text):
        return len(transformed_text.attack_attrs["modified_indices"]) <= self.budget.limit(reference_text)

    def check_compatibility(self, transformation):
        return True


# ----------------------------------------------------------------------------- embeddings


class LocalWordEmbedding(WordEmbedding):
    """A counter-fitted embedding read from a local file; neighbours found on demand (L2, like TextAttack)."""

    def __init__(self, matrix, words: list[str]):
        super().__init__(matrix, {w: i for i, w in enumerate(words)}, dict(enumerate(words)), nn_matrix=None)
        self._torch = torch.from_numpy(matrix)

    def nearest_neighbours(self, index, topn):
        if isinstance(index, str):
            index = self._word2index[index]
        key = (int(index), int(topn))
        if key not in self._nn_cache:
            d = (self._torch - self._torch[index]).norm(dim=1)
            k = min(topn + 1, d.shape[0])
            order = d.topk(k, largest=False).indices.tolist()
            self._nn_cache[key] = [i for i in order if i != index][:topn]
        return self._nn_cache[key]
