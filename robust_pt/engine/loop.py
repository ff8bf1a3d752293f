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
or per batch (attacks/threats.py), so results do not depend on resuming.

The stored batch is the resume unit; the attack batch is chosen for speed (window_size).
Iteration-bound attacks (Square's queries, APGD's fixed iterations) cost about the same per
iteration whatever the batch, so many small batches cost many times one large one. Where an
example's outcome does not depend on its batch mates (Bound.poolable: every draw seeded per
example), fixed groups of stored batches are attacked together as one window (its survivors
at every eps together) and each batch's records are then stored as before. The groups do not
depend on what is already stored, so a run killed inside a window attacks the same group
again on resumption (storing only what is missing) and gives the same records bit for bit;
another attack batch gives them to floating point (batched kernels sum in another order).

Examples are generated or read one window at a time and a run store with a directory keeps no
records in memory, so memory during the loop does not grow with the number of examples
(Run.records, built at the end, does). An out-of-memory error halves the examples per forward
pass (the batch, its seeds and records stay the same) and retries (runtime/memory.py).
Distributed runs drive the same loop over each rank's shard (distributed.py).
"""

from __future__ import annotations

import json
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


def _run_batch(ctx: Ctx, b: int, index: list[int], examples: list[Example], batch_of: list[int]):
    """All records (every eps) of these examples attacked together; also how many survive the
    largest eps (sweep.py)."""
    from .sweep import run_batch

    return run_batch(ctx, b, index, examples, batch_of)


def _attack_batch(
    ctx: Ctx, b: int, index: list[int], examples: list[Example], batch_of: list[int]
) -> tuple[list[dict], int]:
    """_run_batch in passes of ctx.chunk examples (the attack batch when it is smaller than a stored
    batch; halved after an out-of-memory error, for this and every later batch). The stored
    batches, their seeds and records stay the same; records keep the (eps, index) order."""
    from ..runtime.memory import in_passes

    def one_pass(off: int, count: int):
        sl = slice(off, off + count)
        return _run_batch(ctx, b, index[sl], examples[sl], batch_of[sl])

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
    line counts the whole run, not this sitting only)."""
    return _survivors(store.records, eps)


@dataclass
class Batches:
    """Which batches a process attacks: (batch, first example) pairs still to do, of `n` examples in
    batches of `size`; `total` and `done` count this process's examples (its progress line). `mine`:
    every batch this process owns, done or not; `window`: examples attacked together (window_size;
    0: one batch at a time)."""

    todo: list[tuple[int, int]]
    n: int
    size: int
    total: int
    done: int
    mine: list[tuple[int, int]]
    window: int = 0

    def windows(self) -> list[list[tuple[int, int]]]:
        """This process's batches in fixed groups of at most `window` examples (at least one batch), as
        few groups as that allows and of sizes as even as batches allow (10 batches of 32 at 256 a
        window: two of 5, not 8 and 2, since an iteration-bound attack costs a small window about what
        it costs a full one); those with a batch still to do. The groups do not depend on what is done, so a resumed run
        attacks every example with the same batch mates as an uninterrupted one (its stored batches
        are attacked again and not stored twice)."""
        todo = {b for b, _ in self.todo}
        groups = self._groups(max(self.window, self.size))
        return [g for g in groups if any(b in todo for b, _ in g)]

    def _groups(self, most: int) -> list[list[tuple[int, int]]]:
        """The fewest groups of equally many consecutive batches with at most `most` examples each."""
        mine = self.mine
        examples = sum(min(self.size, self.n - s) for _, s in mine)
        for count in range(max(1, -(-examples // most)), len(mine) + 1):
            k = -(-len(mine) // count)
            groups = [mine[i : i + k] for i in range(0, len(mine), k)]
            if all(sum(min(self.size, self.n - s) for _, s in g) <= most for g in groups):
                return groups
        return [[b] for b in mine]


def window_size(ctx: Ctx, prep: Prepared, work: Batches, store: RunStore, main: bool = True) -> int:
    """Examples attacked together: the stored batch where an outcome depends on its batch mates
    (Bound.poolable), else --attack-batch N, or auto: the one this run chose at its first sitting
    (run.json's attack_batch), or probed (memory.probe_throughput from the stored batch up; never
    less than a batch; on CPU only for an iteration-bound method, else the stored batch) and kept
    in run.json. Smaller than a batch: passes of that size."""
    bs = work.size
    if not getattr(ctx.bound, "poolable", False):
        if isinstance(prep.attack_batch, int) and prep.attack_batch != bs and main:
            _warn(f"--attack-batch {prep.attack_batch} ignored: {prep.attack.name} attacks each batch of {bs} alone")
        return bs
    if isinstance(prep.attack_batch, int):
        if prep.attack_batch < bs:
            ctx.chunk = prep.attack_batch
        return prep.attack_batch
    stored = store.meta.get("attack_batch")
    if isinstance(stored, int) and stored > 0:
        return stored
    left = sum(min(bs, work.n - s) for _, s in work.mine)
    flat = _iteration_bound(prep)
    if left <= bs or (ctx.device.type == "cpu" and not flat):
        # on CPU a gradient pass stops gaining past a few dozen examples: the probe cost the demo's
        # PGD and FGSM runs 20 s (176 s against 156 s) and chose the stored batch anyway
        size = bs
    else:
        size = max(bs, _probed(ctx, prep, min(_probe_limit(ctx, flat), left), bs, flat))
    store.set_status(attack_batch=size)
    return size


def _iteration_bound(prep: Prepared) -> bool:
    """The method pays a fixed number of iterations per window (methods.AttackMethod.iteration_bound)."""
    from ..attacks.methods import get

    spec = prep.attack.spec
    m = get(spec.kind, spec.method)
    return bool(m is not None and m.iteration_bound)


def _probed(ctx: Ctx, prep: Prepared, limit: int, start: int, flat: bool) -> int:
    """memory.probe_throughput on a gradient pass of this model and task, once per process; flat (an
    iteration-bound method): as large as costs no more per example and fits in memory."""
    from ..runtime import memory
    from .prepare import fits_fn

    def probe() -> int:
        fits = fits_fn(ctx.model, ctx.vl, ctx.task)
        room = memory.CpuRoom() if ctx.device.type == "cpu" else None
        seconds = memory.timed(room.measure(fits) if room else fits)
        return memory.probe_throughput(seconds, limit, start, flat=flat, room=room)

    model = json.dumps(prep.config.get("model"), sort_keys=True, default=str)
    return memory.probed((model, prep.task.name, str(ctx.device), limit, flat), probe)


def _probe_limit(ctx: Ctx, flat: bool = False) -> int:
    """The largest attack batch probed: 256 examples on CPU (1024 for an iteration-bound method, whose
    probe asks memory.CpuRoom before each doubling), 1024 on CUDA (out of memory stops sooner)."""
    return 1024 if ctx.device.type == "cuda" or flat else 256


def run_batches(
    ctx: Ctx, work: Batches, store: RunStore, bar_label: str | None, hooks: Sequence[Callable[[int], None]]
) -> None:
    """Attack these batches in order, a window of them at a time; each batch's records go to `store`."""
    from ..runtime.progress import progress_bar

    module, todo = ctx.model, work.todo
    was_training = module.training
    module.eval()
    t_start = time.perf_counter()
    bar = progress_bar(bar_label, total=work.total, unit="examples") if bar_label and todo else nullcontext(None)
    survivors = _stored_survivors(store, ctx.eps[-1]) if bar_label and todo and work.done else 0
    try:
        with bar as advance:
            if advance is not None and work.done:
                advance(work.done, resumed=work.done)
            for window in work.windows():
                surv, count = _attack_window(ctx, work, store, window, hooks)
                survivors += surv
                if advance is not None:
                    advance(count, survivors=f"{survivors}@{eps_label(ctx.eps[-1])}")
    finally:
        module.train(was_training)
        ctx.stats["wall_seconds"] = time.perf_counter() - t_start


def _attack_window(ctx: Ctx, work: Batches, store: RunStore, window, hooks) -> tuple[int, int]:
    """Attack the window's batches together and store the records of each one not yet stored;
    (survivors at the largest eps, examples) of those."""
    t, n, bs = ctx.task, work.n, work.size
    # examples are generated (or read) lazily, one window at a time
    index = [i for _, s in window for i in range(s, min(n, s + bs))]
    batch_of = [b for b, s in window for _ in range(s, min(n, s + bs))]
    examples = [t[i] for i in index]
    recs, _ = _attack_batch(ctx, window[0][0], index, examples, batch_of)
    del examples
    todo = {b for b, _ in work.todo}  # a distributed rank's store does not hold what other stores hold
    stored = [b for b, _ in window if b in todo]
    for b in stored:
        store.append_batch(b, [r for r in recs if r["batch"] == b])
        ctx.stats["batches_run"] += 1
        for hook in hooks:
            hook(b)
    kept = [r for r in recs if r["batch"] in todo]
    count = len({r["index"] for r in kept})
    ctx.stats["examples_run"] += count
    ctx.stats["attack_batch"] = max(ctx.stats.get("attack_batch", 0), min(ctx.chunk or len(index), len(index)))
    return _survivors(kept, ctx.eps[-1]), count


def _survivors(records: list[dict], eps: float) -> int:
    """Examples not broken at eps and not wrong before the attack (every sweep's survivors() counts them)."""
    at = [r for r in records if isinstance(r.get("eps"), (int, float)) and abs(float(r["eps"]) - eps) < 1e-12]
    return sum(1 for r in at if r.get("broken_at") is None and r.get("clean_correct") is not False)


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
    mine = list(enumerate(range(0, n, bs)))
    todo = [(b, s) for b, s in mine if b not in store.done]
    work = Batches(todo, n, bs, total=n, done=n - sum(min(bs, n - s) for _, s in todo), mine=mine)
    ctx = new_ctx(prep, store, prep.samples)
    work.window = window_size(ctx, prep, work, store) if todo else bs
    label = f"{prep.model_name} {prep.attack.name} {prep.task.name}" if progress else None
    run_batches(ctx, work, store, label, [on_batch] if on_batch is not None else [])
    if prep.out is not None and reorder:  # resumed: put the batches back in order
        merge(prep.out)
        store = RunStore(prep.out, prep.config, prep.info)
    return finish(prep, store, ctx.stats)
