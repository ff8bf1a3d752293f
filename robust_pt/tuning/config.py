"""Frozen configs of the tuning methods (one per method, as in peft), with validation."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import ConfigError

METHODS = ("finetune", "prompt", "adapter", "bitfit", "lora")
DEPTHS = ("encoder", "decoder", "both")


@dataclass(frozen=True)
class TuningConfig:
    """Which method and its hyperparameters; training schedule lives in TrainConfig."""

    method: str = "finetune"
    prompt_length: int = 16
    prompt_depth: str = "both"
    prompt_reparam: bool = False
    prompt_dropout: float = 0.2
    adapter_dim: int = 32
    lora_r: int = 8
    lora_alpha: int = 16

    def __post_init__(self):
        if self.method not in METHODS:
            raise ConfigError(f"unknown tuning method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.prompt_length <= 0:
            raise ConfigError(f"prompt length must be a positive integer, got {self.prompt_length}")
        if self.prompt_depth not in DEPTHS:
            raise ConfigError(f"unknown prompt depth {self.prompt_depth!r}; choose one of {', '.join(DEPTHS)}")
        if self.adapter_dim <= 0 or self.lora_r <= 0:
            raise ConfigError("adapter dim and LoRA rank must be positive integers")

    def relevant(self) -> dict:
        """Only the hyperparameters that matter for this method (what meta.json records)."""
        d = asdict(self)
        keep = {"finetune": (), "bitfit": (), "prompt": ("prompt_length", "prompt_depth", "prompt_reparam",
                                                         "prompt_dropout"),
                "adapter": ("adapter_dim",), "lora": ("lora_r", "lora_alpha")}[self.method]
        return {"method": self.method, **{k: d[k] for k in keep}}


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


DEFAULT_LR = {"finetune": 5e-4, "prompt": 3e-2, "adapter": 3e-3, "bitfit": 5e-3, "lora": 3e-3, "pretrain": 1e-3}
