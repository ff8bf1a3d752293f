"""The batch loop: for every fixed batch of examples, attack it, sweep eps, stream its records.

The engine knows no attack kind and no task kind. A run is prepared once (prepare.py): the
attack's threat model (attacks/core.py: image, embedding, text, joint, or any registered one)
checks what it needs, the victim (attacks/victim.py: classifier, closed-answer VL, generative
VL) is chosen by model and task, and the sweep (sweep.py) by the threat model's `nested` and
the victim's `binary` declarations. Then for every fixed batch of examples (deterministic
order, so a resumed run meets the same batches) sweep.run_batch makes the clean pass, perturbs
at each eps what the sweep says, lets the victim judge, and the batch's records for all eps
are appended to records.jsonl together (store.py); an interrupted run resumes at the first
batch without records. Random starts, library attacks and text attacks are seeded per example
(attacks/threats.py), so results do not depend on resuming.

Examples are generated or read one batch at a time and a run store with a directory keeps no
records in memory, so memory during the loop does not grow with the number of examples
(Run.records, built at the end, does). An out-of-memory error halves the examples per forward
pass (the batch, its seeds and records stay the same) and retries (runtime/memory.py).
Distributed runs drive the same loop over each rank's shard (distributed.py).
"""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..attacks.core import threat_model
from ..attacks.victim import make_victim
from ..runformat import eps_label
from ..runtime.devices import module_device as _device
from ..store import RunStore
from ..tasks.base import Example
from .prepare import Prepared, Setup
from .summary import Run, finish

# oneDNN keeps a compiled primitive per input shape. The engine's batches shrink as examples
# break, so the cache fills with one-off shapes and the process grew with every batch (+50 MB
# over 1024 examples in benchmarks/scale.py); without it memory stays flat at the same speed.
# Read by oneDNN when it first runs, so it only helps a process that has not run a conv yet.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "0")


def _new_stats() -> dict:
    return {
        "grad_evals": 0,
        "fwd_evals": 0,
        "gen_evals": 0,
        "clean_seconds": 0.0,
        "attack_seconds": 0.0,
        "batches_run": 0,
        "examples_run": 0,
    }


@dataclass
class Ctx(Setup):
    """One process's run: the victim, the threat model bound to it, the sweep (sweep.py reads these)."""

    model: nn.Module
    store: RunStore
    device: Any
    victim: Any = None  # attacks.victim.Victim
    bound: Any = None  # attacks.core.Bound
    sweep: Any = None  # sweep.Survivors / WorstSoFar / EveryLevel
    sample_counts: dict = field(default_factory=dict)
    chunk: int | None = None  # examples per pass after an out-of-memory error (None: the whole batch)
    stats: dict = field(default_factory=_new_stats)

    @property
    def early_stop(self) -> bool:
        return bool(self.attack.spec.early_stop and self.victim.early_stop_allowed)

    @property
    def backend(self) -> str:
        return self.attack.spec.backend

    def save_samples(self, eps: float, examples, x0: torch.Tensor, new: dict[int, dict]) -> None:
        if self.samples:
            from .samples import save_samples

            save_samples(self, eps, examples, x0, new)


def new_ctx(prep: Prepared, store: RunStore, samples: int) -> Ctx:
    from .sweep import choose

    ctx = Ctx(
        model=prep.module,
        vl=prep.vl,
        task=prep.task,
        attack=prep.attack,
        eps=prep.eps,
        seed=prep.seed,
        samples=samples,
        store=store,
        device=_device(prep.module),
    )
    ctx.victim = make_victim(prep.module, prep.task, ctx.device, ctx.stats)
    threat = prep.threat or threat_model(prep.attack.kind)
    ctx.bound = threat.bind(ctx.victim, prep.attack.spec, prep.seed)
    ctx.sweep = choose(threat.nested, ctx.victim.binary, bool(prep.attack.spec.target))  # the sweep, chosen once
    return ctx


# ----------------------------------------------------------------------------- one batch


def _run_batch(ctx: Ctx, b: int, start: int, examples: list[Example]) -> tuple[list[dict], int]:
    """All records (every eps) of batch b; also returns how many survive the largest eps (sweep.py)."""
    from .sweep import run_batch

    return run_batch(ctx, b, start, examples)


def _attack_batch(ctx: Ctx, b: int, start: int, examples: list[Example]) -> tuple[list[dict], int]:
    """_run_batch, split into smaller forward passes after an out-of-memory error: the
    batch (the resume unit, its seeds and records) stays the same, only the examples per
    pass halve, for this and every later batch. The records keep the unsplit order."""
    from ..runtime.memory import in_passes

    def one_pass(off: int, count: int):
        return _run_batch(ctx, b, start + off, examples[off : off + count])

    def shrink(size: int, new: int) -> None:
        ctx.chunk = new
        ctx.stats["oom_retries"] = ctx.stats.get("oom_retries", 0) + 1
        ctx.stats["pass_size"] = new
        _warn(f"out of memory with {size} examples per pass; retrying batch {b} with {new}")

    passes, size = in_passes(len(examples), ctx.chunk or len(examples), one_pass, shrink)
    recs = [r for rs, _ in passes for r in rs]
    surv = sum(sv for _, sv in passes)
    if size < len(examples):
        order = {e: k for k, e in enumerate(ctx.eps)}
        recs.sort(key=lambda r: (order[r["eps"]], r["index"]))
    return recs, surv


def _warn(msg: str) -> None:
    import sys

    if os.environ.get("ROBUST_PT_QUIET") != "1":
        print(f"warning: {msg}", file=sys.stderr)


# ----------------------------------------------------------------------------- the batches


def _stored_survivors(store: RunStore, eps: float) -> int:
    """Survivors at the last eps among the records an earlier sitting stored (so a resumed run's progress
    line counts the whole run, not this sitting only): not broken there and not wrong before the attack,
    as every sweep's survivors() counts them."""

    def at(r) -> bool:
        e = r.get("eps")
        return isinstance(e, (int, float)) and abs(float(e) - eps) < 1e-12

    return sum(1 for r in store.records if at(r) and r.get("broken_at") is None and r.get("clean_correct") is not False)


@dataclass
class Batches:
    """Which batches a process attacks: (batch, first example) pairs still to do, of `n` examples in
    batches of `size`; `total` and `done` count this process's examples (its progress line)."""

    todo: list[tuple[int, int]]
    n: int
    size: int
    total: int
    done: int


def run_batches(
    ctx: Ctx, work: Batches, store: RunStore, bar_label: str | None, hooks: Sequence[Callable[[int], None]]
) -> None:
    """Attack these batches in order; each batch's records go to `store`."""
    from ..runtime.progress import progress_bar

    module, t, todo, n, bs = ctx.model, ctx.task, work.todo, work.n, work.size
    was_training = module.training
    module.eval()
    t_start = time.perf_counter()
    bar = progress_bar(bar_label, total=work.total, unit="examples") if bar_label and todo else nullcontext(None)
    survivors = _stored_survivors(store, ctx.eps[-1]) if bar_label and todo and work.done else 0
    try:
        with bar as advance:
            if advance is not None and work.done:
                advance(work.done, resumed=work.done)
            for b, s in todo:
                # examples are generated (or read) lazily, one batch at a time
                examples = [t[i] for i in range(s, min(n, s + bs))]
                recs, surv = _attack_batch(ctx, b, s, examples)
                store.append_batch(b, recs)
                del recs, examples
                survivors += surv
                ctx.stats["batches_run"] += 1
                ctx.stats["examples_run"] += min(bs, n - s)
                if advance is not None:
                    advance(min(bs, n - s), survivors=f"{survivors}@{eps_label(ctx.eps[-1])}")
                for hook in hooks:
                    hook(b)
    finally:
        module.train(was_training)
        ctx.stats["wall_seconds"] = time.perf_counter() - t_start


def run_single(prep: Prepared, progress: bool, on_batch) -> Run:
    """The whole run in this process: resume the batches without records, then summarise."""
    from ..runtime.distributed import merge, shard_dirs

    store = RunStore(prep.out, prep.config, prep.info)
    reorder = bool(store.done)
    if prep.out is not None and shard_dirs(prep.out):  # the shards of an interrupted distributed run
        merge(prep.out)
        store = RunStore(prep.out, prep.config, prep.info)
        reorder = True
    n, bs = prep.n, prep.batch_size
    todo = [(b, s) for b, s in enumerate(range(0, n, bs)) if b not in store.done]
    work = Batches(todo, n, bs, total=n, done=n - sum(min(bs, n - s) for _, s in todo))
    ctx = new_ctx(prep, store, prep.samples)
    label = f"{prep.model_name} {prep.attack.name} {prep.task.name}" if progress else None
    run_batches(ctx, work, store, label, [on_batch] if on_batch is not None else [])
    if prep.out is not None and reorder:  # resumed: put the batches back in order
        merge(prep.out)
        store = RunStore(prep.out, prep.config, prep.info)
    return finish(prep, store, ctx.stats)
