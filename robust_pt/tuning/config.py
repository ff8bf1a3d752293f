"""Tuning configs: a method and its own options (tuning/registry.py), and the training schedule.

TuningConfig(method="prompt", prompt_length=8)     # the prompt method's options, the rest defaults
TuningConfig(method="lora", lora_r=4).relevant()   # {"method": "lora", "lora_r": 4, "lora_alpha": 16}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from . import registry

PRETRAIN_LR = 1e-3
#: Default peak learning rate per built-in method (and for pretraining); read from the registry.
DEFAULT_LR = registry.Live(lambda: {**{m.name: m.lr for m in registry.builtin_methods()}, "pretrain": PRETRAIN_LR})


@dataclass(frozen=True, init=False)
class TuningConfig:
    """A built-in tuning method and its options (the method's own frozen dataclass, `options`).

    Options are keyword arguments; one the method does not take is refused (one line), and
    `cfg.prompt_length` reads `cfg.options.prompt_length`. Training schedule: TrainConfig."""

    method: str
    options: Any

    def __init__(self, method: str = "finetune", **options):
        spec = registry.builtin_method(method)
        given = options.pop("options", None)  # TuningConfig(m, options=...): dataclasses.replace, copies
        if given is not None and not options:
            opts = given if isinstance(given, spec.options) else spec.make_options(dict(given))
        else:
            opts = spec.make_options(options)
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "options", opts)

    @property
    def spec(self) -> registry.TuningMethod:
        return registry.get(self.method)

    def __getattr__(self, name: str):
        if name.startswith("__") or name in ("method", "options"):
            raise AttributeError(name)
        try:
            return getattr(self.options, name)
        except AttributeError:
            raise AttributeError(f"tuning method {self.method} has no option {name!r}") from None

    def relevant(self) -> dict:
        """The method and its options: what meta.json records as `tuning` and in its identity."""
        return self.spec.relevant(self.options)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation schedule: AdamW with linear warm-up and cosine decay."""

    steps: int = 1000
    batch_size: int = 64
    lr: float | None = None  # None: the method's default (prompt tuning wants a large one)
    warmup: float = 0.06
    weight_decay: float = 0.01
    seed: int = 0
    train_size: int = 20000
    eval_size: int = 1000
    threads: int = 2

    def __post_init__(self):
        if self.steps <= 0 or self.batch_size <= 0:
            raise ConfigError("steps and batch size must be positive integers")


def with_classes(cfg, answers):
    """`cfg` (a TuningConfig or a Hugging Face HFTrainConfig) with a method sized by its task's classes (a linear
    probe, TuningMethod.task_classes) given them in its options, so they are in the checkpoint's identity and
    meta; any other method's as it is."""
    from dataclasses import replace

    if cfg.spec.task_classes is None:
        return cfg
    return replace(cfg, options=cfg.spec.task_classes(cfg.options, list(answers or [])))


def with_task_classes(cfg, task_name: str):
    """with_classes with the classes of `task_name` (its train split, as training reads them)."""
    if cfg.spec.task_classes is None:
        return cfg
    from ..tasks import load_task

    return with_classes(cfg, load_task(task_name, split="train", limit=1).answers)
