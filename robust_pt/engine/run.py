"""Run an EvalRequest: in this process, as one rank under torchrun, or on `nproc` processes it
starts; and `evaluate`, the public function that builds the request from its keywords.

    run = evaluate(model, task, attack="pgd", eps=[1/255, 2/255, 4/255, 8/255], seed=0, out="runs/x")
    run.summary   # one row per (model, task, attack, eps)
    run.records   # one row per (example, eps)

Why: the CLI, recipes and the API each build one EvalRequest (request.py) and hand it to
`execute`; the request's fields are evaluate's keywords (its signature is made from them), so
the option list exists once. `evaluate` also accepts any torch image classifier (nn.Module,
(N,C,H,W) in [0,1] -> logits) with `(images, labels)` tensors: they become a small in-memory
closed task (tasks/tensor.py).
"""

from __future__ import annotations

import inspect
from dataclasses import MISSING, fields
from typing import Callable

from ..errors import ConfigError
from ..runtime.locking import hold
from .prepare import prepare
from .request import OPTIONS_DOC, EvalRequest
from .summary import Run

_POSITIONAL = ("model", "task", "attack", "eps", "seed", "out")  # evaluate's leading parameters, in order
_OPTIONS = tuple(f.name for f in fields(EvalRequest) if f.name != "overrides")


def execute(req: EvalRequest, progress: bool = True, on_batch: Callable[[int], None] | None = None) -> Run:
    """Run the request; `progress`: a progress line; on_batch(b) after each stored batch (see evaluate)."""
    from ..runtime import distributed as dd
    from .loop import run_single

    where = dd.place()
    if req.distributed_launch:
        if where.distributed:
            raise ConfigError("nproc > 1 launches its own processes; under torchrun leave --nproc out")
        from .distributed import launch

        return launch(req, progress, on_batch)
    if where.distributed:
        from .distributed import evaluate_distributed

        return evaluate_distributed(where, req, progress, on_batch)
    prep = prepare(req)
    if prep.out is None:
        return run_single(prep, progress, on_batch)
    with hold(prep.out):  # one writer per run directory (a second process: LockedError, exit 2)
        return run_single(prep, progress, on_batch)


def evaluate(model, task=None, *args, progress: bool = True, on_batch=None, **options) -> Run:
    if isinstance(model, EvalRequest):  # evaluate(request): a request built elsewhere
        if task is not None or args or options:
            raise TypeError("evaluate(request) takes no other options (they are the request's)")
        return execute(model, progress, on_batch)
    if len(args) > len(_POSITIONAL) - 2:
        raise TypeError(f"evaluate() takes at most {len(_POSITIONAL)} positional arguments")
    for name, value in zip(_POSITIONAL[2:], args):
        if name in options:
            raise TypeError(f"evaluate() got multiple values for argument {name!r}")
        options[name] = value
    known = {k: options.pop(k) for k in list(options) if k in _OPTIONS}
    return execute(EvalRequest(model, task, **known, overrides=options), progress, on_batch)


def _signature() -> inspect.Signature:
    """evaluate's signature, made from EvalRequest's fields (what help() and IDEs show)."""
    P = inspect.Parameter
    params = []
    for f in fields(EvalRequest):
        if f.name == "overrides":
            continue
        kind = P.POSITIONAL_OR_KEYWORD if f.name in _POSITIONAL else P.KEYWORD_ONLY
        default = P.empty if f.default is MISSING else f.default
        params.append(P(f.name, kind, default=default, annotation=f.type))
        if f.name == "samples":
            params += [
                P("progress", P.KEYWORD_ONLY, default=True, annotation="bool"),
                P("on_batch", P.KEYWORD_ONLY, default=None, annotation="Callable[[int], None] | None"),
            ]
    params.append(P("overrides", P.VAR_KEYWORD))
    return inspect.Signature(params, return_annotation="Run")


evaluate.__signature__ = _signature()  # type: ignore[attr-defined]
evaluate.__doc__ = (
    "Attack `model` on `task` at every eps; returns a Run (summary, records).\n\n"
    + OPTIONS_DOC
    + "\n    The options are checked before anything is loaded (robust_pt/engine/request.py);"
    + "\n    evaluate(request) runs an EvalRequest built elsewhere.\n"
)
