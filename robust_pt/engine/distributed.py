"""The engine on several processes: one rank's run under torch.distributed, and `nproc > 1`
(starting the ranks itself). The protocol's mechanics (ranks, collectives, shards, merging,
launching) are robust_pt/runtime/distributed.py's; this module says what each step does with
a run: prepare it, open the run directory and the shards, attack, merge and summarise.

Five steps, each ending in a collective (runtime.distributed.agree), so a rank that fails
makes every rank stop with the same one-line error instead of waiting:
1. every rank prepares the run; the ranks agree on the batch size and the config;
2. rank 0 locks and opens the run directory; the batches it (and stale shards) hold;
3. every rank locks and opens its shard; the batches it holds are added to the done ones;
4. every rank attacks its batches (b % world == rank); the statistics are merged;
5. rank 0 merges the shards into the run directory and writes the summary.
"""

from __future__ import annotations

from contextlib import ExitStack

from ..errors import ConfigError
from ..runtime import distributed as dd
from ..runtime.locking import hold
from ..store import RunStore
from .loop import Batches, new_ctx, run_batches, window_size
from .prepare import Prepared, prepare
from .request import EvalRequest
from .summary import Run, finish, load_run

WORKER = "robust_pt.engine.worker"  # what `nproc > 1` runs on each rank (python -m WORKER SPEC)


def evaluate_distributed(where: dd.Place, req: EvalRequest, progress: bool, on_batch) -> Run:
    """One rank of a torch.distributed run (the five steps above)."""
    if req.out is None:
        raise ConfigError("a distributed run writes its shards to a run directory; pass --out (out=...)")
    created = dd.init(dd.rank_device(req.device, where))
    locks = ExitStack()  # rank 0: the run directory for the whole run; every rank: its shard while it writes
    try:
        prep = _prepare(where, req)
        done = _open_run(where, prep, locks)
        shard_lock = ExitStack()
        locks.enter_context(shard_lock)
        store = _open_shard(where, prep, shard_lock, done)
        stats = _attack(where, prep, store, shard_lock, done, progress, on_batch)
        return _merge(where, prep, stats)
    finally:
        locks.close()
        dd.finish(created)


def _prepare(where: dd.Place, req: EvalRequest) -> Prepared:
    """1. prepare on every rank; agree on the batch size and the config."""
    from ..store import fingerprint

    def report(p):
        return {"batch_size": p.batch_size if p else None, "config": p.config if p else None}

    prep, sts = dd.agree(where, lambda: prepare(req, where.world, dd.rank_device(req.device, where)), report)
    if req.batch_size == "auto":  # every rank probed its own device: the smallest answer fits them all
        prep.config["batch_size"] = min(st["batch_size"] for st in sts)
    auto = req.batch_size == "auto"
    configs = [{**st["config"], "batch_size": prep.config["batch_size"]} if auto else st["config"] for st in sts]
    dd.check_config([{"fingerprint": fingerprint(c), "config": c} for c in configs])
    return prep


def _open_run(where: dd.Place, prep: Prepared, locks: ExitStack) -> set[int]:
    """2. rank 0 locks and opens (or creates) the run directory; the batches it and stale shards hold."""

    def step() -> list[int]:
        if not where.main:
            return []
        locks.enter_context(hold(prep.out))
        held = sorted(RunStore(prep.out, prep.config, prep.info).done)
        for r, d in dd.shard_dirs(prep.out):
            if r >= where.world:
                held += sorted(dd.done_batches(d))
        return held

    _, sts = dd.agree(where, step, lambda held: {"done": held or []})
    return set(sts[0]["done"])


def _open_shard(where: dd.Place, prep: Prepared, shard_lock: ExitStack, done: set[int]) -> RunStore:
    """3. every rank locks and opens its shard (resuming it) and says which batches it holds (added to done)."""

    def step() -> RunStore:
        shard_lock.enter_context(hold(dd.shard_dir(prep.out, where.rank)))
        store = RunStore(dd.shard_dir(prep.out, where.rank), prep.config, {**prep.info, **dd.shard_info(where)})
        store.set_status(**dd.shard_info(where))
        return store

    store, sts = dd.agree(where, step, lambda s: {"done": sorted(s.done) if s else []})
    for st in sts:
        done |= set(st["done"])
    return store


def _attack(where, prep: Prepared, store: RunStore, shard_lock: ExitStack, done: set[int], progress, on_batch) -> dict:
    """4. attack this rank's batches; release the shard; the merged stats of all ranks."""
    n, bs = prep.n, prep.batch_size
    mine = [(b, b * bs) for b in dd.shard(prep.n_batches(), where)]
    todo = [(b, s) for b, s in mine if b not in done]
    total = sum(min(bs, n - s) for _, s in mine)
    work = Batches(todo, n, bs, total=total, done=total - sum(min(bs, n - s) for _, s in todo), mine=mine)
    ctx = new_ctx(prep, store, dd.sample_quota(prep.samples, where))
    hooks = [h for h in (on_batch, dd.kill_hook(where)) if h is not None]
    label = f"{prep.model_name} {prep.attack.name} {prep.task.name} [rank 0 of {where.world}]"

    def step() -> None:
        try:
            work.window = window_size(ctx, prep, work, store, where.main) if todo else bs
            run_batches(ctx, work, store, label if progress and where.main else None, hooks)
        finally:
            shard_lock.close()  # written: rank 0 may now merge and remove the shards

    # every rank must reach the collective, whatever its error
    _, sts = dd.agree(where, step, lambda _: {"stats": ctx.stats}, catch=Exception)
    return _merge_stats([st["stats"] for st in sts])


def _merge_stats(all_stats: list[dict]) -> dict:
    out: dict = {}
    for st in all_stats:
        for k, v in st.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[k] = (
                    max(out.get(k, 0), v) if k in ("wall_seconds", "pass_size", "attack_batch") else out.get(k, 0) + v
                )
    out["world"] = len(all_stats)
    out["ranks"] = all_stats
    return out


def _merge(where: dd.Place, prep: Prepared, stats: dict) -> Run:
    """5. rank 0 merges the shards into the run directory and writes the summary."""

    def step() -> Run | None:
        if not where.main:
            return None
        have = dd.merge(prep.out)
        missing = sorted(set(range(prep.n_batches())) - have)
        if missing:
            raise dd.DistributedError(
                f"batches {missing[:5]} have no records after the merge; run the same command again"
            )
        return finish(prep, RunStore(prep.out, prep.config, prep.info), stats)

    run, _ = dd.agree(where, step)
    return run if run is not None else load_run(prep.out)


def launch(req: EvalRequest, progress: bool, on_batch) -> Run:
    """evaluate(..., nproc=N) outside torchrun: start N local ranks (each runs the request from
    JSON, worker.py), then read the merged run."""
    from ..attacks import Attack

    if req.out is None:
        raise ConfigError("nproc > 1 writes each process's shard to a run directory; pass --out (out=...)")
    if on_batch is not None:
        raise ConfigError("on_batch cannot reach other processes; leave it out with nproc > 1")
    if isinstance(req.attack, Attack):
        raise ConfigError("nproc > 1: pass the attack as a preset name or file, not an Attack object")
    dd.launch(req.nproc, _worker_spec(req, progress), WORKER)
    return load_run(req.out)


def _worker_spec(req: EvalRequest, progress: bool) -> str:
    """What each rank runs: the request as JSON, with whether it shows a progress line."""
    import json

    return json.dumps({"request": req.to_json(), "progress": progress})
