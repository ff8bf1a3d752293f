"""Threat models: what an attack kind needs, how its eps sets relate, and a registry.

Why: the engine must run any kind of attack (image, embedding, text, joint, and later
transfer from a surrogate or natural corruptions) without knowing which. A threat model
declares

* `zero_eps`: eps 0 is a level of its own (certification: radius 0), not refused;
* `needs`: what it needs from the victim: "vl" (a vision-language model), "text" (a
  question to rewrite), "embeddings", "logits" (logits over candidate answers);
* `nested`: whether its eps sets are nested (an adversarial found at eps1 lies inside
  every larger ball, so the survivors-only sweep applies); corruptions at severities are not;
* `record_fields`: the record fields it adds, with their value for an example it did not
  attack; `saves_samples`: whether its adversarial inputs are images worth saving;
* `identity(spec)`: what goes into the run fingerprint;
* what the report reads (run.json's `declares` block, attacks/declarations.py): `access`
  (white-box, or corruption for natural corruptions; black-box and transfer come from the
  method and the surrogates), `perturbs` (what it changes: image, embedding, text, image+text:
  a label), `image_only` (it leaves the text alone, so answers the text decides cannot
  break), `huge` (the eps at which it should break nearly everything: the huge-eps sanity
  check);

and `bind(victim, spec, seed)` returns a `Bound` that perturbs a batch's rows at one eps
(`perturb`) and may compute the clean pass itself (`clean`: text attacks keep the clean
logits and image features). The verdict always comes from the victim (victim.py).

Registering a threat model is one call: `register(MyThreat())`, or a lazy
"module:attribute" entry in BUILTIN (imported only when a run uses it, so `import
robust_pt` stays light).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import AttackError

NEEDS = ("vl", "text", "embeddings", "logits")


@dataclass
class Outcome:
    """One perturbation of some rows of a batch at one eps (arrays aligned with the rows)."""

    preds: list  # closed: candidate index; generative: text
    scores: np.ndarray
    linf: np.ndarray
    l2: np.ndarray
    steps: np.ndarray
    queries: int | None
    adv: Any = None  # the adversarial inputs: images (B, C, H, W), or Embeds for embedding attacks
    extra: list[dict] | None = None  # per row: the threat model's record fields
    success: np.ndarray | None = None  # targeted attacks: per row, whether the target was produced (else
    # the victim's verdict decides what is broken)


class Bound:
    """A threat model bound to a victim and an attack spec, for one run."""

    restarts = 1  # independent tries per example (each from a new random start)
    # whether an example's outcome is the same whichever examples share its batch (every random draw
    # seeded per example): the engine then attacks consecutive batches together (engine/loop.py)
    poolable = False

    def __init__(self, threat: "ThreatModel", victim, spec, seed: int):
        self.threat, self.victim, self.spec, self.seed = threat, victim, spec, seed

    @property
    def record_fields(self) -> dict:
        """The record fields this run adds: the threat model's (a targeted run adds its target's)."""
        return self.threat.record_fields

    def start_batch(self) -> None:
        """Forget per-batch state (called before each batch's clean pass)."""

    def clean(self, x0, examples: Sequence, index: Sequence[int]) -> list:
        """The clean predictions of these examples (the victim's, unless the attack needs more)."""
        return self.victim.clean_predictions(x0, [ex.text for ex in examples])

    def perturb(self, b: int, examples: Sequence, index: Sequence[int], x0, eps: float, restart: int) -> Outcome:
        raise NotImplementedError

    def judged(self, examples: Sequence, index: Sequence[int], x0, adv) -> Outcome:
        """The Outcome of images `adv` made without looking at the model (noise, corruptions): the victim
        judges them, and their L-inf / L2 distances to the clean `x0` are recorded (one step each)."""
        preds = self.victim.judge_images(adv, examples)
        d = (adv - x0).flatten(1).cpu()
        return Outcome(
            preds,
            self.victim.scores(examples, index, preds),
            d.abs().amax(1).double().numpy(),
            d.norm(dim=1).double().numpy(),
            np.ones(len(examples), dtype=np.int64),
            None,
            adv,
        )


class ThreatModel:
    """Base of the registered threat models; subclasses set the declarations and bind()."""

    name = ""
    needs: frozenset = frozenset()
    nested = True
    record_fields: dict = {}
    saves_samples = False
    # the sentence saying why a task without candidate logits cannot be attacked (needs "logits")
    logits_reason = "needs logits over candidate answers"

    def identity(self, spec) -> dict:
        return spec.identity

    def bind(self, victim, spec, seed: int) -> Bound:
        raise NotImplementedError

    def check_model(self, attack, vl: bool, model_name: str) -> None:
        """Refuse, with one line, a model that lacks what this threat model needs (before the task is read)."""
        if self.needs & {"vl", "embeddings", "text"} and not vl:
            raise AttackError(self.no_vl_message(attack, model_name))

    def check_task(self, attack, victim_cls, task) -> None:
        """Refuse, with one line, a victim (model + task) that lacks what this threat model needs."""
        if "logits" in self.needs and not victim_cls.has_logits:
            raise AttackError(
                f"{attack.name} {self.logits_reason}, which the {task.kind} task {task.name} does not "
                f"have; use a closed-answer task such as shapes-vqa or shapes-ve"
            )

    # what the report reads (module docstring); each threat model sets its own
    access = "white-box"
    perturbs = "image"
    image_only = True
    huge: dict = {}  # "unit/norm" or "unit" -> eps; an L2 pixel eps is a fraction of sqrt(3 * size**2)

    def declares(self) -> dict:
        """What this threat model declares for the report (declared() reads a built-in kind's without importing it)."""
        return {key: getattr(self, key) for key in DECLARED}

    def huge_eps(self, norm: str, unit: str, image_size: int | None) -> float | None:
        """The very large eps of the huge-eps sanity check for this norm and unit (None: not checked)."""
        return huge_eps(self.declares()["huge"], norm, unit, image_size)

    # presets of a registered (not built-in) kind: the methods it runs and the eps units it takes
    methods: tuple[str, ...] = ()
    eps_units: tuple[str, ...] = ("pixel",)
    zero_eps = False  # eps 0 is a level of its own (certification: radius 0), not refused

    def check_spec(self, spec) -> None:
        """Validate a preset of this kind (built-in kinds are checked by presets.check_spec)."""
        if spec.method not in self.methods:
            raise AttackError(
                f"attack {spec.name}: method {spec.method} does not exist for {self.name} attacks; "
                f"use one of {', '.join(self.methods) or '(none)'}"
            )
        if spec.backend != "ours":
            raise AttackError(
                f"attack {spec.name} ({self.name} {spec.method}) has no {spec.backend} backend; use --backend ours"
            )
        if spec.eps_unit not in self.eps_units:
            raise AttackError(
                f"attack {spec.name}: {self.name} attacks take eps_unit {' or '.join(self.eps_units)}, "
                f"not {spec.eps_unit!r}"
            )

    def check_eps(self, spec, eps) -> None:
        """Validate the eps a run asks for (the preset's or --eps); presets.validate_eps calls it for
        every kind that is not one of presets.KINDS."""

    def no_vl_message(self, attack, model_name: str) -> str:
        return f"{attack.name} needs a vision-language model; {model_name} is an image-only classifier"


BUILTIN = {
    "image": "robust_pt.attacks.threats:IMAGE",
    "embedding": "robust_pt.attacks.threats:EMBEDDING",
    "text": "robust_pt.attacks.threats:TEXT",
    "joint": "robust_pt.attacks.threats:JOINT",
    "corruption": "robust_pt.attacks.corruptions:CORRUPTION",
    "text-corruption": "robust_pt.attacks.text.corruptions:TEXT_CORRUPTION",
    "certify": "robust_pt.attacks.certify:CERTIFY",
}
#: A torch-free copy of what the built-in threat models declare where they differ from ThreatModel's defaults
#: (each class sets its own): reports derive the declarations of runs written before run.json held them without
#: importing torch. tests/test_declarations.py checks this copy against the classes.
BUILTIN_DECLARES: dict[str, dict] = {
    "image": {"huge": {"pixel/linf": 64 / 255, "pixel/l2": 0.25}},
    "embedding": {"perturbs": "embedding", "image_only": False, "huge": {"rms": 1.0}},
    "text": {"perturbs": "text", "image_only": False},
    "joint": {"perturbs": "image+text", "image_only": False},
    "corruption": {"nested": False, "access": "corruption"},
    "text-corruption": {"nested": False, "access": "corruption", "perturbs": "text", "image_only": False},
    "certify": {"access": "certified"},
}
DECLARED = ("nested", "access", "perturbs", "image_only", "huge")
_registered: dict[str, ThreatModel] = {}


def declared(kind: str) -> dict:
    """What the threat model of an attack kind declares (ThreatModel.declares), without importing a built-in one."""
    if kind in _registered:
        return _registered[kind].declares()
    base = {key: getattr(ThreatModel, key) for key in DECLARED}
    return {**base, **BUILTIN_DECLARES.get(kind, {})}


def huge_eps(huge: dict, norm: str, unit: str, image_size: int | None) -> float | None:
    """The entry of a `huge` declaration for this norm and unit; an L2 pixel entry scales with the image."""
    import math

    v = huge.get(f"{unit}/{norm}", huge.get(unit))
    if v is None or f"{unit}/{norm}" != "pixel/l2":
        return v
    return v * math.sqrt(3 * image_size**2) if image_size else None


def register(threat: ThreatModel) -> ThreatModel:
    """Make `threat` the threat model of attack kind `threat.name` (presets with that kind run it)."""
    if not threat.name:
        raise AttackError("a threat model needs a name (the attack kind its presets give)")
    unknown = set(threat.needs) - set(NEEDS)
    if unknown:
        raise AttackError(f"threat model {threat.name}: unknown needs {sorted(unknown)}; use {', '.join(NEEDS)}")
    _registered[threat.name] = threat
    return threat


def threat_model(kind: str) -> ThreatModel:
    """The threat model of an attack kind (registered, else built in)."""
    if kind in _registered:
        return _registered[kind]
    if kind not in BUILTIN:
        raise AttackError(f"no threat model for attack kind {kind!r}; known: {', '.join(kinds())}")
    module, attr = BUILTIN[kind].split(":")
    return getattr(importlib.import_module(module), attr)


def registered(kind: str) -> ThreatModel | None:
    """A threat model registered with register() (not a built-in one), or None."""
    return _registered.get(kind)


def kinds() -> list[str]:
    return sorted(set(BUILTIN) | set(_registered))
