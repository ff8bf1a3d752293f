"""The models robust-pt attacks: the VLModel interface (base.py), the built-in miniature OFA
(ofa.py), Hugging Face families and peft adapters (hf.py, hf_peft.py, hf_tiny.py), and the
registry of model families that recognises a checkpoint and loads it (loading.py)."""
