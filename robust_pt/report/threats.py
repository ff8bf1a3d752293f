"""The threats a verdict speaks of, in the order it speaks of them.

A leaf (no imports of its own): the verdict (verdict.py) decides each comparison's threat,
and the count table (tables.py) orders its rows by them, without importing each other.
"""

WHITE_BOX = "white-box and query attacks on the model itself"
FROM_BASE = "transferred from the public base"
FROM_SIBLING = "transferred from a tuned sibling"
CORRUPTIONS = "natural corruptions"
CERTIFIED = "certified by randomized smoothing (a lower bound: no attack can do better)"
#: the order of the verdict's sentences
THREATS = (WHITE_BOX, FROM_BASE, FROM_SIBLING, CORRUPTIONS, CERTIFIED)
#: the method label of the public base (the pretrained, untuned checkpoint tuning/train.py writes): as
#: REFERENCE names the reference method, this names the source the transfer threat is measured from
PUBLIC_BASE = "pretrain"
#: the count table's name for cells no threat counts (verdict.threat: None)
LEFT_OUT = "left out: white-box on one side only"
