"""Adversarial sample images: up to `samples` PNGs per eps in the run directory, each a triptych
(clean | adversarial | amplified difference), broken examples first.

Why: a reader of a run (and the report's sample gallery) sees what the perturbation looks like;
the file names (runformat.sample_name) let the report match each image to its record.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..runformat import sample_name, sample_tag


def save_samples(ctx, eps: float, examples, x0: torch.Tensor, new: dict[int, dict]) -> None:
    """The batch's PNGs at `eps`, while the run (ctx.samples per eps; ctx.sample_counts so far) has room."""
    folder = ctx.store.samples_dir()
    if folder is None:
        return
    unit = ctx.attack.spec.eps_unit
    tag = sample_tag(eps, unit)
    if tag not in ctx.sample_counts:
        ctx.sample_counts[tag] = len(list(folder.glob(f"{tag}_*.png")))
    left = ctx.samples - ctx.sample_counts[tag]
    if left <= 0:
        return
    order = sorted(new, key=lambda i: (not new[i]["broken"], i))
    for i in order[:left]:
        adv = new[i]["_adv"]
        if adv is None:
            continue
        name = sample_name(eps, examples[i].id, new[i]["broken"], unit)
        save_triptych(folder / name, x0[i], adv)
        ctx.sample_counts[tag] += 1


def save_triptych(path: Path, clean: torch.Tensor, adv: torch.Tensor) -> None:
    """clean | adversarial | amplified difference, side by side, as a PNG."""
    from PIL import Image

    c = clean.detach().cpu().float().clamp(0, 1)
    a = adv.detach().cpu().float().clamp(0, 1)
    d = a - c
    m = float(d.abs().max())
    amp = 0.5 + d / (2 * m) if m > 0 else torch.full_like(d, 0.5)
    H, W = c.shape[-2:]
    scale = max(1, 128 // max(H, W))
    gap = torch.ones(c.shape[0], H, 2)
    img = torch.cat([c, gap, a, gap, amp.clamp(0, 1)], -1)
    arr = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    if arr.shape[-1] == 1:
        arr = arr[..., 0]
    im = Image.fromarray(arr)
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    im.save(path)
