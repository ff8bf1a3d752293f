"""Full finetuning: every weight trains; the reference every report compares the other methods against.

Its checkpoints hold every weight (no base needed to load them). On a Hugging Face base it
trains the whole transformers model and saves it with save_pretrained (hf_train.py)."""

from __future__ import annotations

from .methods import freeze
from .registry import REFERENCE, NoOptions, OnHF, TuningMethod, register


def apply(model, options: NoOptions) -> None:
    """Every weight; on a dual encoder (mini-clip) every weight of the image tower (TeCoA's finetuning)."""
    image = getattr(model, "image_parameters", None)
    if image is not None:
        freeze(model)
    for p in image() if image is not None else model.parameters():
        p.requires_grad_(True)


METHOD = register(
    TuningMethod(
        REFERENCE,
        "finetuning",
        NoOptions,
        apply=apply,
        lr=5e-4,
        hf=OnHF(lr=5e-5),
        delta=False,
        colour="#1f77b4",
        aliases=("ft", "finetuned", "finetuning"),
        help="every weight trains",
    )
)
