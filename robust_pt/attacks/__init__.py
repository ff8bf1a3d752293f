"""Attacks: named presets (attacks/*.yaml) -> `Attack` objects the engine runs.

    from robust_pt.attacks import build, list_presets
    atk = build("pgd", steps=20)            # a preset name, or a path to a preset .yaml
    atk = build("my-attack.yaml", backend="torchattacks")
    [s.name for s in list_presets()]

Image attacks (image.py) come from our own batched PGD/FGSM, torchattacks or foolbox;
embedding attacks (embedding.py) are ours; text attacks (text/recipes.py) are TextAttack's
recipes on a VL model wrapper (vl_wrapper.py); joint attacks (joint.py) chain a text
attack and image PGD. Importing this package is light: torch, torchattacks, foolbox and
textattack are imported only when an attack runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import methods
from .presets import (
    BACKENDS,
    AttackSpec,
    list_presets,
    parse_eps,
    parse_eps_value,
    preset_files,
    resolve,
    validate_eps,
)

__all__ = [
    "Attack",
    "AttackSpec",
    "build",
    "list_presets",
    "preset_files",
    "parse_eps",
    "parse_eps_value",
    "validate_eps",
    "BACKENDS",
]


@dataclass(frozen=True)
class Attack:
    """A resolved attack: its spec plus what the engine needs to know about it."""

    spec: AttackSpec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def norm(self) -> str:
        return self.spec.norm

    @property
    def needs_logits(self) -> bool:
        """Only closed-answer tasks and classifiers can be attacked (library backends, logit-based attacks)."""
        m = methods.get(self.kind, self.spec.method)
        return bool(m and m.needs_logits) or self.spec.backend != "ours"

    def eps_grid(self, eps=None) -> list[float]:
        """The eps values to run (given, else the preset's), validated and sorted."""
        vals = parse_eps(eps) if eps is not None else list(self.spec.eps)
        return validate_eps(self.spec, vals)

    def describe(self) -> str:
        s = self.spec
        if s.kind in ("text", "joint"):
            bits = [f"{s.kind} {s.method}"]
            if s.kind == "joint":
                bits += [
                    f"text={s.text_method}",
                    f"max_words_fraction={s.max_words_fraction:g}",
                    s.norm,
                    f"steps={s.steps}",
                ]
            bits.append(f"queries={s.queries}" if s.queries else "queries=unlimited")
            return f"{s.name} ({', '.join(bits)})"
        bits = [f"{s.kind} {s.method}", s.norm, f"backend={s.backend}"]
        m = methods.get(s.kind, s.method)
        if not (m and (m.one_step or m.black_box)):
            bits.append(f"steps={s.steps}")
        if s.queries:
            bits.append(f"queries={s.queries}")
        return f"{s.name} ({', '.join(bits)})"


def build(preset_or_path: str | Path | AttackSpec | Attack = "pgd", **overrides) -> Attack:
    """An Attack from a preset name or preset file plus overrides (steps=, backend=, ...).

    Raises AttackError for an unknown preset or bad values, ConfigError for unknown keys.
    """
    if isinstance(preset_or_path, Attack):
        preset_or_path = preset_or_path.spec
    return Attack(resolve(preset_or_path, **overrides))
