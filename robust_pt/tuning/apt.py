"""APT, approximated prompt tuning (Wu et al. 2023, arXiv 2306.15706): prompts that diffuse into every
token after each attention instead of joining it.

Deep prompt tuning makes every attention run over N + M tokens; APT replaces the prompts'
part in it by an independent step per token (tuning/layers.py's ApproximatePrompt, which
documents the computation and its initialisation): out = (x + w * ReLU(h K^T) P) * exp(s),
O(N M d) per layer.

Built-in model: one module per self-attention of the chosen depth (encoder, decoder or
both, like `prompt`), set as `Attention.post` (models/ofa.py); the backbone is frozen and
only the APT tensors train and are saved (plus the base's hash). Hugging Face base: the
same module after the output of every attention the base's family declares
(HFFamily.attention_site: ViLT's ViltAttention, after the output projection, on the
layer-normed tokens that entered it, where the authors put it), plus the head it names,
as in their runs; saved as delta_model.safetensors + delta_config.json on top of the base
(models/hf/delta.py). CLIP and SigLIP declare their attentions and their two towers, so
`apt_depth` image, text or both picks them there (no head trains: a dual encoder has none). A
family that declares no attention site is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError
from .methods import freeze
from .registry import Factor, HFContext, OnHF, TuningMethod, register

DEPTHS = ("encoder", "decoder", "both", "image", "text")  # encoder/decoder: the OFA's; image/text: the CLIP's


@dataclass(frozen=True)
class APTOptions:
    apt_prompts: int = field(default=16, metadata={"help": "APT prompt count M per layer (the paper's runs: 200)"})
    apt_depth: str = field(
        default="both",
        metadata={
            "help": "layers with APT: encoder, decoder or both (OFA); image, text or both (CLIP, SigLIP); ViLT: all"
        },
    )
    apt_rank: int = field(default=4, metadata={"help": "rank of APT's low-rank update of the prompt keys"})
    apt_dropout: float = field(
        default=0.1, metadata={"help": "dropout on APT's prompt scores (the authors': the attention dropout)"}
    )

    def __post_init__(self):
        for name in ("apt_prompts", "apt_rank"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ConfigError(f"{name.replace('_', ' ')} must be a positive integer, got {v!r}")
        if self.apt_depth not in DEPTHS:
            raise ConfigError(f"unknown APT depth {self.apt_depth!r}; choose one of {', '.join(DEPTHS)}")
        if not 0.0 <= self.apt_dropout < 1.0:
            raise ConfigError(f"APT dropout must be in [0, 1), got {self.apt_dropout}")


def apply(model, o: APTOptions) -> None:
    """Freeze the model and give every self-attention of the chosen depth (a tower, or both) an APT module."""
    from .layers import ApproximatePrompt

    groups = model.layer_groups()
    if o.apt_depth != "both" and o.apt_depth not in groups:
        raise ConfigError(
            f"APT depth {o.apt_depth!r}: a {model.architecture} base has {', '.join(groups)} or both; pick one"
        )
    freeze(model)
    layers = model.all_layers() if o.apt_depth == "both" else groups[o.apt_depth]
    for layer in layers:
        layer.self_attn.post = ApproximatePrompt(model.cfg.d_model, o.apt_prompts, o.apt_rank, o.apt_dropout)
        for p in layer.self_attn.post.parameters():
            p.requires_grad_(True)


def _after_attention(module, args, kwargs, output):
    """Forward hook on a Hugging Face attention: its first output rewritten by the module's APT."""
    h = args[0] if args else kwargs["hidden_states"]
    if isinstance(output, tuple):
        return (module.apt(h, output[0]),) + output[1:]
    return module.apt(h, output)


def attach_hf(o: APTOptions, ctx: HFContext) -> None:
    """Freeze the transformers model, add an APT module after each of its attentions (of the towers the depth
    names, on a dual encoder), unfreeze the head the family names."""
    from .layers import ApproximatePrompt

    site = ctx.family.attention_site
    if site is None:
        raise ConfigError(f"--method apt: the {ctx.family.name} family declares no attention site; use lora or ia3")
    freeze(ctx.net)
    for name, module in _attentions(ctx.net, site, o.apt_depth):
        if not hasattr(module, "apt"):  # attached once only
            width = getattr(module, "embed_dim", None) or ctx.net.config.hidden_size  # a dual encoder's tower's
            module.apt = ApproximatePrompt(width, o.apt_prompts, o.apt_rank, o.apt_dropout)
            module.register_forward_hook(_after_attention, with_kwargs=True)
            for p in module.apt.parameters():
                p.requires_grad_(True)
    if site.head:
        for p in getattr(ctx.net, site.head).parameters():
            p.requires_grad_(True)


def _attentions(net, site, depth: str) -> list:
    """(name, module) of the attentions APT follows: every one, or on a model with towers those of the depth."""
    towers = dict(site.towers)
    if depth != "both" and depth not in towers:
        have = f"{', '.join(towers)} or both" if towers else "both only (one stack of layers)"
        raise ConfigError(f"APT depth {depth!r}: this Hugging Face base takes {have}; pick one")
    prefix = towers[depth] + "." if depth in towers else ""
    found = [
        (n, m)
        for n, m in net.named_modules()
        if any(c.__name__ == site.attention for c in type(m).__mro__) and n.startswith(prefix)  # SDPA subclasses too
    ]
    if not found:
        raise ConfigError(f"--method apt: no {site.attention} in this model to follow; use lora")
    return found


METHOD = register(
    TuningMethod(
        "apt",
        "APT",
        APTOptions,
        apply=apply,
        lr=3e-3,
        hf=OnHF(
            lr=5e-4,
            options=("apt_prompts", "apt_rank", "apt_dropout", "apt_depth"),
            later=("apt_depth",),  # CLIP's towers (ViLT's APT checkpoints, made before, keep their identity)
            attach=attach_hf,
            needs="attention_site",
        ),
        prompt_like=True,
        factors=(
            Factor("apt_prompts", "APT prompt count M"),
            Factor("apt_depth", "APT depth", order=lambda v: {d: i for i, d in enumerate(DEPTHS)}.get(v, 9)),
        ),
        colour="#17becf",
        aliases=("approximated-prompt-tuning",),
        help="APT approximated prompt tuning: prompts diffused into every token after each attention, backbone frozen",
    )
)
