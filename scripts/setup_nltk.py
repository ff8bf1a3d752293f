#!/usr/bin/env python3
"""Kept for old instructions: `robust-pt setup` does this (robust_pt/runtime/textdata.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from robust_pt.runtime.textdata import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
