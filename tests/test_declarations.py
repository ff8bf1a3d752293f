"""run.json's declares block (attacks/declarations.py): what a new run writes is what the report derives for a
run written before the block existed, and every built-in threat model declares, without being imported, what
it declares once loaded. And the one records reader (runformat.read_records) that the store and the report share."""

from __future__ import annotations

import json

import pytest

import robust_pt as rpt
from robust_pt.attacks import core
from robust_pt.attacks.declarations import derive


@pytest.mark.parametrize("kind", sorted(core.BUILTIN))
def test_a_builtin_threat_model_declares_what_the_report_derives_without_importing_it(kind):
    assert core.threat_model(kind).declares() == core.declared(kind)


def test_a_new_run_declares_what_an_old_run_of_the_same_config_derives(tiny_vqa, vqa_task, tmp_path):
    out = tmp_path / "run"
    rpt.evaluate(tiny_vqa, vqa_task, attack="pgd", eps=[1 / 255, 64 / 255], out=out, seed=0, progress=False)
    meta = json.loads((out / "run.json").read_text())
    written = meta["declares"]
    assert "declares" not in meta["config"]  # the fingerprint is the config alone
    assert written["nested"] is True and written["verdict"] == "binary" and written["access"] == "white-box"
    assert written["huge_eps"] == pytest.approx(64 / 255) and written["candidates"] is True
    assert written == derive(meta["config"], meta["summary"][0]["metric"])

    from robust_pt.report.load import load_run

    old = tmp_path / "old"
    old.mkdir()
    (old / "records.jsonl").write_bytes((out / "records.jsonl").read_bytes())
    (old / "run.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "declares"}))
    assert load_run(old).declares == load_run(out).declares == written


def test_the_store_and_the_report_read_records_with_one_reader(tmp_path):
    from robust_pt.report.load import read_records
    from robust_pt.store import read_run

    rec = {"id": "a", "eps": 0.1, "correct": True, "score": 1.0}
    lines = [
        json.dumps({**rec, "batch": 0}),
        "{not json",
        json.dumps({"batch_done": 0}),
        json.dumps({**rec, "id": "b", "batch": 1}),  # batch 1 has no marker: unfinished
        json.dumps({"batch": 2, "eps": 0.1}),  # no id: the report refuses it
        json.dumps({"batch_done": 2}),
    ]
    (tmp_path / "run.json").write_text(json.dumps({"format": "robust-pt-run/1", "config": {}}))
    (tmp_path / "records.jsonl").write_text("\n".join(lines) + "\n")
    records, bad, unfinished = read_records(tmp_path / "records.jsonl")
    assert [r["id"] for r in records] == ["a"] and bad == [2, 5] and unfinished == 1
    _, stored = read_run(tmp_path)
    assert [r.get("id") for r in stored] == ["a", None]  # the store keeps every object of a finished batch
