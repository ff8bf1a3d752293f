"""SGA, the Set-level Guidance Attack (Lu et al., ICCV 2023), on robust-pt's objectives.

Why: adversarial images crafted against one text and one view of the image overfit the
surrogate; SGA makes them transfer across vision-language models by guiding the image
perturbation with sets: the image at several scales and several texts at once. The paper
attacks retrieval (image-text similarity of ALBEF/TCL/CLIP); here the same idea runs on the
objectives our tasks have (written from the paper, not from its code):

* scales: the image is seen at scales {1, 0.5, 0.75, 1.25, 1.5} (the paper's set plus the
  image itself); a scale below 1 shrinks the image and pads it to the model's size (a
  zoom-out), above 1 enlarges it and crops the centre (a zoom-in); all differentiable;
* texts: closed tasks (preset `sga`, a joint attack) take the question and its adversarial
  rewrite from a text stage at the clean image (the paper's first step), the image stage
  ascends the mean loss over every (scale, text) pair, and a last text stage rewrites the
  question against the adversarial image (the paper's third step); generative tasks
  (preset `sga-image`, an image attack) take the set of reference captions (grounding: the
  reference box), the mean of their sequence losses over the scales.

The adversarial image itself stays in its eps-ball around the clean image; only the loss
looks at the rescaled views. Verdicts and early stopping use the image as it is, at scale 1
with the first text.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

SCALES = (1.0, 0.5, 0.75, 1.25, 1.5)
MAX_REFS = 5  # reference captions per example in the generative set


def rescale(x: torch.Tensor, s: float) -> torch.Tensor:
    """The images (B, C, H, W) seen at scale s, at their own size: zoomed out and padded, or zoomed in and cropped."""
    if s == 1.0:
        return x
    H, W = x.shape[-2:]
    h, w = max(1, round(H * s)), max(1, round(W * s))
    y = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    if s < 1:
        top, left = (H - h) // 2, (W - w) // 2
        return F.pad(y, (left, W - w - left, top, H - h - top))
    top, left = (h - H) // 2, (w - W) // 2
    return y[..., top : top + H, left : left + W]


class SetGuided:
    """The mean loss of several objectives (one per text of the set) over the image at every scale."""

    def __init__(self, parts: Sequence, scales: Sequence[float] = SCALES):
        self.parts, self.scales = list(parts), tuple(scales)
        self.labels = self.parts[0].labels

    def loss(self, xs, rows):
        total, first = None, None
        for s in self.scales:
            view = [rescale(xs[0], s)]
            for k, p in enumerate(self.parts):
                loss, logits = p.loss(view, rows)
                total = loss if total is None else total + loss
                if s == 1.0 and k == 0:
                    first = logits
        return total / (len(self.scales) * len(self.parts)), first

    def logits(self, xs, rows):
        return self.parts[0].logits(xs, rows)


def reference_set(victim, examples) -> SetGuided:
    """sga-image: the victim's objective, with each reference caption (grounding: the box) as a target."""
    from dataclasses import replace

    refs = [list(ex.refs)[:MAX_REFS] or [ex.target] for ex in examples]
    k = max(len(r) for r in refs)
    parts = [
        victim.image_objective([replace(ex, target=r[j % len(r)]) for ex, r in zip(examples, refs)]) for j in range(k)
    ]
    return SetGuided(parts)
