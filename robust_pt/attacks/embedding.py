"""Embedding-space attacks: the paper's FGSM on image and text embeddings, and its PGD.

OFA-PT (section 4.3) attacks "the text and image embeddings" with one FGSM step and gives
no epsilon and no norm. robust-pt perturbs `Embeds.image` (the image tokens after the
stem) and `Embeds.text` (the word embeddings of the real text tokens; padding is never
touched) together, in L-inf, with a signed gradient of the task loss.

The unit of eps (our choice, recorded in every preset and run): with eps_unit "rms"
(the default) eps is relative to each example's own embedding scale, per modality,

    |delta_image| <= eps * rms(E_image),  |delta_text| <= eps * rms(E_text)  (element-wise)

where rms is the root-mean-square of the clean embedding entries of that example and
modality (text over its real tokens only). So eps = 0.1 means every coordinate moves by
at most 10 % of the typical embedding magnitude, whatever the model's scale: a model
cannot look robust just because its embeddings are larger, and image tokens (after a
conv stem) and word embeddings (std ~0.02 at init) get comparable relative budgets.
eps_unit "abs" gives plain absolute L-inf budgets instead. The norms written to the
records (linf, l2) are in the same unit: the perturbation divided by those scales.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models.base import Embeds
from .gradient import Objective, ascend, uniform_noise
from .methods import get
from .presets import AttackSpec


@dataclass
class EmbeddingResult:
    adv: Embeds
    logits: torch.Tensor | None
    steps: torch.Tensor
    linf: torch.Tensor  # (B,) in eps units
    l2: torch.Tensor  # (B,) in eps units
    grad_evals: int
    fwd_evals: int


def scales(e: Embeds, unit: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example scale (B,) of image and text embeddings: their RMS, or 1 for "abs"."""
    B = e.image.shape[0]
    if unit == "abs":
        one = torch.ones(B, dtype=e.image.dtype, device=e.image.device)
        return one, one.clone()
    s_img = e.image.detach().pow(2).mean(dim=(1, 2)).sqrt()
    m = e.text_mask.to(e.text.dtype).unsqueeze(-1)
    count = (m.sum(dim=(1, 2)) * e.text.shape[-1]).clamp_min(1)
    s_txt = ((e.text.detach().pow(2) * m).sum(dim=(1, 2)) / count).sqrt()
    return s_img.clamp_min(1e-12), s_txt.clamp_min(1e-12)


def run_embedding_attack(
    spec: AttackSpec, obj: Objective, e0: Embeds, eps: float, *, seeds: list[int], early_stop: bool | None = None
) -> EmbeddingResult:
    """Signed-gradient ascent on (image, text) embeddings inside the relative L-inf ball.

    obj.loss([image_emb, text_emb], rows) is the task loss of the examples `rows`.
    """
    es = spec.early_stop if early_stop is None else early_stop
    s_img, s_txt = scales(e0, spec.eps_unit)
    tmask = e0.text_mask.to(e0.text.dtype).unsqueeze(-1)  # (B, Nt, 1)
    si, st = s_img.view(-1, 1, 1), s_txt.view(-1, 1, 1)
    alpha = spec.step_size(eps)
    x0 = [e0.image.detach(), e0.text.detach()]

    def step(xs, gs, rows):
        return [xs[0] + alpha * si[rows] * gs[0].sign(), xs[1] + alpha * st[rows] * gs[1].sign() * tmask[rows]]

    def proj(xs, rows):
        bi, bt = eps * si[rows], eps * st[rows]
        di = torch.max(torch.min(xs[0] - x0[0][rows], bi), -bi)
        dt = torch.max(torch.min(xs[1] - x0[1][rows], bt), -bt) * tmask[rows]
        return [x0[0][rows] + di, x0[1][rows] + dt]

    start = x0
    steps = spec.steps
    if get(spec.kind, spec.method).one_step:  # FGSM; with a random start FGSM-RS (step size alpha, else eps)
        steps = 1
    if spec.random_start:
        ni = uniform_noise(x0[0].shape[1:], -eps, eps, seeds, x0[0]) * si
        nt = uniform_noise(x0[1].shape[1:], -eps, eps, [s + 1 for s in seeds], x0[1]) * st * tmask
        start = [x0[0] + ni, x0[1] + nt]
    r = ascend(obj, start, steps=steps, step=step, project=proj, early_stop=es)
    di = (r.xs[0] - x0[0]) / si
    dt = (r.xs[1] - x0[1]) / st * tmask
    B = di.shape[0]
    flat = torch.cat([di.reshape(B, -1), dt.reshape(B, -1)], 1)
    adv = Embeds(r.xs[0], r.xs[1], e0.text_mask)
    return EmbeddingResult(adv, r.logits, r.steps, flat.abs().amax(1), flat.norm(p=2, dim=1), r.grad_evals, r.fwd_evals)
