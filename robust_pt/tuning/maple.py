"""MaPLe, multi-modal prompt learning (Khattak et al. 2023, arXiv 2210.03117): prompts in both encoders,
coupled: each layer's visual prompts are a learned linear map of that layer's text prompts.

Built-in dual encoder (mini-clip) and Hugging Face CLIP (a robust-pt delta on the base); the
backbone is frozen. The text encoder's first
layer reads a CoOp-style context (class name at the end); its next layers, up to
--maple-depth, replace those positions with their own prompts; the image encoder gets the
coupled prompts after CLS in the same layers (tuning/clip_prompts.py's Maple).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError
from .coop import check_init, hf_init_ids
from .methods import freeze
from .registry import Factor, HFContext, OnHF, TuningMethod, register


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
        check_init("maple", self.maple_init, self.maple_context)


def apply(model, o: MapleOptions) -> None:
    from .clip_prompts import Maple, _words

    image, text = len(model.image_layers), len(model.text_layers)
    _check_depth(o, image, text)
    freeze(model)
    ctx = _words(model, o.maple_init, o.maple_context)
    model.prompter = Maple(ctx, o.maple_depth, model.cfg.d_model, image, text)
    for p in model.prompter.parameters():
        p.requires_grad_(True)


def _check_depth(o: MapleOptions, image: int, text: int) -> None:
    if o.maple_depth > min(image, text):
        raise ConfigError(f"maple depth {o.maple_depth} exceeds the base's {min(image, text)} layers per encoder")


def attach_hf(o: MapleOptions, ctx: HFContext) -> None:
    """The same prompts in a Hugging Face dual encoder (HFFamily.class_prompts), attached as `prompter`; the
    first text prompts start from --maple-init's tokens of the base's tokenizer."""
    import operator

    from .clip_prompts import Maple, start

    cfg = ctx.net.config
    image, text = cfg.vision_config.num_hidden_layers, cfg.text_config.num_hidden_layers
    _check_depth(o, image, text)
    table = operator.attrgetter(ctx.family.class_prompts)(ctx.net).weight
    ids = hf_init_ids("maple", ctx, o.maple_init, o.maple_context)
    freeze(ctx.net)
    ctx.net.prompter = Maple(start(table, ids, o.maple_context), o.maple_depth, cfg.vision_config.hidden_size,
                             image, text)  # fmt: skip
    for p in ctx.net.prompter.parameters():
        p.requires_grad_(True)


METHOD = register(
    TuningMethod(
        "maple",
        "MaPLe",
        MapleOptions,
        apply=apply,
        lr=3e-3,
        hf=OnHF(
            lr=3e-3, options=("maple_context", "maple_depth", "maple_init"), attach=attach_hf, needs="class_prompts"
        ),  # fmt: skip
        prompt_like=True,
        factors=(Factor("maple_depth", "MaPLe depth"),),
        colour="#bcbd22",
        architectures=("mini-clip",),
        task_kinds=("classify",),
        help="MaPLe: coupled prompts in the text and image encoders (dual encoders), backbone frozen",
    )
)
