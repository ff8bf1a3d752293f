"""Attack objectives: the loss an attack maximises, as a function of images or embeddings.

The bridge between a model + task and the attack loops: closed-answer tasks (VQA, VE)
and plain classifiers maximise the cross-entropy over candidate logits (and have logits,
so early stopping and library backends apply); generative tasks (grounding, captioning)
maximise the per-example loss of the reference sequence (robust_pt.models.predict's
`task_loss_embeds` definition). Each objective covers one batch of examples; `rows`
select examples of that batch.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..models.base import Embeds


def _pick(seq: Sequence, rows: torch.Tensor) -> list:
    return [seq[i] for i in rows.tolist()]


class ClosedImage:
    """VLModel on a closed-answer task: images -> logits over the task's candidates."""

    def __init__(self, model, texts: Sequence[str], answers: Sequence[str], labels: torch.Tensor):
        self.model, self.texts, self.answers, self.labels = model, list(texts), list(answers), labels

    def _logits(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return self.model.candidate_logits(x, _pick(self.texts, rows), self.answers)

    def loss(self, xs, rows):
        lg = self._logits(xs[0], rows)
        return F.cross_entropy(lg, self.labels[rows], reduction="none"), lg

    def logits(self, xs, rows):
        return self._logits(xs[0], rows)

    def classifier(self, x0: torch.Tensor, rows: torch.Tensor | None = None) -> nn.Module:
        """images of the batch rows `rows` (all when None), or of subsets of them -> logits."""
        from .image import RowMatched

        return RowMatched(self._logits, x0, anchor=self.model, row_map=rows)


class ClassifierImage:
    """Any torch image classifier: images -> logits."""

    def __init__(self, module: nn.Module, labels: torch.Tensor):
        self.module, self.labels = module, labels

    def loss(self, xs, rows):
        lg = self.module(xs[0])
        return F.cross_entropy(lg, self.labels[rows], reduction="none"), lg

    def logits(self, xs, rows):
        return self.module(xs[0])

    def classifier(self, x0: torch.Tensor, rows: torch.Tensor | None = None) -> nn.Module:
        return self.module


class GenerativeImage:
    """VLModel on a generative task: images -> NLL of each reference sequence."""

    labels = None

    def __init__(self, model, texts: Sequence[str], targets: Sequence[str]):
        self.model, self.texts, self.targets = model, list(texts), list(targets)

    def loss(self, xs, rows):
        return self.model.sequence_loss(xs[0], _pick(self.texts, rows), _pick(self.targets, rows)), None

    def logits(self, xs, rows):
        return None


class ClosedEmbeds:
    """Closed-answer task as a function of (image embeddings, text embeddings)."""

    def __init__(self, model, mask: torch.Tensor, answers: Sequence[str], labels: torch.Tensor):
        self.model, self.mask, self.answers, self.labels = model, mask, list(answers), labels

    def _logits(self, xs, rows):
        return self.model.candidate_logits_from_embeds(Embeds(xs[0], xs[1], self.mask[rows]), self.answers)

    def loss(self, xs, rows):
        lg = self._logits(xs, rows)
        return F.cross_entropy(lg, self.labels[rows], reduction="none"), lg

    def logits(self, xs, rows):
        return self._logits(xs, rows)


class GenerativeEmbeds:
    """Generative task as a function of (image embeddings, text embeddings)."""

    labels = None

    def __init__(self, model, mask: torch.Tensor, targets: Sequence[str]):
        self.model, self.mask, self.targets = model, mask, list(targets)

    def loss(self, xs, rows):
        e = Embeds(xs[0], xs[1], self.mask[rows])
        return self.model.sequence_loss_from_embeds(e, _pick(self.targets, rows)), None

    def logits(self, xs, rows):
        return None
