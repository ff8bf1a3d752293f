"""VPT, visual prompt tuning (Jia et al. 2022, arXiv 2203.12119): learned tokens after the image encoder's
CLS token, given to its first layer only (shallow) or a new set to every layer (deep).

Built-in dual encoder (mini-clip) and Hugging Face CLIP; the backbone is frozen and only the
prompt tokens train and are saved (tuning/clip_prompts.py's VisualPrompts; on CLIP a robust-pt
delta on the base). The text side is untouched,
so a VPT model reads any class name through its hand-written template.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError
from .methods import freeze
from .registry import Factor, HFContext, OnHF, TuningMethod, register

DEPTHS = ("shallow", "deep")


@dataclass(frozen=True)
class VPTOptions:
    vpt_tokens: int = field(default=8, metadata={"help": "VPT: prompt tokens per layer"})
    vpt_depth: str = field(default="deep", metadata={"help": "VPT: shallow (first layer) or deep (every layer)"})

    def __post_init__(self):
        if isinstance(self.vpt_tokens, bool) or not isinstance(self.vpt_tokens, int) or self.vpt_tokens <= 0:
            raise ConfigError(f"vpt tokens must be a positive integer, got {self.vpt_tokens!r}")
        if self.vpt_depth not in DEPTHS:
            raise ConfigError(f"unknown vpt depth {self.vpt_depth!r}; choose one of {', '.join(DEPTHS)}")


def apply(model, o: VPTOptions) -> None:
    from .clip_prompts import VisualPrompts

    freeze(model)
    model.prompter = VisualPrompts(len(model.image_layers), o.vpt_tokens, model.cfg.d_model, o.vpt_depth == "deep")
    model.prompter.prompts.requires_grad_(True)


def attach_hf(o: VPTOptions, ctx: HFContext) -> None:
    """The same tokens in a Hugging Face dual encoder's vision transformer, attached as `prompter` (models/hf/clip.py
    writes them after CLS, layer by layer)."""
    from .clip_prompts import VisualPrompts

    vc = ctx.net.config.vision_config
    freeze(ctx.net)
    ctx.net.prompter = VisualPrompts(vc.num_hidden_layers, o.vpt_tokens, vc.hidden_size, o.vpt_depth == "deep")
    ctx.net.prompter.prompts.requires_grad_(True)


METHOD = register(
    TuningMethod(
        "vpt",
        "VPT",
        VPTOptions,
        apply=apply,
        lr=1e-2,
        hf=OnHF(lr=1e-2, options=("vpt_tokens", "vpt_depth"), attach=attach_hf, needs="class_prompts"),
        prompt_like=True,
        factors=(Factor("vpt_tokens", "VPT prompt tokens"), Factor("vpt_depth", "VPT depth")),
        colour="#e377c2",
        architectures=("mini-clip",),
        help="VPT: learned tokens in the image encoder (dual encoders), backbone frozen",
    )
)
