"""The closed vocabulary of ShapesWorld: every word a template can produce, plus location bins.

This module is the leaf of `robust_pt.tasks`: the scene generator and the task templates
take their attribute words from here, so `WORDS` and the generated text cannot drift apart
(tests/tasks/test_shapes.py checks closure over many generated examples).
"""

from __future__ import annotations

import re

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple")
SIZES: tuple[str, ...] = ("small", "large")
NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four")
RELATIONS: tuple[str, ...] = ("left of", "above")
# Properties an image cannot decide: the "maybe" statements of visual entailment.
UNDECIDABLE: tuple[str, ...] = (
    "heavy",
    "new",
    "old",
    "hot",
    "cold",
    "expensive",
    "cheap",
    "soft",
    "hard",
    "made of wood",
    "made of metal",
    "made of plastic",
    "made of glass",
    "made of paper",
)

NUM_BINS = 32

# Every fixed word of every template (shapes_tasks.py); attribute words come from above.
_TEMPLATE_TEXT = (
    "what color is the ? what shape is the object ? how many objects are there ? "
    "is there a ? is the left of above ? yes no maybe "
    'does the image describe " " ? there is a are object objects the is left of above '
    'which region does the text " " describe ? what does the image describe ? '
    "a , and there are : there is one object : a picture of an image with "
)

_TOKEN_RE = re.compile(r"<bin_\d+>|[a-z]+|\d+|[^\sa-z\d]")


def tokenize(text: str) -> list[str]:
    """Split lowercased text into words, numbers, location tokens and single punctuation marks."""
    return _TOKEN_RE.findall(text.lower())


def bin_tokens() -> list[str]:
    """The NUM_BINS location tokens "<bin_0>" ... "<bin_31>", in bin order."""
    return [f"<bin_{k}>" for k in range(NUM_BINS)]


def _all_words() -> list[str]:
    parts = [_TEMPLATE_TEXT, *SHAPES, *COLOURS, *SIZES, *NUMBER_WORDS, *RELATIONS, *UNDECIDABLE]
    return sorted({tok for part in parts for tok in tokenize(part)})


WORDS: list[str] = _all_words()
