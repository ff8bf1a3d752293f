"""Apply a tuning method to a MiniOFA: add its modules, freeze the rest, say what trains.

Order matters for loading: base weights go into the plain model first, then the method
is applied, then the method's own tensors are loaded (tuning/checkpoint.py).
"""

from __future__ import annotations

from torch import nn

from .config import TuningConfig

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]


def apply_method(model, tcfg: TuningConfig) -> None:
    """Mutate `model` in place so that exactly the method's parameters require grad."""
    m = tcfg.method
    if m == "finetune":
        for p in model.parameters():
            p.requires_grad_(True)
        return
    for p in model.parameters():
        p.requires_grad_(False)
    if m == "prompt":
        from .prompt import DeepPrompt

        model.prompt = DeepPrompt(model, tcfg.prompt_length, tcfg.prompt_depth, tcfg.prompt_reparam,
                                  tcfg.prompt_dropout)
    elif m == "adapter":
        from .adapter import add_adapters

        add_adapters(model, tcfg.adapter_dim)
    elif m == "bitfit":
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.requires_grad_(True)
    elif m == "lora":
        from peft import LoraConfig, inject_adapter_in_model

        inject_adapter_in_model(LoraConfig(r=tcfg.lora_r, lora_alpha=tcfg.lora_alpha, lora_dropout=0.0,
                                           target_modules=LORA_TARGETS), model)
    for mod_name in ("prompt",):
        mod = getattr(model, mod_name, None)
        if isinstance(mod, nn.Module):
            for p in mod.parameters():
                p.requires_grad_(True)
    if m == "adapter":
        for layer in list(model.encoder) + list(model.decoder):
            for p in layer.adapter.parameters():
                p.requires_grad_(True)
    model.meta["tuning"] = tcfg.relevant()


def trainable_names(model) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


def parameter_counts(model) -> dict:
    """Trainable and total parameter counts, and the trainable fraction."""
    total = sum(p.numel() for p in model.parameters())
    train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable_params": train, "total_params": total, "trainable_fraction": train / max(total, 1)}
