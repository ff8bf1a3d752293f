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
example), consecutive stored batches are attacked together as one window (its survivors at
every eps together) and each batch's records are then stored as before; a run killed inside a
window resumes at its first batch without records, and gives the same records.

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
    line counts the whole run, not this sitting only): not broken there and not wrong before the attack,
    as every sweep's survivors() counts them."""

    def at(r) -> bool:
        e = r.get("eps")
        return isinstance(e, (int, float)) and abs(float(e) - eps) < 1e-12

    return sum(1 for r in store.records if at(r) and r.get("broken_at") is None and r.get("clean_correct") is not False)


@dataclass
class Batches:
    """Which batches a process attacks: (batch, first example) pairs still to do, of `n` examples in
    batches of `size`; `total` and `done` count this process's examples (its progress line); up to
    `window` examples (whole batches, at least one) are attacked together (window_size)."""

    todo: list[tuple[int, int]]
    n: int
    size: int
    total: int
    done: int
    window: int = 0  # 0: one batch at a time

    def windows(self) -> list[list[tuple[int, int]]]:
        """The todo batches in order, grouped: consecutive ones while they fit `window` examples."""
        out: list[list[tuple[int, int]]] = []
        used = 0
        for b, s in self.todo:
            k = min(self.size, self.n - s)
            if out and used + k <= self.window:
                out[-1].append((b, s))
                used += k
            else:
                out.append([(b, s)])
                used = k
        return out


def window_size(ctx: Ctx, prep: Prepared, work: Batches) -> int:
    """Examples attacked together: the stored batch where an outcome depends on its batch mates
    (Bound.poolable), else --attack-batch N, or probed (auto: examples per second of a gradient pass,
    memory.probe_throughput; never less than a batch). Smaller than a batch: passes of that size."""
    from ..runtime import memory

    bs = work.size
    if not getattr(ctx.bound, "poolable", False):
        if isinstance(prep.attack_batch, int) and prep.attack_batch != bs:
            _warn(
                f"attack batch {prep.attack_batch} ignored: {prep.attack.name} draws its randomness per batch, so "
                f"each batch of {bs} is attacked alone (--batch-size sets it)"
            )
        return bs
    if isinstance(prep.attack_batch, int):
        if prep.attack_batch < bs:
            ctx.chunk = prep.attack_batch
        return prep.attack_batch
    left = sum(min(bs, work.n - s) for _, s in work.todo)
    if left <= bs:
        return bs
    key = (json.dumps(prep.config.get("model"), sort_keys=True, default=str), prep.task.name, str(ctx.device))
    if key not in _PROBED:
        from .prepare import fits_fn

        _PROBED[key] = memory.probe_throughput(_timed(fits_fn(ctx.model, ctx.vl, ctx.task)), limit=_probe_limit(ctx))
    return max(bs, min(_PROBED[key], left))


_PROBED: dict[tuple, int] = {}  # probe_throughput's answers in this process: (model, task, device) -> examples


def _probe_limit(ctx: Ctx) -> int:
    """The largest attack batch probed: 256 examples on CPU, 1024 on CUDA (out of memory stops sooner)."""
    return 1024 if ctx.device.type == "cuda" else 256


def _timed(fits: Callable[[int], None]) -> Callable[[int], float]:
    """seconds(b): the median of three timed passes of fits(b), after one untimed warm-up pass."""
    import statistics

    def seconds(b: int) -> float:
        fits(b)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            fits(b)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    return seconds


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
    """Attack the window's batches together and store each batch's records; (survivors, examples)."""
    t, n, bs = ctx.task, work.n, work.size
    # examples are generated (or read) lazily, one window at a time
    index = [i for _, s in window for i in range(s, min(n, s + bs))]
    batch_of = [b for b, s in window for _ in range(s, min(n, s + bs))]
    examples = [t[i] for i in index]
    recs, surv = _attack_batch(ctx, window[0][0], index, examples, batch_of)
    del examples
    for b, _ in window:
        store.append_batch(b, [r for r in recs if r["batch"] == b])
        ctx.stats["batches_run"] += 1
        for hook in hooks:
            hook(b)
    ctx.stats["examples_run"] += len(index)
    ctx.stats["attack_batch"] = max(ctx.stats.get("attack_batch", 0), len(index))
    return surv, len(index)


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
    work.window = window_size(ctx, prep, work) if todo else bs
    label = f"{prep.model_name} {prep.attack.name} {prep.task.name}" if progress else None
    run_batches(ctx, work, store, label, [on_batch] if on_batch is not None else [])
    if prep.out is not None and reorder:  # resumed: put the batches back in order
        merge(prep.out)
        store = RunStore(prep.out, prep.config, prep.info)
    return finish(prep, store, ctx.stats)
