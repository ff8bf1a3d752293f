"""Hugging Face model families behind the VLModel interface, one module per family:
base.py (ViLT, BLIP, CLIP and the shared loading), generative.py and its subclasses
(llava, paligemma, idefics3, qwen2vl), adapters.py (peft adapter directories) and
delta.py (methods peft does not have, such as APT)."""
