"""An in-memory closed task over (images, labels) tensors, for plain torch image classifiers.

Why: `robust_pt.evaluate(classifier, (images, labels), ...)` attacks any nn.Module that maps
(N, C, H, W) images in [0, 1] to logits; the engine needs a Task, and this is it (checked:
shape, range, labels within the classifier's outputs; its sha256 fingerprints the data).
"""

from __future__ import annotations

import hashlib

import torch

from ..errors import TaskError
from .base import CLOSED, Example, Task


class TensorTask(Task):
    """An in-memory closed task over (images, labels) for plain image classifiers."""


def tensor_task(images, labels, n_classes: int) -> Task:
    x = torch.as_tensor(images).detach().float().cpu()
    y = torch.as_tensor(labels).detach().long().cpu().reshape(-1)
    if x.dim() != 4:
        raise TaskError(f"images must be a (N, C, H, W) tensor, got shape {tuple(x.shape)}")
    if x.shape[0] != y.shape[0]:
        raise TaskError(f"{x.shape[0]} images but {y.shape[0]} labels")
    if x.numel() and (float(x.min()) < 0 or float(x.max()) > 1):
        raise TaskError("images must lie in [0, 1] (normalise inside the model, not before)")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise TaskError(f"labels must lie in 0..{n_classes - 1} (the classifier has {n_classes} outputs)")
    arr = x.numpy()
    exs = [Example(id=str(i), image=arr[i], text="", target=str(int(y[i])), label=int(y[i])) for i in range(x.shape[0])]
    h = hashlib.sha256(arr.tobytes())
    h.update(y.numpy().tobytes())
    t = TensorTask(
        name="tensors",
        kind=CLOSED,
        split="-",
        metric="accuracy",
        answers=[str(k) for k in range(n_classes)],
        image_size=int(x.shape[-1]),
        _examples=exs,
    )
    t.sha256 = h.hexdigest()  # type: ignore[attr-defined]
    return t
