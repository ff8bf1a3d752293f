"""Natural text corruptions as a threat model: typo-style noise in the question at severities 1-5.

Why: the adaptation-robustness benchmark of Chen et al. (NeurIPS 2023 D&B) puts adapted VLMs
under text corruptions as well as image ones; a user's question has typos without anyone
optimising them. A preset of kind `text-corruption` names one corruption; its eps are
severities (integers 1-5): severity s corrupts s/10 of the question's words (rounded half up), at
least one (s = 5: half of them). The words are the text as the model reads it (for VE,
grounding and captioning that includes the task's instruction around the statement). Not an attack: nothing looks at the model; each question is
corrupted the same way for the same (run seed, example id, severity, corruption), and the
victim judges the clean image with the corrupted question (every clean-correct example at
every severity, as for image corruptions; records keep the corrupted text in `adv_text`).

The character-level corruptions are TextAttack's transformations (already a dependency), one
candidate per chosen word, drawn under a seeded random state that is restored afterwards:

  char-swap    WordSwapNeighboringCharacterSwap   two neighbouring characters swapped
  char-delete  WordSwapRandomCharacterDeletion    one character deleted
  char-insert  WordSwapRandomCharacterInsertion   one random letter inserted
  keyboard     WordSwapQWERTY                     one character replaced by a keyboard neighbour
  homoglyph    WordSwapHomoglyphSwap              one character replaced by a look-alike glyph
  word-drop    the chosen words deleted (at least one word stays)
  word-order   as many swaps of two neighbouring words, at distinct places (words_changed counts
               the words that moved)
"""

from __future__ import annotations

import contextlib
import math
import random
from dataclasses import replace

import numpy as np

from ...errors import AttackError
from .. import methods
from ..core import Bound, Outcome
from ..corruptions import SeverityThreat

TRANSFORMATIONS = {
    "char-swap": "WordSwapNeighboringCharacterSwap",
    "char-delete": "WordSwapRandomCharacterDeletion",
    "char-insert": "WordSwapRandomCharacterInsertion",
    "keyboard": "WordSwapQWERTY",
    "homoglyph": "WordSwapHomoglyphSwap",
}
TEXT_CORRUPTIONS = (*TRANSFORMATIONS, "word-drop", "word-order")
for _name in TEXT_CORRUPTIONS:  # registered as every attack method is (attacks/methods.py)
    methods.register(methods.AttackMethod(_name, "text-corruption", methods.SeverityParams, ("ours",)))
RECORD_FIELDS = {"adv_text": None, "words_changed": 0, "words_fraction": 0.0, "max_words": None}
_made: dict = {}


def words_to_corrupt(n_words: int, severity: int) -> int:
    """severity/10 of the words rounded half up, at least one (0 for an empty text)."""
    return min(n_words, max(1, math.floor(severity * n_words / 10 + 0.5))) if n_words else 0


@contextlib.contextmanager
def _seeded(seed: int):
    """Python's and numpy's global generators seeded for the block (TextAttack draws from both), then restored."""
    py, npy = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)


def _transformation(name: str):
    if name not in _made:
        from .setup import load_textattack

        load_textattack()
        import textattack.transformations as T

        cls = getattr(T, TRANSFORMATIONS[name])
        _made[name] = cls(random_one=True)
    return _made[name]


def corrupt_text(text: str, name: str, severity: int, seed: int) -> tuple[str, int]:
    """(the corrupted text, the number of words changed); the same for the same seed."""
    if name not in TEXT_CORRUPTIONS:
        raise AttackError(f"unknown text corruption {name!r}; choose one of {', '.join(TEXT_CORRUPTIONS)}")
    if severity not in (1, 2, 3, 4, 5):
        raise AttackError(f"corruption severity must be an integer from 1 to 5, got {severity!r}")
    words = text.split()
    k = words_to_corrupt(len(words), severity)
    rng = np.random.default_rng(seed)
    if name == "word-drop":
        k = min(k, len(words) - 1)
        drop = set(rng.choice(len(words), size=k, replace=False).tolist()) if k > 0 else set()
        return " ".join(w for i, w in enumerate(words) if i not in drop), len(drop)
    if name == "word-order":  # k swaps of neighbouring pairs at distinct places (none undoes another)
        before = list(words)
        places = min(k, len(words) - 1)
        for i in sorted(rng.choice(len(words) - 1, size=places, replace=False).tolist()) if places > 0 else []:
            words[i], words[i + 1] = words[i + 1], words[i]
        return " ".join(words), sum(a != b for a, b in zip(before, words))
    t = _transformation(name)
    changed = 0
    for i in sorted(rng.choice(len(words), size=k, replace=False).tolist()) if k else []:
        with _seeded(int(rng.integers(2**63 - 1))):
            cands = t._get_replacement_words(words[i])
        if cands and cands[0] != words[i]:
            words[i], changed = cands[0], changed + 1
    return " ".join(words), changed


class _TextCorruptionBound(Bound):
    def perturb(self, b, examples, index, x0, eps, restart):
        from ..threats import derive_seed

        name, severity = self.spec.method, int(round(eps))
        out = [
            corrupt_text(ex.text, name, severity, derive_seed(self.seed, ex.id, severity, "text", name))
            for ex in examples
        ]
        corrupted = [replace(ex, text=t) for ex, (t, _) in zip(examples, out)]
        preds = self.victim.judge_images(x0, corrupted)
        zeros = np.zeros(len(examples))
        extra = [
            {
                "adv_text": t,
                "words_changed": n,
                "words_fraction": n / max(len(ex.text.split()), 1),
                "max_words": words_to_corrupt(len(ex.text.split()), severity),
            }
            for ex, (t, n) in zip(examples, out)
        ]
        return Outcome(
            preds,
            self.victim.scores(examples, index, preds),
            zeros,
            zeros,
            np.ones(len(examples), dtype=np.int64),
            None,
            None,
            extra,
        )


class TextCorruption(SeverityThreat):
    """Presets of kind `text-corruption`: `method` one of TEXT_CORRUPTIONS, eps severities 1-5."""

    name = "text-corruption"
    needs = frozenset({"vl", "text"})
    perturbs, image_only = "text", False
    record_fields = RECORD_FIELDS
    methods = TEXT_CORRUPTIONS

    def no_vl_message(self, attack, model_name: str) -> str:
        return (
            f"{attack.name} corrupts the question text of a vision-language model; {model_name} is an "
            f"image-only classifier with no text input (use an image corruption such as fog)"
        )

    def bind(self, victim, spec, seed: int) -> Bound:
        return _TextCorruptionBound(self, victim, spec, seed)


TEXT_CORRUPTION = TextCorruption()
