"""Apply a tuning method to a MiniOFA: add its modules, freeze the rest, say what trains.

Each method's `apply` (tuning/registry.py; one module per method) does the work; this is
the one entry point the training and loading code calls. Order matters for loading: base
weights go into the plain model first, then the method is applied, then the method's own
tensors are loaded (tuning/checkpoint.py).
"""

from __future__ import annotations

from .registry import builtin_methods


def freeze(model) -> None:
    """No parameter of `model` requires grad (a method then unfreezes its own)."""
    for p in model.parameters():
        p.requires_grad_(False)


def check_architecture(spec, model) -> None:
    """One line when the method cannot tune this built-in architecture (CoOp on the OFA, OFA-PT on the CLIP)."""
    from ..errors import ConfigError

    arch = getattr(model, "architecture", "mini-ofa")
    if arch not in spec.architectures:
        fits = [m.name for m in builtin_methods() if arch in m.architectures]
        raise ConfigError(
            f"tuning method {spec.name} tunes {' and '.join(spec.architectures)} bases, not this {arch} base; "
            f"on {arch} use one of {', '.join(fits)}"
        )


def apply_method(model, tcfg) -> None:
    """Mutate `model` in place so that exactly the method's parameters require grad (tcfg: TuningConfig)."""
    check_architecture(tcfg.spec, model)
    tcfg.spec.apply(model, tcfg.options)
    model.meta["tuning"] = tcfg.relevant()


def trainable_names(model) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


def parameter_counts(model) -> dict:
    """Trainable and total parameter counts, and the trainable fraction."""
    total = sum(p.numel() for p in model.parameters())
    train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable_params": train, "total_params": total, "trainable_fraction": train / max(total, 1)}
