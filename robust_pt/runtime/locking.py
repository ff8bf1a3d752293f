"""One writer per directory: an exclusive OS lock (fcntl.flock) held for a whole run.

Why: two `robust-pt attack --out D` started together both appended every batch (records
twice, a wrong summary); two recipes sharing a zoo entry trained it twice and could read
it half-written. The lock is an `flock` on `<dir>/.robust-pt.lock`: the kernel releases it
when the holder exits or is killed, so a dead holder never blocks the next run (unlike a
PID file). The holder writes its PID into the file so a refused process can say who holds
it. The file itself stays (removing it would race with the next locker); it is empty of
meaning once no process holds the lock.

`hold(d, what, wait=False)`: a second writer gets LockedError (exit 2 from the CLI) with
the holder's PID; `wait=True` blocks until the holder finishes (zoo entries: the waiter
then finds the finished checkpoint and reuses it). Not re-entrant: flock locks belong to
an open file, so taking D twice in one process is refused like a second process.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from ..errors import LockedError, RunDirError

LOCK_FILE = ".robust-pt.lock"


def _holder(fd: int) -> str:
    """The PID written by the holder ('' while it has not written it yet)."""
    try:
        return os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        return ""


def _refusal(d: Path, what: str, pid: str) -> LockedError:
    by = f"by robust-pt process {pid}" if pid else "by another robust-pt process"
    return LockedError(
        f"{what} {d} is in use {by}; wait for it to finish (or stop it) and run again, or use another directory"
    )


@contextmanager
def hold(
    d: str | Path, what: str = "run directory", wait: bool = False, on_wait: Callable[[str], None] | None = None
) -> Iterator[Path]:
    """Hold the exclusive lock of directory `d` (created if missing) for the body of the with-block."""
    d = Path(d)
    if d.exists() and not d.is_dir():
        raise RunDirError(f"{d} exists and is not a directory; use another directory")
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd = os.open(d / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:  # an ancestor that is a file, no permission (robust_pt/outputs.py checks first)
        raise RunDirError(f"{what} {d} cannot be written ({err.strerror}); use another directory") from None
    try:
        _acquire(fd, d, what, wait, on_wait)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield d
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire(fd: int, d: Path, what: str, wait: bool, on_wait: Callable[[str], None] | None) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pid = _holder(fd)
    if not wait:
        raise _refusal(d, what, pid)
    if on_wait is not None:
        on_wait(f"waiting for {what} {d}: in use by robust-pt process {pid or '?'}")
    fcntl.flock(fd, fcntl.LOCK_EX)
