"""Named tasks: what `load_task(NAME)`, `--task NAME` and a recipe's `tasks:` load by name.

Why: the CLI, the recipe reader and the engine used to keep their own lists of task names
(and their own exceptions for the ShapesWorld pretraining mix). A named task is now
registered once, with its kind (tasks/kinds.py), its splits and their sizes, and how it
is built; everyone else asks this registry. The ShapesWorld tasks register themselves
in tasks/shapes_tasks.py; real datasets are formats (`NAME:DIR`, tasks/formats/).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping


@dataclass(frozen=True)
class NamedTask:
    """A task loadable by name.

    splits: each split and its size (`num_examples` overrides it, `limit` truncates it).
    build: (split, number of examples, seed, image size) -> the Task.
    text_label: what its instruction text is called in reports ("" for its kind's label).
    """

    name: str
    kind: str
    splits: Mapping[str, int]
    build: Callable[[str, int, int, int], Any]
    text_label: str = ""


_tasks: dict[str, NamedTask] = {}


def register(task: NamedTask) -> NamedTask:
    """Add (or replace) a named task; returns it."""
    from .kinds import label_text

    _tasks[task.name] = task
    label_text(task.name, task.text_label)
    return task


def lookup(name: str) -> NamedTask | None:
    return _tasks.get(name)


def names() -> tuple[str, ...]:
    """Every registered task name, in registration order."""
    return tuple(_tasks)


def attackable(name: str) -> bool:
    """Whether a victim can judge the named task (a training mix cannot)."""
    from .kinds import get

    t = _tasks.get(name)
    return t is not None and get(t.kind).victim is not None


def training_mix(name: str) -> bool:
    """Whether the named task is a training mix (registered, but no victim can judge it)."""
    return name in _tasks and not attackable(name)


def dataset_spec(task: str) -> tuple[str, str] | None:
    """A dataset task "NAME:DIR" as (its format's name, lower case; DIR); None for a task loaded by name."""
    if ":" not in str(task):
        return None
    name, _, path = str(task).partition(":")
    return name.strip().lower(), path


def recorded_task(task: str) -> str:
    """The task name a run records in run.json (a dataset "NAME:DIR": its format's NAME)."""
    spec = dataset_spec(task)
    return spec[0] if spec else task


def slug(task: str) -> str:
    """A task as a file name part: a named task as it is; a dataset "NAME:DIR" as NAME-<DIR's last part>
    (run and checkpoint directories of recipes)."""
    import re
    from pathlib import PurePath

    spec = dataset_spec(task)
    if spec is None:
        return task
    name, path = spec
    tail = PurePath(path.rstrip("/\\")).name or "data"
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", f"{name}-{tail}")
