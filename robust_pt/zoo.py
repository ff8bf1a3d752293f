"""Where a recipe's tuned checkpoints live, and building the missing ones.

`<cache>/zoo/<recipe>/<tuning name>-<task>`: one directory per (recipe, tuning entry,
task). A checkpoint whose config matches is reused, so a recipe trains only what is
missing (and `make demo` trains nothing the second time).
"""

from __future__ import annotations

from pathlib import Path

from .paths import cache_dir


def zoo_dir(recipe: str = "demo", root: Path | None = None) -> Path:
    return Path(root) if root is not None else cache_dir() / "zoo" / recipe


def entry_dir(task: str, name: str, recipe: str = "demo", root: Path | None = None) -> Path:
    """The checkpoint directory of tuning entry `name` (e.g. prompt) on `task`."""
    return zoo_dir(recipe, root) / f"{name}-{task}"


def build_zoo(recipe, log=print) -> dict[tuple[str, str], tuple[Path, dict]]:
    """Tune (or reuse) every (task, tuning entry) of a recipe: {(task, name): (dir, meta)}."""
    from .tuning.train import tune

    out = {}
    for task in recipe.tasks:
        for t in recipe.tuning:
            d = entry_dir(task, t.name, recipe.name, Path(recipe.zoo) if recipe.zoo else None)
            out[(task, t.name)] = (d, tune(recipe.base, task, t.tuning, t.train, d, log=log))
    return out
