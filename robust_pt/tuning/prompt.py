"""OFA-PT deep prompt tuning: per-layer prefix keys/values in encoder and decoder.

As in OFA's PromptEncoder: an Embedding(length, layers*2*d), optionally
reparameterised through an MLP (Linear d->2d, ReLU, Linear 2d->layers*2*d); dropout on
the prefixes; the attention masks are extended to cover them (models/ofa.py) and the
backbone is frozen. The modules are tuning/layers.py's PromptEncoder and DeepPrompt.

On a Hugging Face base: peft's PromptTuningConfig, where the base's family declares how plain peft
prepends the virtual tokens too (HFFamily.prompt_tuning: its task type, e.g. SEQ_CLS for a VQA
classifier, CAUSAL_LM for a generative VLM); a family that declares none (no task type would
prepend them, so the saved adapter would silently do nothing outside robust-pt) is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError
from .methods import freeze
from .registry import Factor, HFContext, OnHF, TuningMethod, register

DEPTHS = ("encoder", "decoder", "both")


@dataclass(frozen=True)
class PromptOptions:
    prompt_length: int = field(default=16, metadata={"help": "prompt length L (prefix tokens per layer)"})
    prompt_depth: str = field(default="both", metadata={"help": "layers with prefixes: encoder, decoder or both"})
    prompt_reparam: bool = field(default=False, metadata={"help": "reparameterise the prompts through an MLP"})
    prompt_dropout: float = field(default=0.2, metadata={"help": "dropout on the prefixes"})

    def __post_init__(self):
        if self.prompt_length <= 0:
            raise ConfigError(f"prompt length must be a positive integer, got {self.prompt_length}")
        if self.prompt_depth not in DEPTHS:
            raise ConfigError(f"unknown prompt depth {self.prompt_depth!r}; choose one of {', '.join(DEPTHS)}")


def apply(model, o: PromptOptions) -> None:
    from .layers import DeepPrompt

    freeze(model)
    model.prompt = DeepPrompt(model, o.prompt_length, o.prompt_depth, o.prompt_reparam, o.prompt_dropout)
    for p in model.prompt.parameters():
        p.requires_grad_(True)


def peft_config(o: PromptOptions, ctx: HFContext):
    """peft prompt tuning as the base's family declares it (HFFamily.prompt_tuning: the task type whose
    plain-peft forward prepends the virtual tokens, the config part describing the layers they enter,
    and their start)."""
    import operator

    import peft

    pt = ctx.family.prompt_tuning
    if pt is None:
        raise ConfigError(f"--method prompt: the {ctx.family.name} family declares no prompt tuning; use lora or ia3")
    c = operator.attrgetter(pt.config)(ctx.net.config) if pt.config else ctx.net.config
    # sample_vocab: the prompts start as embeddings of tokens sampled from the vocabulary (peft's RANDOM
    # start, N(0, 1), is ~50x the scale of a small LM's word embeddings and swamps its attention)
    init = {"prompt_tuning_init": peft.PromptTuningInit.SAMPLE_VOCAB} if pt.sample_vocab else {}
    return peft.PromptTuningConfig(
        **init,
        task_type=pt.task_type,
        num_virtual_tokens=o.prompt_length,
        token_dim=c.hidden_size,
        num_transformer_submodules=1,
        num_attention_heads=c.num_attention_heads,
        num_layers=c.num_hidden_layers,
    )


FACTORS = (
    Factor("prompt_length", "prompt length"),
    Factor("prompt_depth", "prompt depth", order=lambda v: {d: i for i, d in enumerate(DEPTHS)}.get(v, 9)),
    Factor("prompt_reparam", "reparameterisation", label=lambda v: "MLP" if v else "none"),
)

METHOD = register(
    TuningMethod(
        "prompt",
        "prompt tuning",
        PromptOptions,
        apply=apply,
        lr=3e-2,
        hf=OnHF(lr=3e-2, options=("prompt_length",), peft_config=peft_config, needs="prompt_tuning"),
        prompt_like=True,
        factors=FACTORS,
        colour="#d62728",
        aliases=("pt", "prompt-tuning", "prompttuning"),
        architectures=("mini-ofa",),
        help="OFA-PT deep prompt tuning: prefix keys/values in every layer, backbone frozen",
    )
)


def __getattr__(name: str):  # the modules moved to layers.py (imported on demand: no torch here)
    if name in ("PromptEncoder", "DeepPrompt"):
        from . import layers

        return getattr(layers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
