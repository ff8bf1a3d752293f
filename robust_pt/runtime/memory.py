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


def probe_throughput(
    seconds: Callable[[int], float],
    limit: int,
    start: int = 8,
    gain: float = 0.1,
    flat: bool = False,
    room: Callable[[int], bool] | None = None,
    flat_gain: float = 0.25,
) -> int:
    """The batch size past which examples per second stop growing: doubling from `start` (at most
    `limit`) while the time per example, seconds(b) / b, falls by more than `gain`. flat: also while
    it stays within `flat_gain` of the best seen (an attack that pays a fixed cost per iteration of
    a batch, such as Square's bookkeeping, which this pass does not time, gains from any larger
    batch that costs about the same per example; the margin is wide because one timing is noisy).
    room(b): whether a pass of b examples fits in memory (CpuRoom), asked before each doubling. An
    out-of-memory error ends the doubling; the answer is the last size that ran (`start` if none
    did: the caller's out-of-memory handling, in_passes, takes it from there). Other errors
    propagate."""
    best, best_per = 0, float("inf")
    b = max(1, min(start, limit))
    while True:
        try:
            per = seconds(b) / b
        except Exception as err:  # noqa: BLE001 - only out-of-memory is an answer
            if not is_oom(err):
                raise
            break
        if best and per > best_per * (1 - gain) and not (flat and per <= best_per * (1 + flat_gain)):
            break
        best, best_per = b, min(per, best_per)
        nxt = min(b * 2, limit)
        if b >= limit or (room is not None and not room(nxt)):
            break
        b = nxt
    free_memory()
    return best or max(1, min(start, limit))


class CpuRoom:
    """On CPU, whether a larger pass fits in memory, from the passes measured so far.

    Why: a CPU has no out-of-memory error to stop a probe (the kernel's OOM killer ends the
    process), so the probe asks before it doubles. `measure(fn)` wraps a pass and records how far
    the process's peak resident memory rose above what it held before the pass; a pass of b
    examples is taken to need that rise times b / (the measured pass's examples), and fits if that,
    added to what the process holds, stays within `share` of what it holds plus what the machine
    has available. A heuristic: the peak is the process's peak so far (an earlier, higher peak
    makes the rise look larger), and memory the allocator kept from a smaller pass is counted as
    held. Where the numbers cannot be read (not Linux), every size fits as before.
    """

    def __init__(self, share: float = 0.5):
        self.share, self.rise, self.size = share, None, 0

    def measure(self, fn: Callable[[int], Any]) -> Callable[[int], Any]:
        def run(b: int):
            before = _rss()
            out = fn(b)
            peak = _peak_rss()
            if before is not None and peak is not None and b >= self.size:
                # the first pass at a size raises memory, repeats reuse what the allocator kept: the largest rise
                rise = max(0, peak - before)
                self.rise = rise if b > self.size or self.rise is None else max(self.rise, rise)
                self.size = b
            return out

        return run

    def __call__(self, b: int) -> bool:
        held, free = _rss(), _available()
        if self.rise is None or held is None or free is None or not self.size:
            return True
        return held + self.rise * b / self.size <= self.share * (held + free)


def _rss() -> int | None:
    """This process's resident memory in bytes (Linux), else None."""
    import os

    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _peak_rss() -> int | None:
    """This process's peak resident memory in bytes so far (Linux reports KiB), else None."""
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    except (ImportError, OSError, ValueError):
        return None


def _available() -> int | None:
    """The machine's available memory in bytes (Linux /proc/meminfo), else None."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


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
