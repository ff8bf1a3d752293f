"""Progress of anything longer than a few seconds, visible both on a terminal and in log files.

On a terminal, a rich progress bar. When stderr is not a terminal (CI, nohup, SLURM) a bar
would be invisible or garble the log, so a plain line is printed instead, at most every
ROBUST_PT_LOG_EVERY seconds (default 30) and once more when the bar closes:
    [robust-pt] pgd shapes-vqa: 128/512 examples (25%) survivors=40 elapsed 1m02s eta 3m06s
ROBUST_PT_QUIET=1 silences both.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator, TextIO

from ..errors import ConfigError

QUIET_ENV = "ROBUST_PT_QUIET"
LOG_EVERY_ENV = "ROBUST_PT_LOG_EVERY"
DEFAULT_LOG_EVERY = 30.0

Advance = Callable[..., None]


def log_interval() -> float:
    """Seconds between two log lines, from ROBUST_PT_LOG_EVERY (default 30; 0 logs every advance)."""
    raw = os.environ.get(LOG_EVERY_ENV, "").strip()
    if not raw:
        return DEFAULT_LOG_EVERY
    try:
        every = float(raw)
    except ValueError:
        every = -1.0
    if not every >= 0.0:  # also rejects nan
        raise ConfigError(f"{LOG_EVERY_ENV}={raw!r}: give a number of seconds >= 0 (default 30)")
    return every


def format_duration(seconds: float) -> str:
    """42s, 1m02s, 2h03m04s (whole seconds, rounded)."""
    s = max(0, int(round(seconds)))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m:02d}m{s:02d}s"
    return f"{m}m{s:02d}s" if m else f"{s}s"


class LogProgress:
    """Plain progress lines for a log: at most one every `every` seconds, plus one at close.

    Fields given to advance() update the ones shown (a field stays until given again). The
    rate behind eta is measured from the first advance on, so a first jump (examples resumed
    from an earlier run) or a slow first step does not distort it.
    """

    def __init__(
        self,
        label: str,
        total: int,
        every: float,
        stream: TextIO,
        clock: Callable[[], float] = time.monotonic,
        unit: str | None = None,
        fields: dict | None = None,
    ) -> None:
        self.label, self.total, self.every, self.stream = label, total, every, stream
        self.clock, self.unit = clock, unit
        self.values: dict = dict(fields or {})
        self.done = 0
        self.resumed = 0  # examples an earlier sitting did: counted as done, not in the rate
        self.t0 = self._last = clock()
        self._first: tuple[float, int] | None = None  # (time, done) after the first advance
        self._dirty = False

    def advance(self, n: int = 1, **values) -> None:
        """n more done; an advance carrying `resumed=` (work of an earlier sitting) does not start the rate."""
        self.done += n
        self.values.update(values)
        self._dirty = True
        now = self.clock()
        if values.get("resumed") is not None and self._first is None:
            self.resumed += n
        elif self._first is None:
            self._first = (now, self.done)
        if now - self._last >= self.every:
            self._emit(now)

    def close(self) -> None:
        """The final line, unless nothing advanced since the last one."""
        if self._dirty:
            self._emit(self.clock())

    def _emit(self, now: float) -> None:
        print(self.line(now), file=self.stream, flush=True)
        self._last, self._dirty = now, False

    def line(self, now: float) -> str:
        unit = f" {self.unit}" if self.unit else ""
        pct = f" ({100 * self.done // self.total}%)" if self.total > 0 else ""
        extra = "".join(f" {k}={v}" for k, v in self.values.items())
        eta = self.eta(now)
        eta_s = format_duration(eta) if eta is not None else "?"
        return (
            f"[robust-pt] {self.label}: {self.done}/{self.total}{unit}{pct}{extra} "
            f"elapsed {format_duration(now - self.t0)} eta {eta_s}"
        )

    def eta(self, now: float) -> float | None:
        """Seconds left at the rate since the first advance (since the start before a second one)."""
        left = self.total - self.done
        if left <= 0:
            return 0.0
        if self._first is not None:
            t1, d1 = self._first
            if self.done > d1 and now > t1:
                return left * (now - t1) / (self.done - d1)
        own = self.done - self.resumed
        if self._first is not None and own > 0 and now > self.t0:
            return left * (now - self.t0) / own
        return None


def _ignore(n: int = 1, **values) -> None:
    """advance() when quiet."""


@contextmanager
def progress_bar(
    label: str, total: int, *, unit: str | None = None, clock: Callable[[], float] | None = None, **fields
) -> Iterator[Advance]:
    """Yields advance(n, **fields); shows the count done, extra fields (loss, survivors) and eta.

    A rich bar on a terminal; log lines (see LogProgress) when stderr is not one; nothing
    with ROBUST_PT_QUIET=1. `unit` ("examples", "steps") follows the count in log lines;
    `clock` (default time.monotonic) is for tests.
    """
    if os.environ.get(QUIET_ENV) == "1":
        yield _ignore
    elif not sys.stderr.isatty():
        log = LogProgress(label, total, log_interval(), sys.stderr, clock or time.monotonic, unit, fields)
        try:
            yield log.advance
        finally:
            log.close()
    else:
        with _rich_bar(label, total, fields) as advance:
            yield advance


@contextmanager
def _rich_bar(label: str, total: int, fields: dict) -> Iterator[Advance]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    # rich's own TimeRemainingColumn estimates from the last 30 s only: with batches slower than that it
    # shows nothing after the first one, and a resumed run's first jump distorts it. LogProgress's rate
    # (measured from the first advance on) is the one both displays use.
    rate = LogProgress(label, total, float("inf"), sys.stderr)
    extra = " ".join(f"{k}={{task.fields[{k}]}}" for k in fields) if fields else ""
    cols = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TextColumn("eta {task.fields[eta]}"),
    ]
    with Progress(*cols, transient=False) as prog:
        tid = prog.add_task(label, total=total, info=extra, eta="?")

        def advance(n: int = 1, **values) -> None:
            rate.advance(n, **values)
            eta = rate.eta(rate.clock())
            info = " ".join(f"{k}={v}" for k, v in values.items())
            prog.update(tid, advance=n, info=info, eta=format_duration(eta) if eta is not None else "?")

        yield advance
