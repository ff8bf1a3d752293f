"""MaPLe, multi-modal prompt learning (Khattak et al. 2023, arXiv 2210.03117): prompts in both encoders,
coupled: each layer's visual prompts are a learned linear map of that layer's text prompts.

Built-in dual encoder (mini-clip) only; the backbone is frozen. The text encoder's first
layer reads a CoOp-style context (class name at the end); its next layers, up to
--maple-depth, replace those positions with their own prompts; the image encoder gets the
coupled prompts after CLS in the same layers (tuning/clip_prompts.py's Maple).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError
from .methods import freeze
from .registry import Factor, TuningMethod, register


@dataclass(frozen=True)
class MapleOptions:
    maple_context: int = field(default=4, metadata={"help": "MaPLe: prompt tokens per layer"})
    maple_depth: int = field(default=2, metadata={"help": "MaPLe: layers of both encoders with prompts"})
    maple_init: str = field(
        default="a picture of a", metadata={"help": 'MaPLe: words the first text prompts start from ("": at random)'}
    )

    def __post_init__(self):
        for name in ("maple_context", "maple_depth"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ConfigError(f"{name.replace('_', ' ')} must be a positive integer, got {v!r}")
        words = self.maple_init.split()
        if words and len(words) != self.maple_context:
            raise ConfigError(
                f"maple init {self.maple_init!r} has {len(words)} words but maple context is {self.maple_context}; "
                f"give as many words as prompt tokens, or --maple-init ''"
            )


def apply(model, o: MapleOptions) -> None:
    from .clip_prompts import Maple

    layers = min(len(model.image_layers), len(model.text_layers))
    if o.maple_depth > layers:
        raise ConfigError(f"maple depth {o.maple_depth} exceeds the base's {layers} layers per encoder")
    freeze(model)
    model.prompter = Maple(model, o.maple_context, o.maple_depth, o.maple_init)
    for p in model.prompter.parameters():
        p.requires_grad_(True)


METHOD = register(
    TuningMethod(
        "maple",
        "MaPLe",
        MapleOptions,
        apply=apply,
        lr=3e-3,
        prompt_like=True,
        factors=(Factor("maple_depth", "MaPLe depth"),),
        colour="#bcbd22",
        architectures=("mini-clip",),
        task_kinds=("classify",),
        help="MaPLe: coupled prompts in the text and image encoders (dual encoders), backbone frozen",
    )
)
