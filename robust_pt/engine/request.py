"""What one evaluation is asked to do, checked once: the EvalRequest.

Why: the CLI (`robust-pt attack`), the recipe runner and the API (`robust_pt.evaluate`) each used
to check seed, limit, batch size, nproc and the output paths in their own words. Now each builds
one EvalRequest, its constructor checks every option that can be checked without loading
anything (and that --out and --crafted can be written, before any work), and the engine and the
distributed workers carry it unchanged (to_json/from_json for the processes `nproc > 1` starts).
What needs the model, the task or the attack (eps against the preset's unit, the task's size)
is checked when the run is prepared (prepare.py).

Error messages name the option as the caller spells it: `EvalRequest(..., flags=True)` (the
CLI) says "--limit must be ...", the API and recipes say "limit must be ...".
"""

from __future__ import annotations

import json
from dataclasses import InitVar, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import ConfigError

# the options `robust_pt.evaluate` documents, in its order; help(EvalRequest) and evaluate's docstring
OPTIONS_DOC = """\
    model: a checkpoint directory, a VLModel, or any torch image classifier.
    task: a task name (loaded at the model's image size), a Task, (images, labels)
      tensors for a classifier, or None for the task the model was tuned on.
    attack: a preset name, a path to a preset file, or an Attack; **overrides
      (steps=, backend=, random_start=, early_stop=, restarts=, queries=, ...) adjust it.
    eps: a number, a list, or a string such as "1/255,2/255"; default: the preset's grid.
    seed: seeds random starts and library attacks (a non-negative integer).
    out: a run directory; records stream there and a re-run resumes. None: in memory.
    batch_size: examples per batch (the resume unit), or "auto": probed on CUDA (the largest
      power of two whose forward+backward fits), 32 on CPU, the stored one when resuming.
      An out-of-memory error halves the examples per forward pass and retries the batch.
    attack_batch: examples attacked together, or "auto": probed for throughput (examples per
      second of a gradient pass, doubling from a batch while it gains 10%) at a run's first
      sitting and kept in run.json for its resumption. Where an example's outcome does not
      depend on its batch mates (backend ours: every draw seeded per example) fixed groups of
      batches are attacked together, their survivors pooled at every eps, and each batch's
      records stored as before (the same to floating point whatever the attack batch: pin it
      for bit-identical reruns); library backends seeded per batch, set-level methods (SGA),
      text, joint and transfer attacks attack each batch alone.
    limit, split, task_seed: attack only the first `limit` examples of the task's `split`
      (generated tasks: drawn with `task_seed`).
    samples: adversarial PNGs saved per eps in the run directory.
    progress: a progress line on stderr.
    on_batch: called with the batch index after each batch is stored (progress hooks;
      raising from it stops the run, which a re-run then resumes).
    device, precision, base: how a checkpoint directory is loaded (robust_pt.load_model):
      auto/cpu/cuda, auto/fp32/bf16, and a peft adapter's base directory.
    nproc: > 1 runs the batches on that many local processes (torch.distributed, one
      shard each, merged into `out`); under torchrun the ranks are found from its variables
      and nproc is left out. See robust_pt/runtime/distributed.py and docs/distributed.md.
    surrogate, crafted: a transfer attack crafted on this model (a directory or module; a list,
      "A,B" or {label: dir}: an ensemble) and judged on `model`; crafted inputs kept in
      `crafted` for every target (robust_pt/attacks/transfer.py).
"""


@dataclass(frozen=True)
class EvalRequest:
    """One evaluation's options, checked on construction (see the module docstring).

    `overrides` adjust the attack preset (steps, backend, early_stop, queries, target, ...).
    `flags=True` (not stored): errors name the CLI's options (--limit) instead of the API's (limit).
    """

    model: Any
    task: Any = None
    attack: Any = "pgd"
    eps: Any = None
    seed: int = 0
    out: Path | None = None
    batch_size: int | str = 32
    attack_batch: int | str = "auto"
    limit: int | None = None
    split: str = "test"
    task_seed: int = 0
    samples: int = 8
    device: Any = None
    precision: str | None = None
    base: Any = None
    nproc: int | None = None
    surrogate: Any = None
    crafted: Path | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    flags: InitVar[bool] = False

    def __post_init__(self, flags: bool) -> None:
        from ..outputs import require_writable_dir
        from ..runtime.memory import parse_batch_size

        def name(option: str) -> str:
            return "--" + option.replace("_", "-") if flags else option

        set_ = object.__setattr__  # frozen: the checked, normalised values replace the given ones
        set_(self, "seed", _non_negative(name("seed"), self.seed))
        set_(self, "samples", _non_negative(name("samples"), self.samples))
        set_(self, "batch_size", parse_batch_size(self.batch_size, "--batch-size" if flags else "batch size"))
        set_(self, "attack_batch", parse_batch_size(self.attack_batch, name("attack_batch")))
        if self.limit is not None:
            set_(self, "limit", _positive(name("limit"), self.limit))
        if self.nproc is not None:
            set_(self, "nproc", _positive(name("nproc"), self.nproc))
            if self.limit is not None and self.nproc > self.limit:
                raise ConfigError(
                    f"{name('nproc')} {self.nproc} is larger than the number of examples ({self.limit}); "
                    f"use {name('nproc')} {self.limit} or fewer"
                )
        set_(self, "overrides", dict(self.overrides))
        if isinstance(self.eps, tuple):  # as JSON brings it back
            set_(self, "eps", list(self.eps))
        if self.crafted is not None:
            set_(self, "crafted", Path(self.crafted))
        if self.out is not None:  # before the model, the task or the attack is touched
            set_(self, "out", require_writable_dir(self.out, "run directory"))
        if self.crafted is not None and self.surrogate is not None:
            set_(self, "crafted", require_writable_dir(self.crafted, "crafted-inputs directory", "--crafted"))

    @property
    def distributed_launch(self) -> bool:
        """Whether this request starts its own processes (nproc > 1)."""
        return self.nproc is not None and self.nproc > 1

    def load_options(self) -> dict:
        """How checkpoint directories are loaded (robust_pt.load_model's device, precision, base)."""
        return {"device": self.device, "precision": self.precision, "base": self.base}

    # ------------------------------------------------------------------ JSON, for other processes

    def to_json(self) -> str:
        """The request as JSON, for the processes `nproc > 1` starts: each loads its own copy, so
        the model, task, attack and surrogates must be names or paths (a module: ConfigError)."""
        return json.dumps({f.name: _jsonable(f.name, getattr(self, f.name)) for f in fields(self)})

    @classmethod
    def from_json(cls, text: str) -> EvalRequest:
        raw = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


def _non_negative(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 0:
        raise ConfigError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def _positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _jsonable(name: str, value: Any) -> Any:
    """A value that survives JSON unchanged, or the one-line error for one that cannot travel."""
    from ..runtime.distributed import jsonable

    if name == "surrogate":
        return jsonable_surrogates(value)
    if name == "overrides":
        return {k: jsonable(k, v) for k, v in value.items()}
    return jsonable(name, value)


def surrogate_list(surrogate) -> list:
    """The surrogates asked for, as (label or None, source) pairs: None, a path or module, an "A,B"
    string, a list of those, or a {label: source} mapping (labels name them in summaries and reports)."""
    if surrogate is None:
        return []
    if isinstance(surrogate, dict):
        out = [(str(k), v) for k, v in surrogate.items()]
    else:
        items = surrogate if isinstance(surrogate, (list, tuple)) else [surrogate]
        out = []
        for s in items:
            out += [(None, p.strip()) for p in s.split(",") if p.strip()] if isinstance(s, str) else [(None, s)]
    if not out:
        raise ConfigError("surrogate is empty; give one or more checkpoint directories (A or A,B)")
    return out


def jsonable_surrogates(surrogate) -> list | dict | None:
    """The surrogates as paths (or {label: path}) for other processes (a module cannot travel: ConfigError)."""
    if surrogate is None:
        return None
    pairs = surrogate_list(surrogate)
    if any(not isinstance(src, (str, Path)) for _, src in pairs):
        raise ConfigError("nproc > 1: pass surrogates as checkpoint directories, not modules")
    if all(label is None for label, _ in pairs):
        return [str(src) for _, src in pairs]
    return {label or Path(src).name: str(src) for label, src in pairs}
