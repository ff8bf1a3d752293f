"""Natural image corruptions as a threat model: the 19 ImageNet-C corruptions at severities 1-5.

Why: adversarial eps balls are one threat; the adaptation-robustness benchmarks (Hendrycks &
Dietterich's ImageNet-C; Chen et al., NeurIPS 2023 D&B, for adapted VLMs) ask how a tuned
model holds up under noise, blur, weather and digital corruptions. A preset of kind
`corruption` names one corruption (`method: fog`); its eps are severities (`eps_unit:
severity`, integers 1-5). Severities are not nested balls (fog at 3 says nothing of fog at
5), so the engine evaluates every clean-correct example at every severity (sweep.EveryLevel)
under the convention every robust-pt attack uses: an example the model gets wrong on the
clean image counts as wrong. Any victim works (closed-answer, generative, a plain image
classifier): the victim judges the corrupted images.

The corruptions are imagecorruptions-imaug's (a maintained fork of `imagecorruptions` that
runs all 19 with numpy 2), an optional extra (`pip install robust-pt[corruptions]`), imported
when a run first corrupts an image (this module itself imports neither it nor torch: presets of
kind corruption are validated without them). Each image is corrupted as uint8 HxWx3 (the library's
input), back to [0, 1], and deterministically: numpy's global generator is seeded per (run
seed, example id, severity, corruption) for the call and restored afterwards, and the corruptions
with a `seed` argument (impulse_noise, glass_blur, whose numba generator it reseeds) get the
same seed.
"""

from __future__ import annotations

import inspect

import numpy as np

from ..errors import AttackError
from . import methods
from .core import Bound, ThreatModel

CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
    "speckle_noise",
    "gaussian_blur",
    "spatter",
    "saturate",
)
SEVERITIES = (1, 2, 3, 4, 5)
for _name in CORRUPTIONS:  # registered as every attack method is; a preset sets nothing but its severities
    methods.register(methods.AttackMethod(_name, "corruption", methods.SeverityParams, ("ours",)))
EXTRA = "pip install 'robust-pt[corruptions]' (or pip install imagecorruptions-imaug==1.1.5)"


def _library():
    try:
        import imagecorruptions
        import imagecorruptions.corruptions as functions
    except ImportError:
        raise AttackError(f"image corruptions need the optional extra `corruptions`: {EXTRA}") from None
    return imagecorruptions, functions


def corrupt(image: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    """One (3, H, W) float image in [0, 1], corrupted by `name` at `severity`, the same for the same seed."""
    if name not in CORRUPTIONS:
        raise AttackError(f"unknown corruption {name!r}; choose one of {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise AttackError(f"corruption severity must be an integer from 1 to 5, got {severity!r}")
    if image.ndim != 3 or image.shape[0] != 3:
        raise AttackError(f"image corruptions take RGB images (3, H, W), got shape {tuple(image.shape)}")
    if min(image.shape[-2:]) < 32:
        raise AttackError(
            f"image corruptions need images of at least 32x32 pixels (ImageNet-C's library), got "
            f"{image.shape[-2]}x{image.shape[-1]}"
        )
    lib, functions = _library()
    hwc = (np.clip(image.transpose(1, 2, 0), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    seed = int(seed) % 2**32
    kwargs = {"seed": seed} if "seed" in inspect.signature(getattr(functions, name)).parameters else {}
    state = np.random.get_state()
    np.random.seed(seed)  # the library draws from numpy's global generator: seeded here, restored after
    try:
        out = np.asarray(lib.corrupt(hwc, severity=severity, corruption_name=name, **kwargs), dtype=np.float64)
    finally:
        np.random.set_state(state)
    return (np.clip(out, 0.0, 255.0) / 255.0).transpose(2, 0, 1).astype(np.float32)


def check_severities(name: str, eps) -> None:
    """Every eps of a corruption run is a severity: an integer from 1 to 5 (one line otherwise)."""
    bad = [e for e in eps if float(e) != round(float(e)) or int(round(float(e))) not in SEVERITIES]
    if bad:
        raise AttackError(
            f"the eps of the corruption {name} are severities, integers from 1 to 5 (e.g. --eps 1,3,5); got {bad[0]:g}"
        )


class _CorruptionBound(Bound):
    def perturb(self, b, examples, index, x0, eps, restart):
        import torch

        from .threats import derive_seed

        name, severity = self.spec.method, int(round(eps))
        imgs = x0.detach().cpu().numpy()
        adv = torch.from_numpy(
            np.stack(
                [
                    corrupt(img, name, severity, derive_seed(self.seed, ex.id, severity, "corruption", name))
                    for img, ex in zip(imgs, examples)
                ]
            )
        ).to(x0)
        return self.judged(examples, index, x0, adv)  # the victim judges


class SeverityThreat(ThreatModel):
    """A natural corruption at severities: not nested, eps_unit severity, eps the integers 1-5."""

    nested = False
    access = "corruption"  # natural corruptions, not attacks: the report keeps them apart
    eps_units = ("severity",)

    def check_spec(self, spec) -> None:
        super().check_spec(spec)
        check_severities(spec.name, spec.eps)

    def check_eps(self, spec, eps) -> None:
        check_severities(spec.name, eps)


class Corruption(SeverityThreat):
    """Presets of kind `corruption`: `method` one of CORRUPTIONS, eps severities 1-5."""

    name = "corruption"
    saves_samples = True
    methods = CORRUPTIONS

    def check_task(self, attack, victim_cls, task) -> None:
        """Images the library cannot take (under 32 px, not RGB): one line before any work."""
        super().check_task(attack, victim_cls, task)
        if len(task):
            shape = np.asarray(task[0].image).shape
            if len(shape) != 3 or shape[0] != 3 or min(shape[-2:]) < 32:
                raise AttackError(
                    f"{attack.name}: image corruptions take RGB images of at least 32x32 pixels (ImageNet-C's "
                    f"library); {task.name} has images of shape {tuple(shape)}"
                )

    def bind(self, victim, spec, seed: int) -> Bound:
        _library()  # a missing extra: one line before any work
        return _CorruptionBound(self, victim, spec, seed)


CORRUPTION = Corruption()
