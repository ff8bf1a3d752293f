"""Scale: ranks, shards and merging on torch.distributed (batch sizes and out-of-memory
retries: robust_pt/runtime/memory.py).

    torchrun --nproc_per_node=2 -m robust_pt attack --model CKPT --attack pgd --out runs/x
    robust-pt attack --model CKPT --attack pgd --out runs/x --nproc 2      # launches the same itself
    robust_pt.evaluate(ckpt, task, ..., out="runs/x", nproc=2)            # and so does the API

The examples are cut into fixed batches exactly as in a single process (batch b holds
examples b*B .. b*B+B-1, and every random choice is seeded by the example id or the batch
index), and rank k of W attacks the batches b with b % W == k: a disjoint, deterministic,
balanced shard. Each rank streams its records to its own run store,
runs/<id>/shards/rank-K/records.jsonl. At the end rank 0 merges every completed batch (of
the shards and of runs/<id>/records.jsonl) into runs/<id>/records.jsonl in batch order,
writes the summary and removes the shards: the merged records and summary are the ones a
single process writes.

Collectives (all_gather_object, nothing else): at the start every rank sends its config
fingerprint (ranks that disagree stop with one line) or its error; rank 0 opens the run
directory; every rank opens its shard and sends the batches it already holds, so a resumed
run skips every batch completed by any rank of any earlier run (whatever its world size);
at the end the ranks exchange their status and statistics and rank 0 merges. A killed
rank loses at most the batch it was attacking: run the same command again.

Process group: gloo on CPU, nccl on CUDA (each rank on cuda:LOCAL_RANK), initialised from
the variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT);
multi-node runs use torchrun's usual --nnodes/--node_rank/--rdzv-* options (docs/distributed.md).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import ConfigError, RobustPTError

SHARDS = "shards"
# seconds a rank waits for the others at a collective (the slowest shard decides the last one)
TIMEOUT_ENV = "ROBUST_PT_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 48 * 3600
# set by `launch` for its workers: where rank 0 writes the one-line error of a failed run
ERROR_FILE_ENV = "ROBUST_PT_LAUNCH_ERROR"
# testing hook: "RANK:BATCH" makes that rank SIGKILL itself right after storing that batch
KILL_ENV = "ROBUST_PT_TEST_KILL"


class DistributedError(RobustPTError):
    """A rank of a distributed run failed, or the ranks disagree."""


# ----------------------------------------------------------------------------- where this process is


@dataclass(frozen=True)
class Place:
    """This process's rank among `world` processes (rank 0 of 1 without torch.distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _env_int(name: str) -> int | None:
    v = os.environ.get(name)
    try:
        return int(v) if v not in (None, "") else None
    except ValueError:
        raise ConfigError(f"environment variable {name}={v!r} is not an integer (torchrun sets it)") from None


def place() -> Place:
    """From an initialised default process group, else from torchrun's variables, else 0 of 1."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Place(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK") or 0)
    world = _env_int("WORLD_SIZE") or 1
    if world <= 1:
        return Place()
    rank = _env_int("RANK")
    if rank is None:
        raise ConfigError("WORLD_SIZE is set but RANK is not; launch the ranks with torchrun")
    return Place(rank, world, _env_int("LOCAL_RANK") or 0)


def rank_device(device: Any, where: Place) -> Any:
    """The device of this rank: auto/cuda on a multi-process run means cuda:LOCAL_RANK."""
    import torch

    if not where.distributed or not torch.cuda.is_available():
        return device
    name = "auto" if device is None else str(device).strip().lower()
    if name in ("auto", "cuda"):
        return f"cuda:{where.local_rank % torch.cuda.device_count()}"
    return device


def init(device: Any) -> bool:
    """Initialise the default process group from torchrun's variables (gloo on CPU, nccl on
    CUDA); False if one already exists (the caller owns it) or this is a single process."""
    import torch
    import torch.distributed as dist

    if not dist.is_available() or dist.is_initialized() or not place().distributed:
        return False
    dev = torch.device(device) if device is not None and str(device) != "auto" else None
    cuda = dev is not None and dev.type == "cuda"
    if cuda:
        torch.cuda.set_device(dev)
    for var in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(var):
            raise ConfigError(
                f"WORLD_SIZE is set but {var} is not; launch the ranks with torchrun "
                f"(or set MASTER_ADDR and MASTER_PORT on every rank)"
            )
    timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout)
    return True


def finish(created: bool) -> None:
    import torch.distributed as dist

    if created and dist.is_initialized():
        dist.destroy_process_group()


def gather(obj: Any) -> list:
    """Every rank's `obj`, in rank order (all_gather_object on the default group)."""
    import torch.distributed as dist

    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


# ----------------------------------------------------------------------------- errors across ranks


def status(err: BaseException | None, **extra) -> dict:
    """What a rank tells the others at a collective: ok, or its error (class and message)."""
    if err is None:
        return {"ok": True, **extra}
    return {
        "ok": False,
        "type": type(err).__name__,
        "message": str(err),
        "robust": isinstance(err, RobustPTError),
        **extra,
    }


def raise_first(statuses: Sequence[dict], where: Place, own: BaseException | None) -> None:
    """If any rank failed, raise on every rank: its own error, else the first failed rank's."""
    if own is not None:
        raise own
    for r, st in enumerate(statuses):
        if not st["ok"]:
            cls = _error_class(st["type"]) if st.get("robust") else DistributedError
            msg = st["message"] if st.get("robust") else f"{st['type']}: {st['message']}"
            raise cls(f"rank {r}: {msg}")


def agree(
    where: Place,
    step: Callable[[], Any],
    report: Callable[[Any], dict] = lambda _: {},
    catch: type[BaseException] = RobustPTError,
) -> tuple[Any, list]:
    """One step of a distributed protocol: every rank runs `step` (rank-local work only), then the
    ranks exchange their status (ok or the error, plus report(result)) and every rank raises the
    first failure, so none waits forever at a later collective. Returns (result, statuses).
    `catch`: the errors that are shared (others propagate at once)."""
    err, value = None, None
    try:
        value = step()
    except catch as e:
        err = e
    sts = gather(status(err, **report(value)))
    raise_first(sts, where, err)
    return value, sts


def _error_class(name: str) -> type[RobustPTError]:
    from .. import errors

    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, RobustPTError):
        return cls
    return DistributedError


def check_config(statuses: Sequence[dict]) -> None:
    """The ranks must run the same config: compare the fingerprints gathered at the start."""
    from ..store import config_diff

    first = statuses[0]
    for r, st in enumerate(statuses[1:], start=1):
        if st["fingerprint"] != first["fingerprint"]:
            diff = config_diff(first["config"], st["config"]) or ["config"]
            raise DistributedError(
                f"the ranks disagree on the run config (rank {r} differs from rank 0 in: "
                f"{', '.join(diff)}); start every rank with the same command, checkpoint and "
                f"data"
            )


def check_world(world: int, n: int) -> None:
    """More processes than examples would leave a rank with nothing to attack."""
    if world > n:
        raise ConfigError(f"{world} processes (--nproc) for {n} examples; use --nproc {n} or fewer")


def reports_errors(where: Place) -> bool:
    """Whether this rank prints a failed run's one-line error (local rank 0: once per node)."""
    return where.local_rank == 0 and not os.environ.get(ERROR_FILE_ENV)


# ----------------------------------------------------------------------------- shards and merging


def shard(n_batches: int, where: Place) -> list[int]:
    """The batches of this rank: b % world == rank (disjoint, deterministic, balanced)."""
    return list(range(where.rank, n_batches, where.world))


def shard_dir(out: Path, rank: int) -> Path:
    return Path(out) / SHARDS / f"rank-{rank}"


def shard_dirs(out: Path) -> list[tuple[int, Path]]:
    """Existing shard directories of a run directory, by rank."""
    root = Path(out) / SHARDS
    if not root.is_dir():
        return []
    found = []
    for d in root.iterdir():
        if d.is_dir() and d.name.startswith("rank-") and d.name[5:].isdigit():
            found.append((int(d.name[5:]), d))
    return sorted(found)


def done_batches(run_dir: Path) -> set[int]:
    """Completed batches in a run (or shard) directory's records.jsonl (streamed)."""
    from ..store import RECORDS, batch_spans

    return {sp.batch for sp in batch_spans(Path(run_dir) / RECORDS)[0]}


def merge(out: Path) -> set[int]:
    """Fold every shard's completed batches into out/records.jsonl, all batches in
    ascending order (the file a single process writes), move the shards' sample images,
    then remove the shards. Streams byte ranges; a no-op on a merged run in order."""
    from ..store import RECORDS, SAMPLES, batch_spans, write_spans

    out = Path(out)
    spans, clean = batch_spans(out / RECORDS)
    chosen = {sp.batch: sp for sp in spans}
    shards = shard_dirs(out)
    for _, d in shards:
        for sp in batch_spans(d / RECORDS)[0]:
            chosen.setdefault(sp.batch, sp)  # the same batch twice is the same records: keep the first
    ordered = [chosen[b] for b in sorted(chosen)]
    if shards or not clean or [sp.batch for sp in spans] != [sp.batch for sp in ordered]:
        write_spans(out / RECORDS, ordered)
    for _, d in shards:
        if (d / SAMPLES).is_dir():
            (out / SAMPLES).mkdir(exist_ok=True)
            for png in sorted((d / SAMPLES).glob("*.png")):
                if not (out / SAMPLES / png.name).exists():
                    os.replace(png, out / SAMPLES / png.name)
    if shards:
        shutil.rmtree(out / SHARDS, ignore_errors=True)
    return set(chosen)


def sample_quota(samples: int, where: Place) -> int:
    """Each rank saves its share of the adversarial PNGs per eps (together: `samples`)."""
    return samples // where.world + (1 if where.rank < samples % where.world else 0)


def kill_hook(where: Place) -> Callable[[int], None] | None:
    """Testing: ROBUST_PT_TEST_KILL=RANK:BATCH makes that rank SIGKILL itself after that batch."""
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return None
    rank, batch = (int(x) for x in spec.split(":"))
    if rank != where.rank:
        return None

    def hook(b: int) -> None:
        if b == batch:
            import signal

            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def shard_info(where: Place) -> dict:
    return {
        "shard": {
            "rank": where.rank,
            "world": where.world,
            "local_rank": where.local_rank,
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
    }


# ----------------------------------------------------------------------------- launching


def jsonable(name: str, value: Any) -> Any:
    """A value another process can read back from JSON, or the one-line error for one that cannot travel."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float)) for v in value):
        return list(value)
    raise ConfigError(
        f"nproc > 1 starts fresh processes that each load their own copy: {name} must be a "
        f"checkpoint directory, a task name or plain values, not a {type(value).__name__} "
        f"(or launch the script itself with torchrun)"
    )


def launch(nproc: int, spec: str, module: str) -> None:
    """Run `python -m MODULE SPEC_FILE` on `nproc` local ranks with torch's elastic launcher (what
    torchrun runs), rendezvous on 127.0.0.1; `spec` (JSON) is written to SPEC_FILE. The caller
    (the engine's worker, robust_pt/engine/worker.py) knows what the spec means; a rank that fails
    on bad input writes its one-line error to $ROBUST_PT_LAUNCH_ERROR (rank 0), raised here."""
    import logging
    import uuid

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    tmp = Path(tempfile.mkdtemp(prefix="robust-pt-launch-"))
    spec_file, error_file = tmp / "spec.json", tmp / "error.json"
    spec_file.write_text(spec)
    saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", ERROR_FILE_ENV)}
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    os.environ[ERROR_FILE_ENV] = str(error_file)
    loggers = [
        logging.getLogger(n)
        for n in ("torch.distributed.elastic", "torch.distributed.launcher", "torch.multiprocessing")
    ]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        cfg = LaunchConfig(
            min_nodes=1,
            max_nodes=1,
            nproc_per_node=nproc,
            run_id=uuid.uuid4().hex,
            rdzv_backend="c10d",
            rdzv_endpoint="127.0.0.1:0",
            max_restarts=0,
            monitor_interval=0.2,
        )
        try:
            elastic_launch(cfg, sys.executable)("-m", module, str(spec_file))
        except ChildFailedError as err:
            if error_file.exists():
                e = json.loads(error_file.read_text())
                raise _error_class(e["type"])(e["message"]) from None
            fails = ", ".join(f"rank {r} exit code {f.exitcode}" for r, f in sorted(err.failures.items()))
            raise DistributedError(
                f"a rank failed ({fails}); run the same command again to resume (completed batches are kept)"
            ) from None
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(tmp, ignore_errors=True)
