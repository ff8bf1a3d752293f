"""The models robust-pt attacks: the VLModel interface (base.py), the built-in miniature OFA
(ofa.py), Hugging Face families and peft adapters (hf/: one module per family, hf/adapters.py), and the
registry of model families that recognises a checkpoint and loads it (loading.py)."""
