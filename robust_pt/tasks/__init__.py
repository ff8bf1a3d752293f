"""Tasks: registered task kinds (kinds.py), named tasks (named.py: the embedded ShapesWorld
tasks register there), real dataset formats (formats/), their metrics and small helpers.

    from robust_pt.tasks import load_task
    task = load_task("shapes-vqa", split="test", limit=512, seed=0)
    ex = task[0]                      # generated on demand
    for batch in task.batches(64): ...

Importing this package needs numpy only; torch is imported inside `stack_images`.
"""

from __future__ import annotations

from typing import Sequence

from ..errors import TaskError
from . import classify, named  # noqa: F401  (classify registers the zero-shot classification tasks)
from .base import CAPTION, CLOSED, GROUND, MIXED, Example, Task
from .shapes_tasks import VE_ANSWERS, VQA_ANSWERS, ShapesTask

#: the built-in named tasks (ShapesWorld's); `named.names()` also has any registered since
TASKS: tuple[str, ...] = named.names()

__all__ = [
    "TASKS",
    "load_task",
    "stack_images",
    "Example",
    "Task",
    "ShapesTask",
    "CLOSED",
    "GROUND",
    "CAPTION",
    "MIXED",
    "VQA_ANSWERS",
    "VE_ANSWERS",
]


#: The image side of a task loaded without a size (then evaluate() gives it the model's).
DEFAULT_IMAGE_SIZE = 64


def load_task(
    name: str,
    split: str = "test",
    limit: int | None = None,
    seed: int = 0,
    size: int | None = None,
    num_examples: int | None = None,
    resize: str | None = None,
) -> Task:
    """A named task (tasks/named.py), or a real dataset as "NAME:DIR" (vqav2, snli-ve, refcoco,
    refcoco+, refcocog, coco-captions, or any registered format; see robust_pt/tasks/formats/).

    Named: `num_examples` overrides the split size (ShapesWorld: train 20000, val and test
    1000; the pretraining mix has only "train", 200000); `limit` then truncates it. Real datasets:
    `limit` takes a subsample seeded by `seed`; images are resized to `size` (`resize`:
    squash or crop, as the model's processor does).

    size: the image side in pixels. None (the default): 64, and `evaluate` regenerates the
    task at the attacked model's size; a given size is kept (a mismatch is an error)."""
    from . import formats

    real = formats.is_real(name)
    source = None if real else named.lookup(name)
    if not real and source is None:
        raise TaskError(
            f"unknown task {name!r}; known tasks: {', '.join(named.names())}, or a dataset in its official "
            f"format: {', '.join(f'{f}:DIR' for f in formats.names())}"
        )
    if source is not None and split not in source.splits:
        raise TaskError(f"task {name} has no split {split!r}; use one of: {', '.join(source.splits)}")
    for label, value in (("limit", limit), ("num_examples", num_examples)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise TaskError(f"{label} must be a positive integer, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise TaskError(f"seed must be a non-negative integer, got {seed!r}")
    if size is None:
        again = dict(split=split, limit=limit, seed=seed, num_examples=num_examples)
        task = load_task(name, size=DEFAULT_IMAGE_SIZE, resize=resize, **again)
        # evaluate() calls it with the model's size and resize mode (a resize asked for here wins)
        task.at_size = lambda s, mode=None: load_task(name, size=s, resize=resize or mode, **again)
        return task
    if isinstance(size, bool) or not isinstance(size, int) or size < 16:
        raise TaskError(f"image size must be an integer >= 16, got {size!r}")
    if source is None:
        return formats.load_real(name, split=split, limit=limit, seed=seed, size=size, resize=resize or "squash")
    n = num_examples if num_examples is not None else source.splits[split]
    if limit is not None:
        n = min(n, limit)
    return source.build(split, n, seed, size)


def stack_images(examples: Sequence[Example]):
    """A float32 torch tensor (B, 3, H, W) of the examples' images."""
    import numpy as np
    import torch

    if len(examples) == 0:
        raise ValueError("stack_images needs at least one example")
    return torch.from_numpy(np.stack([ex.image for ex in examples]).astype(np.float32, copy=False))
