"""What the benchmark scripts share: the repository on sys.path and the common arguments.

Imported by the scripts as `_common` (their own folder is first on sys.path when run as
`python benchmarks/X.py`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def model_parser(doc: str, n: int) -> argparse.ArgumentParser:
    """A parser described by the first paragraph of `doc`, with --model, --task and --n (default `n`)."""
    from robust_pt.tuning.zoo import entry_dir

    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument(
        "--model",
        default=str(entry_dir("shapes-vqa", "prompt")),
        help="checkpoint directory (default: <cache>/zoo/prompt-shapes-vqa)",
    )
    ap.add_argument("--task", default=None, help="task (default: the one the model was tuned on)")
    ap.add_argument("--n", type=int, default=n, help="examples")
    return ap


def add_threads(ap: argparse.ArgumentParser) -> None:
    """--threads: torch threads (default: $ROBUST_PT_THREADS or 1)."""
    ap.add_argument("--threads", type=int, default=int(os.environ.get("ROBUST_PT_THREADS", "1")))


def add_repeat(ap: argparse.ArgumentParser) -> None:
    """--repeat R: time both sides R times, alternating, and compare the medians."""
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="time both sides this many times, alternating, and compare the medians (noisy machines)",
    )


def add_seed_json(ap: argparse.ArgumentParser) -> None:
    """--seed and --json (also write the results to this file)."""
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
