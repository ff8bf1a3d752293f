"""One rank started by `evaluate(..., nproc=N)`: `python -m robust_pt.engine.worker SPEC_FILE`.

Why here: the rank runs the engine on an EvalRequest read back from JSON (request.py), so the
entry point belongs to the engine; runtime/distributed.py only launches the module it is given.
On a RobustPTError, rank 0 writes the one-line error where `launch` reads it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..errors import RobustPTError
from ..runtime.distributed import ERROR_FILE_ENV, place


def main(spec_file: str) -> int:
    """Run the spec's request as this rank of the launched run; rank 0 writes a failed run's error.
    (The request still says nproc=N: it is what the launching process was asked, unchanged.)"""
    from .distributed import evaluate_distributed
    from .request import EvalRequest

    spec = json.loads(Path(spec_file).read_text())
    where = place()
    try:
        evaluate_distributed(where, EvalRequest.from_json(spec["request"]), spec["progress"], None)
    except RobustPTError as err:
        target = os.environ.get(ERROR_FILE_ENV)
        if target and where.main:
            Path(target).write_text(json.dumps({"type": type(err).__name__, "message": str(err)}))
        elif not target:
            print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
