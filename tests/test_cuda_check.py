"""benchmarks/cuda_check.py: the GPU check, dry-run on the CPU so it cannot rot between the rare runs on a GPU.

It runs every step of the CUDA check with `--device cpu` (gloo instead of nccl, fp32 instead of bf16) on a few
examples and must pass its own checks; without a GPU the shell wrapper exits 3 and says why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


def test_the_cuda_check_dry_runs_on_the_cpu(tmp_path):
    out = tmp_path / "cuda.json"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "cuda_check.py"),
        "--device",
        "cpu",
        "--n",
        "8",
        "--json",
        str(out),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=_env(), cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    got = json.loads(out.read_text())
    assert [c["check"] for c in got["checks"]] == ["cuda = cpu", "torchrun = single process", "tiny LLaVA bf16 ~ fp32"]
    assert all(c["ok"] for c in got["checks"]) and all(r["wall_s"] > 0 for r in got["rows"])


def test_the_wrapper_says_there_is_no_gpu():
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the wrapper runs the real check (bash benchmarks/cuda_check.sh)")
    res = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "cuda_check.sh")], capture_output=True, text=True, env=_env()
    )
    assert res.returncode == 3 and "no CUDA device" in res.stdout
