"""Scale: torch.distributed shards (gloo, CPU) merge to exactly the single-process records and
summary, a killed rank resumes, bad launches stop with one line; streaming run stores,
out-of-memory halving, --batch-size auto, recipes' nproc and the scaling benchmark."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import robust_pt as rpt
from robust_pt.cli import _register, app
from robust_pt.engine import loop as engine
from robust_pt.engine import prepare, summary
from robust_pt.errors import ConfigError
from robust_pt.runtime import distributed as dd
from robust_pt.runtime import memory
from robust_pt.store import RECORDS, RunStore

_register()
ROOT = Path(__file__).resolve().parents[1]
EPS = "2/255,8/255"
# 32 examples in 8 batches: 4 per rank, and the tiny model gets a few right to attack
ARGS = ["--task", "shapes-vqa", "--attack", "pgd", "--steps", "3", "--eps", EPS, "--limit", "32", "--batch-size", "4"]
KW = dict(attack="pgd", steps=3, eps=EPS, limit=32, batch_size=4, progress=False)
TIMEOUT = 600


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ROBUST_PT_QUIET": "1", "PYTHONPATH": str(ROOT)}
    env.pop(dd.KILL_ENV, None)
    return {**env, **extra}


def _torchrun(model_dir, out, *extra, env=None) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        "-m",
        "robust_pt",
        "attack",
        "--model",
        str(model_dir),
        *ARGS,
        "--out",
        str(out),
        *extra,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=_env(**(env or {})), cwd=str(ROOT))


def _records_bytes(out: Path) -> bytes:
    return (out / RECORDS).read_bytes()


def _one_line(stderr: str, *needles) -> None:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture(scope="module")
def single(tiny_vqa_dir, tmp_path_factory):
    """The reference: one process."""
    out = tmp_path_factory.mktemp("single") / "run"
    run = rpt.evaluate(str(tiny_vqa_dir), "shapes-vqa", out=out, **KW)
    assert run.summary["n_attacked"].sum() > 0  # something is attacked, on both ranks' shards
    return out, run


# ----------------------------------------------------------------------------- shards and merging


def test_shards_are_disjoint_deterministic_and_balanced():
    for world in (1, 2, 3, 5):
        parts = [dd.shard(11, dd.Place(r, world)) for r in range(world)]
        assert sorted(b for p in parts for b in p) == list(range(11))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
        assert parts == [dd.shard(11, dd.Place(r, world)) for r in range(world)]
    assert (
        dd.sample_quota(8, dd.Place(0, 3)) + dd.sample_quota(8, dd.Place(1, 3)) + dd.sample_quota(8, dd.Place(2, 3))
        == 8
    )


def _fake(b: int, k: int) -> dict:
    return {"batch": b, "index": 2 * b + k, "id": f"x{2 * b + k}", "eps": 0.5, "score": 0.25 * k}


def test_merge_writes_the_single_process_file_and_removes_the_shards(tmp_path):
    cfg = {"a": 1}
    ref = RunStore(tmp_path / "ref", cfg)
    for b in range(5):
        ref.append_batch(b, [_fake(b, 0), _fake(b, 1)])
    out = tmp_path / "dist"
    RunStore(out, cfg).append_batch(0, [_fake(0, 0), _fake(0, 1)])  # from an earlier single-process run
    for rank, batches in ((0, [2, 4]), (1, [3, 1])):
        st = RunStore(dd.shard_dir(out, rank), cfg)
        for b in batches:
            st.append_batch(b, [_fake(b, 0), _fake(b, 1)])
    with open(dd.shard_dir(out, 1) / RECORDS, "a") as f:  # a partial batch of a killed rank
        f.write(json.dumps(_fake(4, 0)) + "\n" + '{"batch": 4, "ind')
    assert dd.merge(out) == set(range(5))
    assert _records_bytes(out) == _records_bytes(tmp_path / "ref")
    assert not (out / dd.SHARDS).exists()
    assert dd.merge(out) == set(range(5)) and _records_bytes(out) == _records_bytes(tmp_path / "ref")


def test_run_store_streams_records_to_disk(tmp_path):
    st = RunStore(tmp_path / "run", {"a": 1})
    for b in range(3):
        st.append_batch(b, [_fake(b, 0), _fake(b, 1)])
    assert st._records == []  # nothing held in memory: the file is the store
    assert [r["index"] for r in st.records] == list(range(6))
    assert RunStore(tmp_path / "run", {"a": 1}).done == {0, 1, 2}


# ----------------------------------------------------------------------------- torchrun, gloo on CPU


def test_two_processes_give_the_single_process_records_and_summary(single, tiny_vqa_dir, tmp_path):
    out = tmp_path / "run"
    res = _torchrun(tiny_vqa_dir, out)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("run directory:") == 1  # rank 0 prints the merged summary
    assert _records_bytes(out) == _records_bytes(single[0])
    assert (out / "summary.csv").read_text() == (single[0] / "summary.csv").read_text()
    meta = json.loads((out / "run.json").read_text())
    ref = json.loads((single[0] / "run.json").read_text())
    assert meta["status"] == "complete" and meta["config"] == ref["config"] and meta["summary"] == ref["summary"]
    assert meta["stats"]["world"] == 2 and [r["batches_run"] for r in meta["stats"]["ranks"]] == [4, 4]
    assert not (out / dd.SHARDS).exists()
    run = summary.load_run(out)
    pd.testing.assert_frame_equal(run.summary, single[1].summary)
    pd.testing.assert_frame_equal(run.records, single[1].records)


def test_a_killed_rank_resumes_per_shard_to_the_same_result(single, tiny_vqa_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    res = _torchrun(tiny_vqa_dir, out, env={dd.KILL_ENV: "1:1"})  # rank 1 is SIGKILLed after its first batch
    assert res.returncode != 0
    assert dd.done_batches(dd.shard_dir(out, 1)) == {1}
    held = set().union(*(dd.done_batches(d) for _, d in dd.shard_dirs(out)))
    assert held < set(range(8)) and json.loads((out / "run.json").read_text())["status"] == "running"
    # the same run again, this time through evaluate(nproc=2): only the missing batches run
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run = rpt.evaluate(str(tiny_vqa_dir), "shapes-vqa", out=out, nproc=2, **KW)
    assert sum(r["batches_run"] for r in run.stats["ranks"]) == 8 - len(held)
    assert _records_bytes(out) == _records_bytes(single[0])
    assert (out / "summary.csv").read_text() == (single[0] / "summary.csv").read_text()
    pd.testing.assert_frame_equal(run.summary, single[1].summary)
    pd.testing.assert_frame_equal(run.records, single[1].records)
    assert not (out / dd.SHARDS).exists()


@pytest.mark.parametrize(
    "rank0,rank1,needles",
    [
        (["--steps", "3"], ["--steps", "4"], ["the ranks disagree on the run config", "rank 1", "attack (steps)"]),
        (["--limit", "1"], ["--limit", "1"], ["2 processes (--nproc) for 1 examples", "--nproc 1 or fewer"]),
    ],
)
def test_bad_distributed_launch_is_one_line_and_exit_2(tiny_vqa_dir, tmp_path, rank0, rank1, needles):
    """Ranks started by hand (as on two nodes): every rank stops with exit code 2, rank 0
    prints one line, and nothing is written."""
    out = tmp_path / "run"
    port = str(_free_port())
    procs = []
    for rank, extra in ((0, rank0), (1, rank1)):
        env = _env(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        cmd = [
            sys.executable,
            "-m",
            "robust_pt",
            "attack",
            "--model",
            str(tiny_vqa_dir),
            *ARGS,
            "--out",
            str(out),
            *extra,
        ]
        procs.append(
            subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=str(ROOT))
        )
    results = [(p.wait(timeout=TIMEOUT), *p.communicate()) for p in procs]
    assert [r[0] for r in results] == [2, 2], results
    _one_line(results[0][2], *needles)
    assert results[1][2].strip() == "" and results[0][1].strip() == ""
    assert not out.exists()


# ----------------------------------------------------------------------------- CLI and recipes


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_nproc_bad_input_is_one_line(tiny_vqa_dir, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="pass --out"):
        rpt.evaluate(str(tiny_vqa_dir), "shapes-vqa", attack="pgd", limit=4, nproc=2)
    with pytest.raises(ConfigError, match="checkpoint directory"):
        dd.jsonable("model", torch.nn.Linear(2, 2))
    r = _invoke(
        "attack", "--model", tiny_vqa_dir, "--attack", "pgd", "--limit", 2, "--nproc", 3, "--out", tmp_path / "run"
    )
    assert r.exit_code == 2
    _one_line(r.stderr, "--nproc 3 is larger than the number of examples (2)", "--nproc 2 or fewer")
    r = _invoke("attack", "--model", tiny_vqa_dir, "--attack", "pgd", "--batch-size", "lots", "--out", tmp_path / "r")
    assert r.exit_code == 2
    _one_line(r.stderr, "--batch-size must be a positive integer or auto")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    r = _invoke("attack", "--model", tiny_vqa_dir, "--attack", "pgd", "--nproc", 2, "--out", tmp_path / "run")
    assert r.exit_code == 2
    _one_line(r.stderr, "under torchrun leave --nproc out")
    assert not (tmp_path / "run").exists()


def test_recipes_take_nproc(tiny_vqa_dir, tmp_path, monkeypatch):
    import yaml

    from robust_pt import recipe as rc

    def write(**changes):
        r = {
            "name": "np",
            "base": str(tiny_vqa_dir),
            "tasks": ["shapes-vqa"],
            "tuning": [{"method": "finetune", "steps": 1}],
            "examples": 8,
            "batch_size": 4,
            "nproc": 2,
            "attacks": [{"attack": "fgsm", "eps": ["8/255"]}, {"attack": "pgd", "eps": ["8/255"], "nproc": 1}],
        }
        r.update(changes)
        p = tmp_path / "r.yaml"
        p.write_text(yaml.safe_dump(r))
        return p

    r = rc.load_recipe(write())
    assert r.nproc == 2 and [a.nproc for a in r.attacks] == [None, 1]
    assert all("nproc" not in dict(a.overrides) for a in r.attacks)
    with pytest.raises(ConfigError, match="nproc must be a positive integer"):
        rc.load_recipe(write(nproc=0))
    seen = []
    monkeypatch.setattr(
        "robust_pt.tuning.zoo.build_zoo",
        lambda recipe, log, only=None: {("shapes-vqa", "finetune"): (tiny_vqa_dir, {})},
    )
    monkeypatch.setattr("robust_pt.engine.run.execute", lambda request, **k: seen.append(request.nproc))
    import importlib

    monkeypatch.setattr(importlib.import_module("robust_pt.report"), "build", lambda *a, **k: None)
    rc.run_recipe(r, tmp_path / "rep", log=lambda *_: None)
    assert seen == [2, 1]


# ----------------------------------------------------------------------------- batch size and memory


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"),
        RuntimeError("DefaultCPUAllocator: can't allocate memory: out of memory"),
    ],
)
def test_out_of_memory_halves_the_batch_and_retries(tiny_vqa, vqa_task, monkeypatch, error):
    kw = dict(attack="pgd", eps=[2 / 255, 8 / 255], steps=2, batch_size=4, attack_batch=4, limit=8, progress=False)
    ref = rpt.evaluate(tiny_vqa, vqa_task, **kw)
    real = engine._run_batch
    calls = []

    def flaky(ctx, b, index, examples, batch_of):
        calls.append(len(examples))
        if len(calls) == 1:
            raise error
        return real(ctx, b, index, examples, batch_of)

    monkeypatch.setattr(engine, "_run_batch", flaky)
    run = rpt.evaluate(tiny_vqa, vqa_task, **kw)
    assert calls == [4, 2, 2, 2, 2]  # the failed batch again in halves, then every batch in halves
    assert run.stats["oom_retries"] == 1 and run.stats["pass_size"] == 2
    # the same examples, seeds and verdicts; perturbation sizes only up to float rounding, since
    # passes of 2 and of 4 examples round differently (with one fixture seed l2 moved by 1e-4)
    floats = ["linf", "l2"]
    pd.testing.assert_frame_equal(run.records.drop(columns=floats), ref.records.drop(columns=floats))
    pd.testing.assert_frame_equal(run.records[floats], ref.records[floats], check_exact=False, atol=1e-3, rtol=0)
    cols = ["clean", "robust", "n_attacked", "n_broken"]
    pd.testing.assert_frame_equal(run.summary[cols], ref.summary[cols])


def test_other_errors_are_not_retried(tiny_vqa, vqa_task, monkeypatch):
    def broken(*a):
        raise RuntimeError("something else")

    monkeypatch.setattr(engine, "_run_batch", broken)
    with pytest.raises(RuntimeError, match="something else"):
        rpt.evaluate(tiny_vqa, vqa_task, attack="fgsm", eps=[8 / 255], batch_size=4, limit=4, progress=False)


def test_batch_size_auto(tiny_vqa, vqa_task, tiny_vqa_dir, tmp_path):
    run = rpt.evaluate(
        tiny_vqa,
        vqa_task,
        attack="fgsm",
        eps=[8 / 255],
        batch_size="auto",
        limit=4,
        progress=False,
        out=tmp_path / "run",
    )
    assert run.config["batch_size"] == memory.CPU_BATCH  # CPU: the default
    # probing (CUDA): the largest power of two that fits; only out-of-memory stops it
    tried = []

    def fits(b):
        tried.append(b)
        if b > 48:
            raise torch.OutOfMemoryError("CUDA out of memory")

    assert memory.probe_batch_size(fits, limit=1024) == 32 and tried == [1, 2, 4, 8, 16, 32, 64]
    assert memory.probe_batch_size(lambda b: None, limit=16) == 16
    with pytest.raises(ConfigError, match="even a batch of 1"):
        memory.probe_batch_size(lambda b: (_ for _ in ()).throw(RuntimeError("CUDA out of memory")), limit=8)
    with pytest.raises(ValueError):
        memory.probe_batch_size(lambda b: (_ for _ in ()).throw(ValueError("bug")), limit=8)
    prepare.fits_fn(tiny_vqa, True, vqa_task)(2)  # the probe's step runs on a real model
    # resuming with auto reuses the stored size, whatever a probe (or the default) says now
    from robust_pt.store import fingerprint

    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    meta["config"]["batch_size"] = 2
    meta["fingerprint"] = fingerprint(meta["config"])
    (tmp_path / "run" / "run.json").write_text(json.dumps(meta))
    (tmp_path / "run" / RECORDS).unlink()
    again = rpt.evaluate(
        tiny_vqa,
        vqa_task,
        attack="fgsm",
        eps=[8 / 255],
        batch_size="auto",
        limit=4,
        progress=False,
        out=tmp_path / "run",
    )
    assert again.config["batch_size"] == 2 and again.stats["batches_run"] == 2


def test_scale_benchmark_runs_with_tiny_sizes(tiny_vqa_dir, tmp_path):
    out = tmp_path / "scale.json"
    res = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "scale.py"),
            "--model",
            str(tiny_vqa_dir),
            "--sizes",
            "4,8",
            "--speedup-size",
            "4",
            "--steps",
            "1",
            "--batch-size",
            "2",
            "--repeat",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=_env(),
    )
    assert res.returncode == 0, res.stderr[-3000:]
    for needle in (
        "ms/example",
        "peak MB",
        "time per example: max/min",
        "peak memory:",
        "speed-up at n=4",
        "2 processes x 1 thread",
        "1 process x 2 threads",
    ):
        assert needle in res.stdout, res.stdout
    data = json.loads(out.read_text())
    assert [r["n"] for r in data["sizes"]] == [4, 8] and data["speedup"] > 0 and data["memory_ratio"] >= 1


def test_a_single_process_finishes_the_shards_of_a_distributed_run(single, tiny_vqa_dir, tmp_path):
    """Shards left by a killed distributed run (here: rank 1 of 2 did batches 1 and 3) are
    merged and only the missing batches run."""
    from robust_pt.store import RUN_JSON, batch_spans, write_spans

    ref, out = single[0], tmp_path / "run"
    spans = [sp for sp in batch_spans(ref / RECORDS)[0] if sp.batch in (1, 3)]
    d = dd.shard_dir(out, 1)
    d.mkdir(parents=True)
    (out / RUN_JSON).write_text((ref / RUN_JSON).read_text().replace('"complete"', '"running"'))
    (d / RUN_JSON).write_text((ref / RUN_JSON).read_text())
    write_spans(d / RECORDS, spans)
    seen = []
    run = rpt.evaluate(str(tiny_vqa_dir), "shapes-vqa", out=out, on_batch=seen.append, **KW)
    assert seen == [0, 2, 4, 5, 6, 7]
    assert _records_bytes(out) == _records_bytes(ref) and not (out / dd.SHARDS).exists()
    pd.testing.assert_frame_equal(run.summary, single[1].summary)
