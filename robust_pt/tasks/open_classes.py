"""Whether a model tuned on one task may be evaluated on another: zero-shot classification to new classes.

A kind with open classes (tasks/classify.py) scores any class names a dual encoder reads, so a model
tuned on base classes is attacked on novel ones (CoCoOp's base-to-novel protocol), as a target
(engine/prepare.py) or as a transfer surrogate (attacks/transfer.py). Every other kind answers from
the list it was tuned on.
"""

from __future__ import annotations

from . import formats, named
from .kinds import get


def other_classes(kind: str, trained: str) -> bool:
    """A model tuned on `trained` may be evaluated on a task of `kind` (another class set of one open kind)."""
    source = named.lookup(trained) or (formats.lookup(named.dataset_spec(trained)[0]) if ":" in trained else None)
    return get(kind).open_classes and source is not None and source.kind == kind
