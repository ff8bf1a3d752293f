"""The public functions (re-exported lazily by robust_pt/__init__.py); no logic of their own.

load_model is robust_pt/models/loading.py's (the registry of model families); the others
import their module on first call, so `import robust_pt.api` stays light.
"""

from __future__ import annotations

from .models.loading import load_model

__all__ = ["load_model", "load_task", "evaluate", "report"]


def load_task(name: str, split: str = "test", limit: int | None = None, seed: int = 0, **kw):
    """A task by name (shapes-vqa, shapes-ve, shapes-ground, shapes-caption)."""
    from .tasks import load_task as _load

    return _load(name, split=split, limit=limit, seed=seed, **kw)


def evaluate(*args, **kwargs):
    """Attack a model on a task; see robust_pt.engine.evaluate."""
    from .engine import evaluate as _evaluate

    return _evaluate(*args, **kwargs)


def report(*args, **kwargs):
    """Build a robustness-gap report from run directories; see robust_pt.report."""
    from .report import build

    return build(*args, **kwargs)
