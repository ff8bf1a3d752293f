"""LoRA: peft's low-rank updates on the model's Linear layers.

Built-in model: peft's inject_adapter_in_model on TARGETS (every attention projection and
both FFN layers), alpha as given. Hugging Face base: peft's LoraConfig on the family's
attention projections (hf_train.py), alpha = 2 r."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError
from .methods import freeze
from .registry import HFContext, OnHF, TuningMethod, register

TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]  # MiniOFA's Linear layers


@dataclass(frozen=True)
class LoraOptions:
    lora_r: int = field(default=8, metadata={"help": "LoRA rank r (Hugging Face bases: alpha = 2 r)"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha (built-in model)"})

    def __post_init__(self):
        if self.lora_r <= 0:
            raise ConfigError(f"LoRA rank (lora r) must be a positive integer, got {self.lora_r}")


def apply(model, o: LoraOptions) -> None:
    from peft import LoraConfig, inject_adapter_in_model

    freeze(model)
    inject_adapter_in_model(
        LoraConfig(r=o.lora_r, lora_alpha=o.lora_alpha, lora_dropout=0.0, target_modules=TARGETS), model
    )


def peft_config(o: LoraOptions, ctx: HFContext):
    import peft

    return peft.LoraConfig(r=o.lora_r, lora_alpha=2 * o.lora_r, lora_dropout=0.0, target_modules=ctx.targets["lora"])


METHOD = register(
    TuningMethod(
        "lora",
        "LoRA",
        LoraOptions,
        apply=apply,
        lr=3e-3,
        hf=OnHF(lr=5e-4, options=("lora_r",), peft_config=peft_config),
        colour="#ff7f0e",
        help="low-rank updates of the Linear layers (peft)",
    )
)
