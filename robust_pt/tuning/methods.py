"""Apply a tuning method to a MiniOFA: add its modules, freeze the rest, say what trains.

Each method's `apply` (tuning/registry.py; one module per method) does the work; this is
the one entry point the training and loading code calls. Order matters for loading: base
weights go into the plain model first, then the method is applied, then the method's own
tensors are loaded (tuning/checkpoint.py).
"""

from __future__ import annotations


def freeze(model) -> None:
    """No parameter of `model` requires grad (a method then unfreezes its own)."""
    for p in model.parameters():
        p.requires_grad_(False)


def apply_method(model, tcfg) -> None:
    """Mutate `model` in place so that exactly the method's parameters require grad (tcfg: TuningConfig)."""
    tcfg.spec.apply(model, tcfg.options)
    model.meta["tuning"] = tcfg.relevant()


def trainable_names(model) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


def parameter_counts(model) -> dict:
    """Trainable and total parameter counts, and the trainable fraction."""
    total = sum(p.numel() for p in model.parameters())
    train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable_params": train, "total_params": total, "trainable_fraction": train / max(total, 1)}
