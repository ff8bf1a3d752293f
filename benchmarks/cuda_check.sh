#!/usr/bin/env bash
# The engine's CUDA path end to end in under 5 minutes (benchmarks/cuda_check.py says what it runs):
#   bash benchmarks/cuda_check.sh [--n 512] [--json OUT.json]
# Uses .venv/bin/python if there is one (it needs a CUDA build of torch), else $PYTHON or python3.
# Exit 3 without a GPU (CI and most machines here), 1 if a check fails.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "cuda_check: $PY's torch sees no CUDA device; nothing to check"
    exit 3
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec timeout 300 "$PY" benchmarks/cuda_check.py "$@"
