"""Batch sizes and out-of-memory handling: `--batch-size auto`, probing the largest batch
that fits on a CUDA device, recognising and recovering from an out-of-memory error.

The engine uses these to pick a run's batch size (probe_batch_size, CPU_BATCH), its attack
batch (probe_throughput: the examples attacked together, chosen for examples per second) and
to split a batch into smaller passes after an out-of-memory error (in_passes, is_oom, free_memory).
"""

from __future__ import annotations

from typing import Any, Callable

from ..errors import ConfigError

CPU_BATCH = 32  # --batch-size auto on CPU


def is_oom(err: BaseException) -> bool:
    """A CUDA (or CPU allocator) out-of-memory error."""
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(err, oom):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def free_memory() -> None:
    """Give back what an out-of-memory attempt left allocated (Python garbage, the CUDA cache)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def probe_batch_size(fits: Callable[[int], None], limit: int, start: int = 1) -> int:
    """The largest power of two <= limit for which fits(b) does not run out of memory
    (doubling from `start`); other errors propagate."""
    best, b = 0, max(1, start)
    while b <= limit:
        try:
            fits(b)
        except Exception as err:  # noqa: BLE001 - only out-of-memory is an answer
            if not is_oom(err):
                raise
            free_memory()
            break
        best, b = b, b * 2
    free_memory()
    if best == 0:
        raise ConfigError(
            f"even a batch of {max(1, start)} runs out of memory on this device; use a smaller model, "
            f"--device cpu or a GPU with more memory"
        )
    return best


def probe_throughput(seconds: Callable[[int], float], limit: int, start: int = 8, gain: float = 0.1) -> int:
    """The batch size past which examples per second stop growing: doubling from `start` (at most
    `limit`) while the time per example, seconds(b) / b, falls by more than `gain`. An out-of-memory
    error ends the doubling; the answer is the last size that ran (`start` if none did: the caller's
    out-of-memory handling, in_passes, takes it from there). Other errors propagate."""
    best, best_per = 0, float("inf")
    b = max(1, min(start, limit))
    while True:
        try:
            per = seconds(b) / b
        except Exception as err:  # noqa: BLE001 - only out-of-memory is an answer
            if not is_oom(err):
                raise
            break
        if best and per > best_per * (1 - gain):
            break
        best, best_per = b, per
        if b >= limit:
            break
        b = min(b * 2, limit)
    free_memory()
    return best or max(1, min(start, limit))


_PROBED: dict = {}


def probed(key, probe: Callable[[], int]) -> int:
    """probe()'s answer for `key` (model, task, device, limit), measured once per process: a recipe's or
    the demo's runs of one model share one measurement."""
    if key not in _PROBED:
        _PROBED[key] = probe()
    return _PROBED[key]


def timed(run: Callable[[int], None], repeats: int = 3) -> Callable[[int], float]:
    """seconds(b): the median of `repeats` timed calls of run(b), after one untimed warm-up call."""
    import statistics
    import time

    def seconds(b: int) -> float:
        run(b)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            run(b)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    return seconds


def parse_batch_size(value: Any, name: str = "batch size") -> int | str:
    """A positive integer, or "auto"; `name`: the option as the caller spells it (--batch-size)."""
    if isinstance(value, str):
        v = value.strip().lower()
        if v == "auto":
            return "auto"
        if v.isdigit() and int(v) > 0:
            return int(v)
        raise ConfigError(f"{name} must be a positive integer or auto, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer or auto, got {value!r}")
    return int(value)


def in_passes(n: int, size: int, run_pass: Callable[[int, int], Any], on_shrink: Callable[[int, int], None]) -> tuple:
    """run_pass(offset, count) over items 0..n-1 in passes of `size`; after an out-of-memory error
    the size halves (on_shrink(old, new) is told) and every pass runs again. Returns (the passes'
    results in order, the size that fitted). Other errors propagate."""
    from ..errors import AttackError

    while True:
        size = min(size, n)
        try:
            return [run_pass(off, min(size, n - off)) for off in range(0, n, size)], size
        except Exception as err:  # noqa: BLE001 - only out-of-memory is retried
            if not is_oom(err):
                raise
            free_memory()
            if size <= 1:
                raise AttackError(
                    "out of memory with a single example per pass; use a smaller model, fewer "
                    "restarts or a device with more memory"
                ) from None
            on_shrink(size, size // 2)
            size //= 2
