"""Gaussian data augmentation (Cohen, Rosenfeld and Kolter 2019) for every tuning method.

Why: randomized smoothing certifies the classifier g(x) = argmax_c P(f(x + e) = c) built from a
base classifier f, and f must be good on noisy inputs for g to be accurate and to certify large
radii; so the paper trains f on x + N(0, sigma^2 I) at the sigma it will be certified at. Here any
tuning method (built-in or Hugging Face, clean tuning only) can train that way: `robust-pt train
--noise-sigma S`, a recipe's tuning entry `noise_sigma: S`. The noise is drawn per (training seed,
step) and not clipped, as in the paper, so a repeated training sees the same noise; the sigma is in
the checkpoint's identity and meta (`noise_sigma`), and reports name the variant "noise S".
"""

from __future__ import annotations

import math

from ..errors import ConfigError


def check_sigma(sigma, adversarial=None, where: str = "--noise-sigma") -> float | None:
    """The noise scale as a float (None: no noise); one line for a value that is not > 0 or for noise
    together with adversarial tuning (not combined here)."""
    if sigma is None:
        return None
    try:
        s = float(sigma)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{where} must be a number > 0 (the noise's standard deviation in pixels), got {sigma!r}"
        ) from None
    if isinstance(sigma, bool) or not math.isfinite(s) or s <= 0:
        raise ConfigError(f"{where} must be a number > 0 (the noise's standard deviation in pixels), got {sigma!r}")
    if adversarial is not None:
        raise ConfigError(f"{where} and adversarial tuning cannot be combined; train with one of them")
    return s


def noisy(images, sigma: float | None, seed: int, step: int):
    """images + N(0, sigma^2 I), drawn from (seed, step); the images themselves when sigma is None."""
    if not sigma:
        return images
    import torch

    from ..attacks.seeds import derive_seed

    g = torch.Generator().manual_seed(derive_seed(seed, "noise", step))
    return images + torch.randn(images.shape, generator=g).to(images) * sigma


def label(sigma: float | None) -> str:
    """How reports and progress lines name the variant: "noise 0.25" ("" without noise)."""
    return f"noise {sigma:g}" if sigma else ""
