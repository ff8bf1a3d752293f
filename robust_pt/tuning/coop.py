"""CoOp, context optimisation (Zhou et al. 2022, arXiv 2109.01134): the prompt template becomes n learned
word vectors, one context for every class (unified), the class name at the end, middle or front.

Built-in dual encoder (mini-clip): the backbone is frozen and only the context trains and is
saved (plus the base's hash); the module is tuning/clip_prompts.py's Context. Hugging Face
dual encoders (a family that declares `class_prompts`: CLIP): the same module, attached to the
transformers model and saved as a robust-pt delta on the base (models/hf/delta.py). It starts as
the embeddings of --coop-init's words (CoOp's "a photo of a"; here the pretraining captions'
"a picture of a"), or at random with --coop-init "". Learned on base classes, the same context
reads any class name: evaluate it on novel classes (the base-to-novel protocol).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError
from .methods import freeze
from .registry import Factor, HFContext, OnHF, TuningMethod, register

POSITIONS = ("end", "middle", "front")


@dataclass(frozen=True)
class CoopOptions:
    coop_context: int = field(default=4, metadata={"help": "CoOp: learned context words n"})
    coop_position: str = field(default="end", metadata={"help": "CoOp: where the class name goes: end, middle, front"})
    coop_init: str = field(
        default="a picture of a", metadata={"help": 'CoOp: words the context starts from ("": at random)'}
    )
    coop_suffix: str = field(
        default="", metadata={"help": 'CoOp: fixed words at the end of the prompt (the authors\' Dassl prompts: ".")'}
    )

    def __post_init__(self):
        if isinstance(self.coop_context, bool) or not isinstance(self.coop_context, int) or self.coop_context <= 0:
            raise ConfigError(f"coop context must be a positive integer, got {self.coop_context!r}")
        if self.coop_position not in POSITIONS:
            raise ConfigError(f"unknown coop position {self.coop_position!r}; choose one of {', '.join(POSITIONS)}")
        check_init("coop", self.coop_init, self.coop_context)


def check_init(method: str, init: str, n: int) -> None:
    """The words a learned context starts from number its tokens (CoOp's, MaPLe's)."""
    words = init.split()
    if words and len(words) != n:
        raise ConfigError(
            f"{method} init {init!r} has {len(words)} words but {method} context is {n}; give as many words as "
            f"context vectors, or --{method}-init ''"
        )


def hf_init_ids(method: str, ctx: HFContext, init: str, n: int) -> list[int] | None:
    """The base tokenizer's ids of the words a context starts from (None: at random); one line when they are
    not n tokens there."""
    ids = ctx.tokenizer(init, add_special_tokens=False)["input_ids"] if init else None
    if ids is not None and len(ids) != n:
        raise ConfigError(
            f"{method} init {init!r} is {len(ids)} tokens for this base's tokenizer but {method} context is {n}; "
            f"give --{method}-context {len(ids)}, or --{method}-init ''"
        )
    return ids


def apply(model, o: CoopOptions) -> None:
    from .clip_prompts import Context, _words

    freeze(model)
    suffix = model.embed_tokens.weight[model.tok.encode(o.coop_suffix)].detach() if o.coop_suffix else None
    model.prompter = Context(_words(model, o.coop_init, o.coop_context), o.coop_position, suffix)
    model.prompter.ctx.requires_grad_(True)


def attach_hf(o: CoopOptions, ctx: HFContext) -> None:
    """A dual encoder's family names its text token embedding (HFFamily.class_prompts); the context starts from
    --coop-init's tokens there and is attached as `prompter` (models/hf/clip.py reads it in place of the template)."""
    import operator

    from .clip_prompts import Context, start

    table = operator.attrgetter(ctx.family.class_prompts)(ctx.net).weight
    ids = hf_init_ids("coop", ctx, o.coop_init, o.coop_context)
    freeze(ctx.net)
    tail = ctx.tokenizer(o.coop_suffix, add_special_tokens=False)["input_ids"] if o.coop_suffix else []
    suffix = table[tail].detach().float() if tail else None
    ctx.net.prompter = Context(start(table, ids, o.coop_context), o.coop_position, suffix)
    ctx.net.prompter.ctx.requires_grad_(True)


METHOD = register(
    TuningMethod(
        "coop",
        "CoOp",
        CoopOptions,
        apply=apply,
        lr=2e-3,
        hf=OnHF(
            lr=2e-3,
            options=("coop_context", "coop_position", "coop_init", "coop_suffix"),
            attach=attach_hf,
            needs="class_prompts",
        ),
        prompt_like=True,
        factors=(Factor("coop_context", "CoOp context length"),),
        colour="#8c564b",
        architectures=("mini-clip",),
        task_kinds=("classify",),
        help="CoOp: learned context words in place of the prompt template (dual encoders), backbone frozen",
    )
)
