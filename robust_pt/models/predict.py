"""Predictions and task losses of a VLModel on a batch, the same for every task kind.

The clean evaluation, the training-time evaluation and the attack engine all call
these, so "correct" means one thing everywhere. What a task's kind declares (tasks/kinds.py)
decides how: logits over its candidate answers, or generated text of the kind's length.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..tasks.base import Example, Task
from ..tasks.kinds import kind_of
from .base import Embeds, VLModel


def images_of(examples: Sequence[Example], device=None) -> torch.Tensor:
    import numpy as np

    x = torch.from_numpy(np.stack([ex.image for ex in examples])).float()
    return x.to(device) if device is not None else x


def predict_embeds(model: VLModel, task: Task, e: Embeds, beam: int = 1) -> list:
    """Closed: predicted candidate index; ground/caption: generated text."""
    with torch.no_grad():
        kind = kind_of(task)
        if kind.victim == "closed":  # logits over the candidate answers
            return model.candidate_logits_from_embeds(e, task.answers).argmax(-1).tolist()
        return model.generate_from_embeds(e, max_len=kind.gen_len, beam=beam)


def predict(model: VLModel, task: Task, images: torch.Tensor, texts: Sequence[str], beam: int = 1) -> list:
    with torch.no_grad():
        return predict_embeds(model, task, model.embed(images, texts), beam=beam)


def task_loss_embeds(model: VLModel, task: Task, e: Embeds, examples: Sequence[Example]) -> torch.Tensor:
    """Per-example loss an attack maximises: candidate CE (closed) or reference NLL."""
    if kind_of(task).victim == "closed":
        logits = model.candidate_logits_from_embeds(e, task.answers)
        labels = torch.tensor([ex.label for ex in examples], device=logits.device)
        return torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    return model.sequence_loss_from_embeds(e, [ex.target for ex in examples])


def evaluate_clean(
    model: VLModel, task: Task, batch_size: int = 128, limit: int | None = None, progress=None, beam: int = 1
) -> dict[str, float]:
    """Headline clean metrics of `model` on `task` (closed: accuracy; ground: Acc@0.5; caption: CIDEr, BLEU-4)."""
    n = len(task) if limit is None else min(limit, len(task))
    exs, preds = [], []
    was_training = model.training
    model.eval()
    dev = model.device
    for start in range(0, n, batch_size):
        batch = [task[i] for i in range(start, min(n, start + batch_size))]
        preds += predict(model, task, images_of(batch, dev), [ex.text for ex in batch], beam=beam)
        exs += batch
        if progress is not None:
            progress(len(batch))
    model.train(was_training)
    return task.corpus_metrics(exs, preds)
