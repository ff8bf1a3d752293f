"""One writer per directory: a second `robust-pt attack` into a run directory in use exits 2
with one line naming the holder's PID and writes nothing; a SIGKILLed holder blocks nothing
and the next run resumes to exactly the records of an uninterrupted one; two recipes that
share a zoo entry train it once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from robust_pt.errors import LockedError, RunDirError
from robust_pt.runtime.locking import LOCK_FILE, hold
from robust_pt.store import MARKER

from ._cli import assert_one_line_error, invoke

REPO = Path(__file__).resolve().parents[1]

# a real `robust-pt attack` in a child process that stops after storing batch PAUSE_AT:
# until the file RELEASE exists (or forever: the test SIGKILLs it); READY is created then
PAUSED_CLI = """
import os, sys, time
from pathlib import Path
import robust_pt.store as store
ready, release, pause_at = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
append = store.RunStore.append_batch
def paused(self, batch, records):
    append(self, batch, records)
    if batch == pause_at:
        ready.touch()
        while not release.exists():
            time.sleep(0.05)
store.RunStore.append_batch = paused
from robust_pt.cli import main
sys.argv = ["robust-pt"] + sys.argv[4:]
main()
"""


def _attack_args(ckpt: Path, out: Path) -> list[str]:
    return [
        "attack",
        "--model",
        str(ckpt),
        "--task",
        "shapes-vqa",
        "--limit",
        "24",
        "--attack",
        "pgd",
        "--steps",
        "2",
        "--eps",
        "2/255,8/255",
        "--batch-size",
        "6",
        "--samples",
        "0",
        "--out",
        str(out),
    ]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "ROBUST_PT_QUIET": "1", "PYTHONPATH": str(REPO)}


def _paused_attack(ckpt: Path, out: Path, tmp: Path, pause_at: int) -> tuple[subprocess.Popen, Path, Path]:
    ready, release = tmp / f"ready-{pause_at}", tmp / f"release-{pause_at}"
    proc = subprocess.Popen(
        [sys.executable, "-c", PAUSED_CLI, str(ready), str(release), str(pause_at), *_attack_args(ckpt, out)],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not ready.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the holder exited early: {proc.communicate()}")
        assert time.monotonic() < deadline, "the holder never reached its pause"
        time.sleep(0.05)
    return proc, ready, release


def _records(out: Path) -> list[dict]:
    lines = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    return [r for r in lines if MARKER not in r]


@pytest.fixture(scope="module")
def reference(tiny_vqa_dir, tmp_path_factory):
    """The same attack, uninterrupted and alone."""
    out = tmp_path_factory.mktemp("ref") / "run"
    res = invoke(*_attack_args(tiny_vqa_dir, out))
    assert res.exit_code == 0, res.output
    return out


def test_a_second_writer_is_refused_with_the_holders_pid(tiny_vqa_dir, reference, tmp_path):
    out = tmp_path / "run"
    holder, _, release = _paused_attack(tiny_vqa_dir, out, tmp_path, pause_at=0)
    try:
        before = (out / "records.jsonl").read_bytes()
        second = invoke(*_attack_args(tiny_vqa_dir, out))
        assert_one_line_error(second, "in use", f"process {holder.pid}", "wait for it")
        assert (out / "records.jsonl").read_bytes() == before  # the refused process wrote nothing
    finally:
        release.touch()
    stdout, stderr = holder.communicate(timeout=300)
    assert holder.returncode == 0, stderr
    recs = _records(out)
    assert max(Counter((r["id"], r["eps"]) for r in recs).values()) == 1
    assert recs == _records(reference)
    assert (
        json.loads((out / "run.json").read_text())["summary"]
        == json.loads((reference / "run.json").read_text())["summary"]
    )


def test_a_killed_holder_blocks_nothing_and_the_next_run_resumes(tiny_vqa_dir, reference, tmp_path):
    out = tmp_path / "run"
    holder, _, _ = _paused_attack(tiny_vqa_dir, out, tmp_path, pause_at=1)  # never released
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=60)
    assert len({r["batch"] for r in _records(out)}) == 2  # batches 0 and 1 stored
    again = invoke(*_attack_args(tiny_vqa_dir, out))
    assert again.exit_code == 0, again.output
    assert _records(out) == _records(reference)
    assert (
        json.loads((out / "run.json").read_text())["summary"]
        == json.loads((reference / "run.json").read_text())["summary"]
    )


HOLD = """
import sys, time
from pathlib import Path
from robust_pt.runtime.locking import hold
with hold(sys.argv[1]):
    Path(sys.argv[2]).touch()
    time.sleep(600)
"""


def _holder(d: Path, tmp: Path) -> subprocess.Popen:
    ready = tmp / "held"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(d), str(ready)], env=_env())
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    return proc


def test_hold_refuses_waits_and_is_released_by_the_kernel(tmp_path):
    d = tmp_path / "d"
    proc = _holder(d, tmp_path)
    try:
        with pytest.raises(LockedError, match=f"in use by robust-pt process {proc.pid}"):
            with hold(d):
                pass
        heard = []
        import threading

        threading.Timer(0.5, lambda: os.kill(proc.pid, signal.SIGKILL)).start()
        with hold(d, wait=True, on_wait=heard.append):  # blocks until the holder dies
            assert proc.wait(timeout=60) == -signal.SIGKILL
        assert len(heard) == 1 and str(proc.pid) in heard[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    with hold(d):  # free again, and the file is still there (never removed)
        assert (d / LOCK_FILE).read_text().strip() == str(os.getpid())
    assert (d / LOCK_FILE).read_text() == ""


def test_hold_refuses_a_file(tmp_path):
    f = tmp_path / "f"
    f.write_text("keep me")
    with pytest.raises(RunDirError, match="not a directory"):
        with hold(f):
            pass
    assert f.read_text() == "keep me"


# `robust-pt run` in a child process whose training (tuning._fit) first appends its PID to
# FITS, and, with PAUSE set, waits until the file RELEASE exists
PAUSED_RUN = """
import os, sys, time
from pathlib import Path
import robust_pt.tuning.train as train
fits, release, pause = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
fit = train._fit
def counted(*a, **kw):
    with open(fits, "a") as f:
        f.write(f"{os.getpid()}\\n")
    while pause and not release.exists():
        time.sleep(0.05)
    return fit(*a, **kw)
train._fit = counted
from robust_pt.cli import main
sys.argv = ["robust-pt"] + sys.argv[4:]
main()
"""


def _recipe_file(tmp: Path, name: str, base: Path, zoo: Path, attack: str) -> Path:
    import yaml

    r = {
        "name": name,
        "base": str(base),
        "tasks": ["shapes-vqa"],
        "zoo": str(zoo),
        "tuning": [
            {"method": "prompt", "prompt_length": 2, "steps": 2, "batch_size": 4, "train_size": 16, "eval_size": 8}
        ],
        "attacks": [{"attack": attack, "eps": ["8/255"]}],
        "examples": 8,
        "batch_size": 4,
    }
    p = tmp / f"{name}.yaml"
    p.write_text(yaml.safe_dump(r))
    return p


def _wait_for(path: Path, needle: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and needle in path.read_text()):
        assert proc.poll() is None, f"exited before {needle!r}: {path.read_text() if path.exists() else ''}"
        assert time.monotonic() < deadline, f"never saw {needle!r}"
        time.sleep(0.05)


def test_two_recipes_sharing_a_zoo_entry_train_it_once(tmp_path):
    import torch

    from robust_pt.models.ofa import build
    from robust_pt.tasks.vocab import WORDS, bin_tokens
    from robust_pt.tuning import checkpoint as ckpt

    torch.manual_seed(0)
    base = tmp_path / "base"
    ckpt.save(build("tiny", vocab=list(WORDS) + bin_tokens()), base, {"method": "pretrain", "task": None})
    zoo, fits, release = tmp_path / "zoo", tmp_path / "fits", tmp_path / "release"
    env = {**_env(), "PYTHONUNBUFFERED": "1"}
    procs, logs = [], []
    for name, attack, pause in (("first", "fgsm", "1"), ("second", "pgd", "0")):
        log = tmp_path / f"{name}.log"
        rec = _recipe_file(tmp_path, name, base, zoo, attack)
        with open(log, "w") as fh:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-c",
                        PAUSED_RUN,
                        str(fits),
                        str(release),
                        pause,
                        "run",
                        str(rec),
                        "--out",
                        str(tmp_path / f"rep-{name}"),
                    ],
                    env=env,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                )
            )
        logs.append(log)
        if name == "first":  # the first is training the shared entry (and holds its lock)
            _wait_for(fits, str(procs[0].pid), procs[0])
    _wait_for(logs[1], "waiting for checkpoint directory", procs[1])  # the second waits for it
    release.touch()
    for p, log in zip(procs, logs):
        assert p.wait(timeout=300) == 0, log.read_text()
    assert fits.read_text().split() == [str(procs[0].pid)]  # trained once, by the first
    entry = zoo / "prompt-shapes-vqa"
    assert f"reusing {entry}" in logs[1].read_text()
    for name in ("first", "second"):
        assert (tmp_path / f"rep-{name}" / "report.md").exists()


def test_a_report_directory_in_use_is_refused(tmp_path, monkeypatch):
    d = tmp_path / "rep"
    proc = _holder(d, tmp_path)
    try:
        res = invoke("run", "ci-smoke", "--out", d)
        assert_one_line_error(res, "report directory", "in use", str(proc.pid))
    finally:
        proc.kill()
        proc.wait()
    assert sorted(p.name for p in d.iterdir()) == [LOCK_FILE]  # nothing written
