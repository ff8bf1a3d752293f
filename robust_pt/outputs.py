"""Output paths, checked before the work starts.

Why: every command that writes (attack, run, demo, report, baseline, check --junit, train,
pretrain) used to find out that its --out could not be written only when it wrote the first
file: an `--out` under a regular file, a directory where a file goes (or a file where a
directory goes), an unwritable parent. That came after minutes of training, attacking or
report computation, as a traceback (NotADirectoryError, FileExistsError, PermissionError)
instead of the one `error: ...` line and exit code 2 every other bad input gets.

`require_writable_dir(path, what)` and `require_writable_file(path, what)` raise an
OutputPathError that names the path and what to do, and create nothing: a refused command
leaves no empty directories behind, and a later write still creates what is missing. The
CLI calls them first; the library functions that write (evaluate's out=, report's out=,
tune, pretrain, train_hf) call them too, so API users get the same error before the work.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import OutputPathError


def _first_existing(p: Path) -> Path:
    """`p` itself or its nearest ancestor that exists (a dangling symlink counts as existing)."""
    for a in (p, *p.parents):
        if os.path.lexists(a):
            return a
    return Path(".")


def _creatable(p: Path, what: str, option: str) -> None:
    """`p` does not exist: its nearest existing ancestor must be a writable directory."""
    a = _first_existing(p)
    if not a.is_dir():
        raise OutputPathError(f"{what} {p} cannot be created: {a} is a file, not a directory; choose another {option}")
    if not os.access(a, os.W_OK | os.X_OK):
        raise OutputPathError(
            f"{what} {p} cannot be created: {a} is not writable; choose another {option} or fix its permissions"
        )


def require_writable_dir(path: str | Path, what: str = "output directory", option: str = "--out") -> Path:
    """`path` as a Path, once it is a writable directory or one that can be created (nothing is created)."""
    p = Path(path).expanduser()
    if os.path.lexists(p):
        if not p.is_dir():
            raise OutputPathError(f"{what} {p} exists and is not a directory; choose another {option}")
        if not os.access(p, os.W_OK | os.X_OK):
            raise OutputPathError(f"{what} {p} is not writable; choose another {option} or fix its permissions")
        return p
    _creatable(p, what, option)
    return p


def require_writable_file(path: str | Path, what: str = "output file", option: str = "--out") -> Path:
    """`path` as a Path, once it is a writable file or one that can be created (nothing is created)."""
    p = Path(path).expanduser()
    if os.path.lexists(p):
        if p.is_dir():
            raise OutputPathError(f"{what} {p} is a directory; give a file path to {option}")
        if not os.access(p, os.W_OK):
            raise OutputPathError(f"{what} {p} is not writable; choose another {option} or fix its permissions")
        return p
    _creatable(p, what, option)
    return p


def usual_mode(tmp: str | Path) -> None:
    """Give a file made by tempfile.mkstemp (mode 600) the mode open() would have: 666 less the umask, so a
    checkpoint or run written by an atomic replace is as readable to others as any file the user writes."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)
