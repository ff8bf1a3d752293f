"""What a run declares about its threat model, attack method and task: run.json's `declares` block.

Why: the report must judge any run (which sanity checks apply, whether a verdict is binary,
what eps is measured in, whether the run is a corruption, what a gallery calls the input
text) without recognising an attack, kind or task by its name. The engine writes what the
threat model, the attack method and the task declare into run.json's info (never its config:
the config is the run's fingerprint), and the report reads it there. Runs written before
this block existed get the same block from their stored config (`derive`), through the same
registries (threat models, attack methods, task kinds), so old and new runs read alike.

    nested        eps sets are nested balls (else, e.g. corruptions, severities: no monotone check)
    verdict       "binary" (right / wrong) or "graded" (a score such as CIDEr)
    eps_unit      pixel, rms, words, severity, ...
    access        white-box, black-box (the method queries only), transfer (crafted on surrogates)
                  or corruption (natural corruptions: not an attack)
    perturbs      what it changes (image, embedding, text, image+text): a label
    image_only    it leaves the text alone (answers the text decides cannot break)
    huge_eps      the eps at which it should break nearly everything (None: not checked)
    metric        the task's headline metric
    text_label    what the task's input text is called (Question, Hypothesis, ...)
    candidates    the task has candidate answers (a prediction is one of them)
    sanity_roles  the method's roles in the gradient-masking checks: "white-box" (the strongest
                  gradient attacks), "steps" (more steps never weaker), "one-step" (never
                  stronger than "steps"), "black-box" (never stronger than "white-box")
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from ..runformat import eps_unit
from . import methods
from .core import declared, huge_eps


def _block(threat: dict, spec: dict, task: dict, surrogates: bool, image_size: int | None) -> dict:
    """The declares block from a threat model's declarations, the attack spec and the task's declarations."""
    kind, unit = str(spec.get("kind") or "image"), eps_unit(spec)
    norm = str(spec.get("norm") or "linf")
    method = methods.get(kind, str(spec.get("method") or ""))  # None: a method this installation lacks
    roles = tuple(method.sanity_roles) if method is not None else ()
    access = threat["access"]
    if surrogates:
        access = "transfer"
    elif method is not None and method.black_box:  # it only queries the model
        access = "black-box"
    return {
        "nested": bool(threat["nested"]),
        "verdict": task["verdict"],
        "eps_unit": unit,
        "access": access,
        "perturbs": threat["perturbs"],
        "image_only": bool(threat["image_only"]),
        "huge_eps": huge_eps(threat["huge"], norm, unit, image_size),
        "metric": task["metric"],
        "text_label": task["text_label"],
        "candidates": bool(task["candidates"]),
        "sanity_roles": list(roles),
    }


def declarations(threat, attack, task) -> dict:
    """What a run of `attack` (a built Attack) under `threat` (bound to surrogates or not) on `task` declares."""
    from ..tasks.kinds import declarations as task_declarations

    inner = getattr(threat, "inner", threat)  # a transfer threat model wraps the one it crafts with
    spec = attack.spec.to_dict()
    return _block(
        inner.declares(), spec, task_declarations(task), bool(getattr(threat, "surrogates", None)), task.image_size
    )


def derive(config: dict, metric: str | None = None) -> dict:
    """The declares block of a run written before run.json held one, from its config (attack spec, task,
    surrogates) through the registries; `metric`: the one its summary names, if any."""
    from ..tasks import kinds

    spec = config.get("attack") if isinstance(config.get("attack"), dict) else {}
    task_cfg: Any = config.get("task") if isinstance(config.get("task"), dict) else {"name": config.get("task")}
    kind_name = str(task_cfg.get("kind") or "closed")
    if kind_name in kinds.names():
        kind = kinds.get(kind_name)
        task = SimpleNamespace(name=str(task_cfg.get("name") or "task"), kind=kind_name)
        own = {"verdict": kind.verdict, "metric": kind.metric, "text_label": kinds.text_label(task)}
        own["candidates"] = kind.candidates
    else:  # a kind this installation does not know (another tool's run): judged right / wrong
        own = {"verdict": "binary", "metric": "score", "text_label": "Text", "candidates": False}
    task_decl = {**own, "metric": metric or task_cfg.get("metric") or own["metric"]}
    size = task_cfg.get("image_size")
    threat = declared(str(spec.get("kind") or "image"))
    surrogates = isinstance(config.get("surrogates"), list) and bool(config.get("surrogates"))
    return _block(threat, spec, task_decl, surrogates, int(size) if isinstance(size, (int, float)) else None)
