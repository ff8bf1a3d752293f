"""The public functions, re-exported lazily by robust_pt/__init__.py; no logic of their own.

They are the real functions (not wrappers), so `help(rpt.evaluate)` shows the signature
and docstring users call. `import robust_pt` stays light because this module is imported
only when one of them is first looked up.
"""

from __future__ import annotations

from .engine.run import evaluate
from .models.loading import load_model
from .report import build as report
from .tasks import load_task

__all__ = ["load_model", "load_task", "evaluate", "report"]
