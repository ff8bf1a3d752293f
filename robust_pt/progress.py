"""Rich progress bars for anything longer than a few seconds (quiet when not a terminal)."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager


@contextmanager
def progress_bar(label: str, total: int, **fields):
    """Yields advance(n, **fields); shows examples done, extra fields (loss, survivors) and eta."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    quiet = os.environ.get("ROBUST_PT_QUIET") == "1" or not sys.stderr.isatty()
    extra = " ".join(f"{k}={{task.fields[{k}]}}" for k in fields) if fields else ""
    cols = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeRemainingColumn()]
    with Progress(*cols, disable=quiet, transient=False) as prog:
        tid = prog.add_task(label, total=total, info=extra)

        def advance(n: int = 1, **values) -> None:
            info = " ".join(f"{k}={v}" for k, v in values.items())
            prog.update(tid, advance=n, info=info)

        yield advance
