"""One rank started by robust_pt.runtime.distributed.launch: `python -m robust_pt.runtime.worker SPEC`.

It evaluates the spec (the keyword arguments of robust_pt.engine.loop.evaluate, as JSON); on
a RobustPTError, rank 0 writes the one-line error where `launch` reads it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..errors import RobustPTError
from .distributed import ERROR_FILE_ENV, place


def _worker(spec_file: str) -> int:
    """One rank started by `launch`: evaluate the spec; rank 0 writes a failed run's error."""
    from ..engine.loop import evaluate

    spec = json.loads(Path(spec_file).read_text())
    try:
        evaluate(**spec)
    except RobustPTError as err:
        target = os.environ.get(ERROR_FILE_ENV)
        where = place()
        if target and where.main:
            Path(target).write_text(json.dumps({"type": type(err).__name__, "message": str(err)}))
        elif not target:
            print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1]))
