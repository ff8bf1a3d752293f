"""A pip user's path, end to end: the built wheel in a fresh venv outside the repo.

Slow (pip installs torch, transformers, textattack... into a new venv: about 2.5 min with
pip's local cache), so `make test` skips it and `make test-wheel` (run by .ci/run) runs it:
ROBUST_PT_WHEEL_TEST=1. What it shows: the wheel installs with the README's steps (the
tested pins, torchattacks with --no-deps), and from another directory, with a fresh HOME
and no checkout in sight, `robust-pt attack` runs DeepWordBug (whose NLTK data it prepares
on first use, saying so) and PGD on the committed base, `robust-pt setup` fills the cache
the installed package reads, and the adversarial images stay in their ball.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    os.environ.get("ROBUST_PT_WHEEL_TEST") != "1", reason="slow: `make test-wheel` runs it (so does .ci/run)"
)


def _run(cmd, cwd, env, timeout=900):
    out = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{cmd}: exit {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv bin dir, env, work dir): the wheel built from a copy of the tree, installed in a fresh venv."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "constraints.txt"):
        shutil.copy(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "_data")
    for name in ("robust_pt", "attacks", "recipes"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROBUST_PT", "NLTK_DATA", "TA_CACHE", "VIRTUAL"))}
    env.update(HOME=str(tmp / "home"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", tmp / "dist", src],
         tmp, env)  # fmt: skip
    (wheel,) = (tmp / "dist").glob("robust_pt-*.whl")
    _run([sys.executable, "-m", "venv", tmp / "venv"], tmp, env)
    pip = [tmp / "venv" / "bin" / "python", "-m", "pip", "install", "-q"]
    _run([*pip, "-c", src / "constraints.txt", wheel], tmp, env)
    _run([*pip, "--no-deps", "torchattacks==3.5.1"], tmp, env)
    work = tmp / "elsewhere"
    work.mkdir()
    return tmp / "venv" / "bin", env, work


def test_the_installed_package_is_the_wheel(installed):
    bin_, env, work = installed
    out = _run([bin_ / "python", "-c", "import robust_pt, robust_pt.paths as p; print(robust_pt.__file__, p.repo_root())"],
               work, env)  # fmt: skip
    where, root = out.stdout.split()
    assert "site-packages" in where and root == "None"


def test_text_then_image_attacks_from_another_directory(installed):
    bin_, env, work = installed
    cache = Path(env["HOME"]) / ".cache" / "robust-pt"
    common = ["--model", "builtin:base-small", "--task", "shapes-vqa", "--limit", 16, "--device", "cpu"]
    dwb = _run([bin_ / "robust-pt", "attack", *common, "--attack", "deepwordbug", "--out", "runs/dwb"], work, env)
    assert "preparing the offline NLTK data" in dwb.stderr  # first use, one line, no setup needed
    assert (cache / "nltk_data" / "corpora" / "stopwords" / "english").is_file()
    setup = _run([bin_ / "robust-pt", "setup", "--no-apt"], work, env)
    assert str(cache) in setup.stdout + setup.stderr
    pgd = ["--attack", "pgd", "--eps", "8/255", "--steps", 5, "--out", "runs/pgd"]
    _run([bin_ / "robust-pt", "attack", *common, *pgd], work, env)
    for run in ("dwb", "pgd"):
        recs = [json.loads(x) for x in (work / "runs" / run / "records.jsonl").read_text().splitlines()]
        rows = [r for r in recs if "index" in r]
        assert len(rows) == 16 and any(r["attacked"] for r in rows)
    pgd_rows = [json.loads(x) for x in (work / "runs/pgd/records.jsonl").read_text().splitlines()]
    assert all(r["linf"] <= r["eps"] + 1e-6 for r in pgd_rows if "index" in r)
