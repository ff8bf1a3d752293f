"""The one interface every vision-language model sits behind (built-in, Hugging Face, peft).

The engine and the attacks only ever talk to a `VLModel`. Images enter as float tensors
(B, 3, H, W) in [0, 1] at `image_size`; any normalisation happens inside the model, so
an eps means the same thing for every backend. Embedding-space attacks use the split
`embed` -> `*_from_embeds` path: `Embeds` holds the continuous inputs of the encoder.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import torch
from torch import nn


@dataclass
class Embeds:
    """Continuous encoder inputs: what an embedding-space attack perturbs."""

    image: torch.Tensor  # (B, Ni, d) image-token embeddings (after the stem)
    text: torch.Tensor  # (B, Nt, d) text-token embeddings (before position embeddings)
    text_mask: torch.Tensor  # (B, Nt) bool, True for real tokens

    def with_(self, image: torch.Tensor | None = None, text: torch.Tensor | None = None) -> "Embeds":
        return replace(self, image=self.image if image is None else image, text=self.text if text is None else text)

    def index(self, idx: torch.Tensor | slice) -> "Embeds":
        return Embeds(self.image[idx], self.text[idx], self.text_mask[idx])


class VLModel(nn.Module):
    """Interface of a vision-language model as robust-pt sees it.

    Subclasses implement the embeds path; the image path is derived from it.
    `meta` carries what the checkpoint says about itself (method, task, answers, ...).
    """

    image_size: int = 64
    meta: dict

    # --- to implement -------------------------------------------------------------
    def embed(self, images: torch.Tensor, texts: Sequence[str]) -> Embeds:
        """Image and text embeddings for a batch (differentiable w.r.t. images)."""
        raise NotImplementedError

    def candidate_logits_from_embeds(self, embeds: Embeds, candidates: Sequence[str]) -> torch.Tensor:
        """(B, K) log-likelihood of each candidate answer: logits over candidates."""
        raise NotImplementedError

    def sequence_loss_from_embeds(self, embeds: Embeds, targets: Sequence[str]) -> torch.Tensor:
        """(B,) per-example mean token cross-entropy of the target sequences."""
        raise NotImplementedError

    def generate_from_embeds(self, embeds: Embeds, max_len: int = 24, beam: int = 1) -> list[str]:
        """Greedy (beam=1) or beam-search decoding."""
        raise NotImplementedError

    # --- derived ------------------------------------------------------------------
    def candidate_logits(self, images: torch.Tensor, texts: Sequence[str], candidates: Sequence[str]) -> torch.Tensor:
        return self.candidate_logits_from_embeds(self.embed(images, texts), candidates)

    def sequence_loss(self, images: torch.Tensor, texts: Sequence[str], targets: Sequence[str]) -> torch.Tensor:
        return self.sequence_loss_from_embeds(self.embed(images, texts), targets)

    def generate(self, images: torch.Tensor, texts: Sequence[str], max_len: int = 24, beam: int = 1) -> list[str]:
        return self.generate_from_embeds(self.embed(images, texts), max_len=max_len, beam=beam)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def trained_task(self) -> str | None:
        return (getattr(self, "meta", None) or {}).get("task")

    @property
    def display_name(self) -> str:
        meta = getattr(self, "meta", None) or {}
        return meta.get("name") or meta.get("method") or type(self).__name__


class BoundClassifier(nn.Module):
    """A VLModel with its texts and candidates fixed: images -> logits.

    This is what image-space attack libraries (torchattacks, foolbox) see: a plain
    classifier over the candidate answers of the bound questions.
    """

    def __init__(self, model: VLModel, texts: Sequence[str], candidates: Sequence[str]):
        super().__init__()
        self.model = model
        self.texts = list(texts)
        self.candidates = list(candidates)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[0] != len(self.texts):
            raise ValueError(f"bound to {len(self.texts)} texts, got {images.shape[0]} images")
        return self.model.candidate_logits(images, self.texts, self.candidates)
