"""Run directories: records stream per batch, a killed run resumes to exactly the records of
an uninterrupted one, a truncated file is tolerated, a different config is refused."""

from __future__ import annotations

import json

import pytest

import robust_pt as rpt
from robust_pt.errors import RunDirError
from robust_pt.store import MARKER, RunStore, read_run

EPS = [2 / 255, 8 / 255]
KW = dict(attack="pgd", eps=EPS, steps=3, batch_size=12, seed=3, progress=False)


class Killed(Exception):
    pass


def _lines(path):
    return [json.loads(line) for line in (path / "records.jsonl").read_text().splitlines()]


def _records(path):
    return [r for r in _lines(path) if MARKER not in r]


@pytest.fixture(scope="module")
def full_run(tiny_vqa_dir, vqa_task, tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    run = rpt.evaluate(str(tiny_vqa_dir), vqa_task, out=out, **KW)
    return out, run


def test_run_dir_contents(full_run, tiny_vqa_dir):
    out, run = full_run
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "complete" and meta["config"]["seed"] == 3 and meta["config"]["eps"] == EPS
    assert meta["config"]["attack"]["name"] == "pgd" and meta["config"]["attack"]["steps"] == 3
    assert {"robust_pt", "torch", "torchattacks", "foolbox"} <= set(meta["versions"])
    from robust_pt.tuning.checkpoint import sha256_file

    assert meta["checkpoint"]["sha256"]["model.safetensors"] == sha256_file(tiny_vqa_dir / "model.safetensors")
    assert (out / "summary.csv").exists()
    recs = _records(out)
    assert len(recs) == len(run.records) == 48 * len(EPS)
    assert sum(MARKER in r for r in _lines(out)) == 4  # 48 examples / 12 per batch
    pngs = list((out / "samples").glob("*.png"))
    assert pngs and all(len([p for p in pngs if p.name.startswith(t)]) <= 8 for t in ("eps-2-255", "eps-8-255"))
    meta2, recs2 = read_run(out)
    assert recs2 == recs


def test_killed_run_resumes_to_identical_records(full_run, tiny_vqa_dir, vqa_task, tmp_path):
    out = tmp_path / "run"

    def kill_after_batch_1(b):
        if b == 1:
            raise Killed

    with pytest.raises(Killed):
        rpt.evaluate(str(tiny_vqa_dir), vqa_task, out=out, on_batch=kill_after_batch_1, **KW)
    assert json.loads((out / "run.json").read_text())["status"] == "running"
    assert sum(MARKER in r for r in _lines(out)) == 2
    seen = []
    run = rpt.evaluate(str(tiny_vqa_dir), vqa_task, out=out, on_batch=seen.append, **KW)
    assert seen == [2, 3]  # only the missing batches ran
    assert _records(out) == _records(full_run[0])
    assert run.records.equals(full_run[1].records)
    assert run.summary.equals(full_run[1].summary)
    # running once more does nothing and duplicates nothing
    seen.clear()
    rpt.evaluate(str(tiny_vqa_dir), vqa_task, out=out, on_batch=seen.append, **KW)
    assert seen == [] and _records(out) == _records(full_run[0])


def test_truncated_records_file_is_tolerated(full_run, tiny_vqa_dir, vqa_task, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(full_run[0], out)
    data = (out / "records.jsonl").read_bytes()
    (out / "records.jsonl").write_bytes(data[: int(len(data) * 0.6)])  # cut mid-line, mid-batch
    seen = []
    rpt.evaluate(str(tiny_vqa_dir), vqa_task, out=out, on_batch=seen.append, **KW)
    assert seen and seen[0] >= 1
    assert _records(out) == _records(full_run[0])


def test_different_config_is_refused(full_run, tiny_vqa_dir, vqa_task):
    out = full_run[0]
    with pytest.raises(RunDirError, match=r"holds a run with a different config \(differs in: eps\)"):
        rpt.evaluate(str(tiny_vqa_dir), vqa_task, out=out, **{**KW, "eps": [4 / 255]})
    with pytest.raises(RunDirError, match=r"differs in: attack \(steps\)"):
        rpt.evaluate(str(tiny_vqa_dir), vqa_task, out=out, **{**KW, "steps": 5})
    with pytest.raises(RunDirError, match="use another --out or delete it"):
        rpt.evaluate(str(tiny_vqa_dir), vqa_task, out=out, **{**KW, "attack": "fgsm", "steps": None})


def test_store_drops_partial_batches(tmp_path):
    cfg = {"a": 1}
    s = RunStore(tmp_path / "r", cfg)
    s.append_batch(0, [{"batch": 0, "id": "x", "eps": 0.1}])
    with open(tmp_path / "r" / "records.jsonl", "a") as f:  # a batch cut before its marker
        f.write(json.dumps({"batch": 1, "id": "y", "eps": 0.1}) + "\n" + '{"batch": 1, "id": "z"')
    s2 = RunStore(tmp_path / "r", cfg)
    assert s2.done == {0} and [r["id"] for r in s2.records] == ["x"]
    s2.append_batch(1, [{"batch": 1, "id": "y", "eps": 0.1}])
    assert [r["id"] for r in RunStore(tmp_path / "r", cfg).records] == ["x", "y"]
    with pytest.raises(RunDirError, match="differs in: a"):
        RunStore(tmp_path / "r", {"a": 2})
    (tmp_path / "orphan").mkdir()
    (tmp_path / "orphan" / "records.jsonl").write_text("")
    with pytest.raises(RunDirError, match="no run.json"):
        RunStore(tmp_path / "orphan", cfg)
