"""Linear probe: a linear classifier on the frozen image features of a dual encoder (CLIP's linear-probe baseline).

On the built-in dual encoder (mini-clip) and on Hugging Face CLIP and SigLIP (the head on the
projected image features, saved as a robust-pt delta). The head scores the classes of the task it is trained
on, and only those: its class list is part of the method's options (`probe_classes`, filled in
from the task by `robust-pt train`, so it is in the checkpoint's meta and identity), and a probe
asked to score other class names (novel classes) is refused in one line, where every prompt
learner reads any class name. It starts at zero (uniform logits) and learns W, b in
logits = W f_img + b, f_img the unit image feature.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError
from .methods import freeze
from .registry import OnHF, TuningMethod, register

SEP = "|"


@dataclass(frozen=True)
class LinearProbeOptions:
    probe_classes: str = field(
        default="", metadata={"help": "linear probe: its classes, '|'-separated (robust-pt train sets the task's)"}
    )

    @property
    def classes(self) -> list[str]:
        return [c for c in self.probe_classes.split(SEP) if c]


def fill(options: LinearProbeOptions, answers) -> LinearProbeOptions:
    """The options with the task's classes (what `robust-pt train` tunes the head for)."""
    from dataclasses import replace

    if any(SEP in a for a in answers):
        raise ConfigError(f"linear probe: a class name holds {SEP!r}; rename it")
    return replace(options, probe_classes=SEP.join(answers))


def apply(model, o: LinearProbeOptions) -> None:
    from .clip_prompts import LinearHead

    if not o.classes:
        raise ConfigError("linear probe: no classes; train it on a classification task (robust-pt train --task ...)")
    freeze(model)
    model.prompter = LinearHead(o.classes, model.cfg.embed_dim)
    for p in model.prompter.parameters():
        p.requires_grad_(True)


def attach_hf(o: LinearProbeOptions, ctx) -> None:
    """The same head on a Hugging Face dual encoder's projected image features (models/hf/clip.py reads it)."""
    from .clip_prompts import LinearHead

    if not o.classes:
        raise ConfigError("linear probe: no classes; train it on a classification task (robust-pt train --task ...)")
    freeze(ctx.net)
    cfg = ctx.net.config  # the image feature's width: CLIP's projection, SigLIP's vision width (no projection)
    ctx.net.prompter = LinearHead(o.classes, getattr(cfg, "projection_dim", None) or cfg.vision_config.hidden_size)
    for p in ctx.net.prompter.parameters():
        p.requires_grad_(True)


METHOD = register(
    TuningMethod(
        "linear-probe",
        "linear probe",
        LinearProbeOptions,
        apply=apply,
        lr=1e-2,
        hf=OnHF(lr=1e-2, options=("probe_classes",), attach=attach_hf, needs="class_prompts"),
        colour="#7f7f7f",
        architectures=("mini-clip",),
        task_kinds=("classify",),
        task_classes=fill,
        help="a linear classifier on frozen image features (dual encoders; scores only its own classes)",
    )
)
