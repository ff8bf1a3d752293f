"""IA3 (Hugging Face bases only): peft's IA3Config, learned scalings of the attention keys/values and
the feed-forward activations (the family's targets, hf_train.py)."""

from __future__ import annotations

from .registry import HFContext, NoOptions, OnHF, TuningMethod, register


def peft_config(options: NoOptions, ctx: HFContext):
    import peft

    return peft.IA3Config(target_modules=ctx.targets["ia3"], feedforward_modules=ctx.targets["ia3_feedforward"])


METHOD = register(
    TuningMethod(
        "ia3",
        "IA3",
        NoOptions,
        hf=OnHF(lr=3e-3, peft_config=peft_config),
        help="learned scalings of keys, values and FFN activations (peft)",
    )
)
