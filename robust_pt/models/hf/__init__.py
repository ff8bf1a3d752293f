"""Hugging Face model families behind the VLModel interface, one module per family, each
declaring and registering its HFFamily (robust_pt/models/loading.py): vilt.py, blip.py, clip.py, siglip.py,
and generative.py's subclasses llava.py (LLaVA, LLaVA-NeXT), paligemma.py, idefics3.py and
qwen2vl.py (Qwen2-VL, Qwen2.5-VL); base.py is what they share (HFVLModel, loading a directory),
adapters.py loads peft adapter directories and delta.py methods peft does not have (APT).

Importing this package imports the family modules in FAMILY_MODULES' order, which registers
their families in that order; robust_pt/models/loading.py imports it the first time it needs them.
A new family is a module here plus its name in FAMILY_MODULES.
"""

from importlib import import_module

FAMILY_MODULES = ("vilt", "blip", "clip", "siglip", "llava", "paligemma", "idefics3", "qwen2vl")

for _module in FAMILY_MODULES:
    import_module(f"{__name__}.{_module}")
