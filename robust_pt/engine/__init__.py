"""The evaluation engine: a request in, a run directory out.

Modules: request.py (EvalRequest: the options, checked once), prepare.py (model, task, attack,
the run's config), loop.py (the batch loop), sweep.py (the per-batch eps loop), samples.py
(sample PNGs), summary.py (Run, the summary), distributed.py and worker.py (several processes),
run.py (execute a request; evaluate). `evaluate`, `execute`, `EvalRequest`, `Run` and `load_run`
are re-exported lazily, so importing the package stays light.
"""

from __future__ import annotations

_EXPORTS = {
    "evaluate": "run",
    "execute": "run",
    "EvalRequest": "request",
    "Run": "summary",
    "load_run": "summary",
    "summarize": "summary",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        from importlib import import_module

        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
