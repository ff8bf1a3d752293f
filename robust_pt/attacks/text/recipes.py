"""Text attacks through TextAttack 0.3.10: its recipes against a VLModel's question text.

Why TextAttack: users know its recipes (goal function + constraints + transformation +
search). Each recipe here is TextAttack's own, with the untargeted goal over the task's
candidate answers, and adapted to run offline:

  deepwordbug  character swaps/substitutions/deletions/insertions, greedy WIR (as published)
  pwws         WordNet synonyms, weighted-saliency WIR (as published; WordNet from `robust-pt setup`)
  textbugger   character bugs + embedding neighbours (--embeddings); without the USE constraint
  textfooler   embedding neighbours (--embeddings), cos-sim >= 0.5; without USE and POS constraints
  bert-attack  masked-LM substitutes (--mlm); without USE
  bae          masked-LM replacements (--mlm), BAE-R; without USE and POS constraints
  pruthi       keyboard typos, greedy search (as published)

(USE, POS taggers and default MLMs/embeddings are downloads; the local resources are
taken by path.) Every recipe also gets a word budget: at most
max(1, floor(fraction * words)) words changed, where the fraction is the text attack's
eps (its pseudo-eps, see presets.py) or a joint attack's `max_words_fraction`, and an
optional query budget (`queries`). The instruction is attacked whole; TextAttack's
stop-word constraint keeps question words, and quotes and punctuation are never words.

`import robust_pt` never imports TextAttack: `load_textattack()`
(robust_pt/attacks/text/setup.py) does, on the first text attack, after pointing
NLTK_DATA and TA_CACHE_DIR into the project cache.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from ...errors import AttackError
from ..presets import AttackSpec, needing
from .setup import _quiet, ensure_offline_data, load_textattack

EMBEDDINGS_HELP = (
    "counter-fitted word vectors as a text file of 'word v1 v2 ...' lines (e.g. "
    "counter-fitted-vectors.txt from github.com/nmrksic/counter-fitting)"
)
MLM_HELP = "a local Hugging Face masked-LM directory (e.g. bert-base-uncased saved with save_pretrained)"


# ----------------------------------------------------------------------------- resources


def check_resources(spec: AttackSpec) -> None:
    """Before anything runs or is written: the resources the recipe needs exist and look right."""
    recipe = spec.text_recipe
    if recipe in needing("embeddings"):
        if not spec.embeddings:
            raise AttackError(
                f"{recipe} needs counter-fitted word embeddings (robust-pt downloads nothing); "
                f"pass --embeddings PATH ({EMBEDDINGS_HELP})"
            )
        read_embeddings(spec.embeddings)
    if recipe in needing("mlm"):
        if not spec.mlm:
            raise AttackError(
                f"{recipe} needs a masked language model (robust-pt downloads nothing); pass --mlm PATH ({MLM_HELP})"
            )
        p = Path(spec.mlm)
        if not p.is_dir() or not (p / "config.json").is_file():
            raise AttackError(f"--mlm {p} is not a masked-LM directory (no config.json); pass {MLM_HELP}")
        load_mlm(spec.mlm)
    if recipe == "pwws":
        if any("WordNet" in m for m in ensure_offline_data()):
            raise AttackError(
                "pwws needs NLTK's WordNet, which is missing; run `robust-pt setup` "
                "(it copies the system's WordNet into robust-pt's cache and says how to get it when missing)"
            )


_LOADED: dict = {}  # the last embeddings / MLM read, keyed by (kind, path, size, mtime): checked once, used once


def _cached(kind: str, path: str | Path, load):
    p = Path(path)
    st = p.stat()
    key = (kind, str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _LOADED:
        value = load()
        for k in [k for k in _LOADED if k[0] == kind]:
            del _LOADED[k]
        _LOADED[key] = value
    return _LOADED[key]


def read_embeddings(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Words and a float32 matrix from a counter-fitted text file; AttackError on another format.

    Format: one word per line followed by its D numbers, separated by white space; an
    optional first line "count dim" (word2vec text format) is skipped. The file is read
    once per run (the check before the run and the attack share it).
    """
    p = Path(path)
    if not p.is_file():
        raise AttackError(f"--embeddings {p} does not exist; pass {EMBEDDINGS_HELP}")
    return _cached("embeddings", p, lambda: _parse_embeddings(p))


def _parse_embeddings(p: Path) -> tuple[list[str], np.ndarray]:
    def bad(why: str) -> AttackError:
        return AttackError(f"--embeddings {p} is not in the counter-fitted format: {why}; pass {EMBEDDINGS_HELP}")

    words: list[str] = []
    rows: list[np.ndarray] = []
    try:
        with open(p, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                parts = line.split()
                if not parts or (i == 1 and len(parts) == 2 and all(t.isdigit() for t in parts)):
                    continue  # blank line, word2vec header
                if len(parts) < 2:
                    raise bad(f"line {i} has a word but no vector")
                try:
                    v = np.asarray(parts[1:], dtype=np.float32)
                except ValueError:
                    raise bad(f"line {i} holds a non-number among its values") from None
                if rows and v.shape != rows[0].shape:
                    raise bad(f"line {i} has {v.shape[0]} numbers, the first vector {rows[0].shape[0]}")
                words.append(parts[0])
                rows.append(v)
    except UnicodeDecodeError:
        raise AttackError(f"--embeddings {p} is not a text file; pass {EMBEDDINGS_HELP}") from None
    if not rows:
        raise bad("no vectors")
    mat = np.stack(rows)
    if not np.isfinite(mat).all():
        raise bad("non-finite values")
    if len(words) < 2:
        raise bad("a single word (a swap needs neighbours)")
    return words, mat


def load_embedding(path: str):
    """The file as a TextAttack WordEmbedding (one object per file, shared by every example's attack)."""
    from ..vl_wrapper import LocalWordEmbedding

    words, mat = read_embeddings(path)
    return _cached("embedding-object", path, lambda: LocalWordEmbedding(mat, [w.lower() for w in words]))


def load_mlm(path: str):
    """(model, tokenizer) of a local masked LM, offline (read once per run)."""
    return _cached("mlm", Path(path) / "config.json", lambda: _load_mlm(path))


def _load_mlm(path: str):
    try:
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = AutoModelForMaskedLM.from_pretrained(path, local_files_only=True)
            tok = AutoTokenizer.from_pretrained(path, local_files_only=True, use_fast=True)
    except (OSError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise AttackError(
            f"--mlm {path} cannot be loaded as a masked LM with its tokenizer ({first}); pass {MLM_HELP}"
        ) from None
    model.eval()
    return model, tok


# ----------------------------------------------------------------------------- recipes


# Each recipe (registered with its parameters in attacks/methods.py): (spec, the default constraints)
# -> (transformation, constraints, search), TextAttack's pieces imported inside (textattack is lazy).
_EDGE = dict(skip_first_char=True, skip_last_char=True)


def _deepwordbug(spec, cons):
    from textattack import transformations as T
    from textattack.constraints.overlap import LevenshteinEditDistance
    from textattack.search_methods import GreedyWordSwapWIR

    trans = T.CompositeTransformation(
        [
            T.WordSwapNeighboringCharacterSwap(),
            T.WordSwapRandomCharacterSubstitution(),
            T.WordSwapRandomCharacterDeletion(),
            T.WordSwapRandomCharacterInsertion(),
        ]
    )
    return trans, [*cons, LevenshteinEditDistance(30)], GreedyWordSwapWIR()


def _pwws(spec, cons):
    from textattack import transformations as T
    from textattack.search_methods import GreedyWordSwapWIR

    from ...runtime.offline import no_nltk_downloads

    with no_nltk_downloads():
        trans = T.WordSwapWordNet()
    return trans, cons, GreedyWordSwapWIR("weighted-saliency")


def _textbugger(spec, cons):
    from textattack import transformations as T
    from textattack.search_methods import GreedyWordSwapWIR

    emb = load_embedding(spec.embeddings)
    trans = T.CompositeTransformation(
        [
            T.WordSwapRandomCharacterInsertion(random_one=True, letters_to_insert=" ", **_EDGE),
            T.WordSwapRandomCharacterDeletion(random_one=True, **_EDGE),
            T.WordSwapNeighboringCharacterSwap(random_one=True, **_EDGE),
            T.WordSwapHomoglyphSwap(),
            T.WordSwapEmbedding(max_candidates=5, embedding=emb),
        ]
    )
    return trans, cons, GreedyWordSwapWIR(wir_method="delete")


def _textfooler(spec, cons):
    from textattack import transformations as T
    from textattack.constraints.semantics import WordEmbeddingDistance
    from textattack.search_methods import GreedyWordSwapWIR

    emb = load_embedding(spec.embeddings)
    trans = T.WordSwapEmbedding(max_candidates=50, embedding=emb)
    return trans, [*cons, WordEmbeddingDistance(embedding=emb, min_cos_sim=0.5)], GreedyWordSwapWIR(wir_method="delete")


def _masked_lm(recipe, spec, cons):
    """bert-attack (48 candidates, unk ranking) and bae (50 candidates, delete ranking)."""
    from textattack import transformations as T
    from textattack.search_methods import GreedyWordSwapWIR

    lm, tok = load_mlm(spec.mlm)
    max_len = min(512, int(getattr(lm.config, "max_position_embeddings", 512) or 512))
    if recipe == "bert-attack":
        trans = T.WordSwapMaskedLM(
            method="bert-attack", masked_language_model=lm, tokenizer=tok, max_candidates=48, max_length=max_len
        )
        return trans, cons, GreedyWordSwapWIR(wir_method="unk")
    trans = T.WordSwapMaskedLM(
        method="bae", masked_language_model=lm, tokenizer=tok, max_candidates=50, min_confidence=0.0, max_length=max_len
    )
    return trans, cons, GreedyWordSwapWIR(wir_method="delete")


def _pruthi(spec, cons):
    from textattack import transformations as T
    from textattack.constraints.pre_transformation import MinWordLength, RepeatModification, StopwordModification
    from textattack.search_methods import GreedySearch

    trans = T.CompositeTransformation(
        [
            T.WordSwapNeighboringCharacterSwap(random_one=False, **_EDGE),
            T.WordSwapRandomCharacterDeletion(random_one=False, **_EDGE),
            T.WordSwapRandomCharacterInsertion(random_one=False, **_EDGE),
            T.WordSwapQWERTY(random_one=False, **_EDGE),
        ]
    )
    return trans, [MinWordLength(min_length=4), StopwordModification(), RepeatModification()], GreedySearch()


RECIPES = {
    "deepwordbug": _deepwordbug,
    "pwws": _pwws,
    "textbugger": _textbugger,
    "textfooler": _textfooler,
    "bert-attack": partial(_masked_lm, "bert-attack"),
    "bae": partial(_masked_lm, "bae"),
    "pruthi": _pruthi,
}


def build_attack(recipe: str, wrapper, budget, spec: AttackSpec, batch_size: int = 256, unk_token: str = "[UNK]"):
    """TextAttack's recipe `recipe` (offline, see the module docstring) with our word budget.

    unk_token: what the word-importance ranking puts in a word's place; TextAttack's
    "[UNK]" is BERT's unknown token, so for another tokenizer pass a string it reads as
    its own unknown token (VLScorer.unk_token()).
    """
    load_textattack()
    from textattack import Attack
    from textattack.constraints.pre_transformation import RepeatModification, StopwordModification
    from textattack.goal_functions import UntargetedClassification
    from textattack.search_methods import GreedyWordSwapWIR

    from ..vl_wrapper import WordBudgetCheck

    if recipe not in RECIPES:
        raise AttackError(f"unknown text attack recipe {recipe!r}")
    with _quiet():
        goal = UntargetedClassification(wrapper, query_budget=spec.queries or float("inf"), model_batch_size=batch_size)
    trans, cons, search = RECIPES[recipe](spec, [RepeatModification(), StopwordModification()])
    if isinstance(search, GreedyWordSwapWIR):
        search.unk_token = unk_token
    return Attack(goal, [*cons, budget, WordBudgetCheck(budget)], trans, search)


# ----------------------------------------------------------------------------- running


@dataclass
class TextResult:
    """One example's text attack (the adversarial text is the last one tried when it failed)."""

    adv_text: str
    succeeded: bool  # TextAttack's verdict (the engine judges by `logits`)
    words_changed: int  # words modified (TextAttack's modified_indices)
    n_words: int  # words of the original text
    max_words: int  # the budget: max(1, floor(fraction * n_words))
    queries: int  # candidate texts scored over the whole search (TextAttack's goal-function count)
    logits: "object" = None  # (K,) logits at the adversarial text (and the example's image)


class TextRunner:
    """One TextAttack attack for a whole run, run on batches of examples in lockstep.

    Every example of a batch gets its own TextAttack `Attack` (goal function, budget and
    caches are per example; transformations share loaded embeddings / MLMs) and its own
    thread; lockstep.py makes them take turns and batches their queries into one
    `VLScorer` call per search step. `width` examples at most run together.
    """

    def __init__(self, spec: AttackSpec, model, answers, width: int = 64, batch_size: int = 512):
        from ..lockstep import Lockstep
        from ..vl_wrapper import VLScorer

        self.spec, self.model = spec, model
        self.recipe = spec.text_recipe
        self.width = max(1, int(width))
        self.scorer = VLScorer(model, answers, batch_size=batch_size)
        self.lockstep = Lockstep()
        self._pool: list = []  # (Attack, WordBudget) per slot, built on first use

    def _slot(self, j: int):
        from ..vl_wrapper import SlotWrapper, WordBudget

        while len(self._pool) <= j:
            budget = WordBudget()
            attack = build_attack(
                self.recipe,
                SlotWrapper(self.model, self.lockstep),
                budget,
                self.spec,
                batch_size=1 << 30,
                unk_token=self.scorer.unk_token(),
            )
            self._pool.append((attack, budget))
        return self._pool[j]

    def run(self, image, text: str, label: int, *, fraction: float, seed: int) -> TextResult:
        """Attack one example (image (C, H, W) fixed, clean or adversarial)."""
        return self.run_many(image[None], [text], [label], fraction=fraction, seeds=[seed])[0]

    def run_many(self, images, texts, labels, *, fraction: float, seeds, known=None, features=None) -> list[TextResult]:
        """Attack each (images[i], texts[i], labels[i]); the results do not depend on the grouping.

        known: optional logits of each original text with its image (the clean pass's), and
        features: the images' features (Embeds.image) when already computed; both reused.
        """
        out: list[TextResult] = []
        known = list(known) if known is not None else [None] * len(texts)
        for s in range(0, len(texts), self.width):
            sl = slice(s, s + self.width)
            out += self._chunk(
                images[sl],
                list(texts[sl]),
                [int(v) for v in labels[sl]],
                fraction,
                list(seeds[sl]),
                known[sl],
                None if features is None else features[sl],
            )
        return out

    def _chunk(self, images, texts, labels, fraction, seeds, known, features) -> list[TextResult]:
        from functools import partial

        self.scorer.set_images(images, features=features)
        for j, lg in enumerate(known):
            if lg is not None:
                self.scorer.prime(j, texts[j], lg)
        fns = [partial(self._one, j, texts[j], labels[j], fraction) for j in range(len(texts))]
        with _quiet(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for j in range(len(texts)):
                self._slot(j)
            results = self.lockstep.run(fns, seeds, self._score)
        for j, r in enumerate(results):
            r.logits = self.scorer.logits(j, r.adv_text)
        return results

    def _score(self, requests):
        return self.scorer.score(requests)

    def _one(self, j: int, text: str, label: int, fraction: float) -> TextResult:
        from textattack.attack_results import SkippedAttackResult, SuccessfulAttackResult
        from textattack.shared import AttackedText

        from ..vl_wrapper import word_limit

        attack, budget = self._pool[j]
        original = AttackedText(text)
        n = len(original.words)
        budget.fraction, budget.n_words = float(fraction), n
        attack.clear_cache()
        res = attack.attack(original, int(label))
        final = res.original_result if isinstance(res, SkippedAttackResult) else res.perturbed_result
        adv = final.attacked_text
        return TextResult(
            adv_text=adv.text,
            succeeded=isinstance(res, SuccessfulAttackResult),
            words_changed=len(adv.attack_attrs.get("modified_indices", ())),
            n_words=n,
            max_words=word_limit(n, fraction),
            queries=int(attack.goal_function.num_queries),
        )


def words_fraction(changed: int, n_words: int) -> float:
    return changed / n_words if n_words else math.nan
