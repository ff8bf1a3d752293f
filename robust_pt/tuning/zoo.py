"""Where a recipe's tuned checkpoints live, and building the missing ones.

`<cache>/zoo/<recipe>/<tuning name>-<task>`: one directory per (recipe, tuning entry,
task); on a Hugging Face base (a recipe whose `base` is a model directory) each is tuned by
robust_pt/tuning/hf_train.py (a peft adapter, a delta or a save_pretrained model). A checkpoint whose config matches is reused, so a recipe trains only what is
missing (and `make demo` trains nothing the second time); one made from another base or
schedule is retrained in the default cache, refused in a recipe's own `zoo:` directory.
"""

from __future__ import annotations

from pathlib import Path

from ..paths import cache_dir


def zoo_dir(recipe: str = "demo", root: Path | None = None) -> Path:
    return Path(root) if root is not None else cache_dir() / "zoo" / recipe


def entry_dir(task: str, name: str, recipe: str = "demo", root: Path | None = None) -> Path:
    """The checkpoint directory of tuning entry `name` (e.g. prompt) on `task` (a dataset "NAME:DIR" by its slug)."""
    from ..tasks.named import slug

    return zoo_dir(recipe, root) / f"{name}-{slug(task)}"


def build_zoo(recipe, log=print, only: set | None = None) -> dict[tuple[str, str], tuple[Path, dict]]:
    """Tune (or reuse) every (task, tuning entry) of a recipe (those in `only`, if given):
    {(task, name): (dir, meta)}. An untuned entry (`method: none`) is the base checkpoint itself."""
    from . import checkpoint as ckpt
    from .train import tune

    out = {}
    for task, t in recipe.checkpoints():
        if only is not None and (task, t.name) not in only:
            continue
        if recipe.hf_base:
            out[(task, t.name)] = _hf_entry(recipe, task, t, log)
            continue
        if t.tuning is None:
            d = ckpt.checkpoint_dir(t.base_of(recipe.base))
            meta = ckpt.read_meta(d)
            # a base keeps clean metrics per downstream task; a tuned checkpoint has its task's only
            meta["clean_metrics"] = (meta.get("clean_metrics") or {}).get(task, {})
            out[(task, t.name)] = (d, meta)
            continue
        d = entry_dir(task, t.name, recipe.name, Path(recipe.zoo) if recipe.zoo else None)
        # the default zoo is a cache (a new base or schedule retrains it); a recipe's own
        # `zoo:` directory is the user's, and a different checkpoint there is refused
        meta = tune(
            t.base_of(recipe.base), task, t.tuning, t.train, d, log=log, replace_stale=not recipe.zoo,
            adversarial=t.adversarial, noise_sigma=t.noise_sigma,
        )  # fmt: skip
        out[(task, t.name)] = (d, meta)
    return out


def _hf_entry(recipe, task: str, t, log) -> tuple[Path, dict]:
    """(dir, meta) of a tuning entry on a Hugging Face base: the base itself (untuned) or train_hf's output."""
    from ..models.hf.base import side_meta
    from .hf_train import train_hf

    if t.tuning is None:
        meta = side_meta(Path(recipe.base))
        per_task = (meta.get("clean_metrics") or {}).get(task)  # a base pretrained on the mix keeps them per task
        return Path(recipe.base), {**meta, "clean_metrics": per_task if isinstance(per_task, dict) else {}}
    d = entry_dir(task, t.name, recipe.name, Path(recipe.zoo) if recipe.zoo else None)
    return d, train_hf(recipe.base, task, t.tuning, d, overwrite=not recipe.zoo, log=log)
