"""Reading run directories: tolerant of extra columns, strict about what cannot be reported."""

from __future__ import annotations

import json

import pytest

from robust_pt.errors import RobustPTError, RunDirError
from robust_pt.report import MixedRunsError, build
from robust_pt.report.load import load_run, load_runs

from .helpers import E1, FT, FT_CLEAN, PT, PT_CLEAN, golden_runs, write_run


def test_method_from_config_name_or_model_meta(tmp_path):
    ft, pt = golden_runs(tmp_path)
    assert (load_run(ft).method, load_run(pt).method) == ("finetune", "prompt")
    r = write_run(tmp_path / "x", "my-model", PT, PT_CLEAN, model_cfg={"method": "adapter"})
    assert load_run(r).method == "adapter"
    ck = tmp_path / "ckpt"
    ck.mkdir()
    (ck / "meta.json").write_text(json.dumps({"method": "bitfit"}))
    r2 = write_run(tmp_path / "y", "some-model", PT, PT_CLEAN)
    meta = json.loads((r2 / "run.json").read_text())
    meta["checkpoint"] = {"path": str(ck)}
    (r2 / "run.json").write_text(json.dumps(meta))
    assert load_run(r2).method == "bitfit"
    assert load_run(write_run(tmp_path / "z", "Sequential", PT, PT_CLEAN)).method == "unknown"


def test_the_method_is_what_the_run_declares_never_guessed_from_its_name(tmp_path):
    r = write_run(tmp_path / "a", "prompt-shapes-vqa", PT, PT_CLEAN)
    meta = json.loads((r / "run.json").read_text())
    assert meta["config"]["model"].pop("method") == "prompt"  # what the engine records from the checkpoint
    (r / "run.json").write_text(json.dumps(meta))
    assert load_run(r).method == "unknown"  # a name that says "prompt" declares nothing


def test_corrupt_lines_are_skipped_counted_and_named(tmp_path):
    ft, pt = golden_runs(tmp_path)
    lines = (pt / "records.jsonl").read_text().splitlines()
    lines.insert(2, "{not json")
    lines.insert(5, json.dumps({"id": "ex999"}))  # no eps, no score
    lines.insert(7, "[1, 2]")
    (pt / "records.jsonl").write_text("\n".join(lines) + "\n")
    run = load_run(pt)
    assert run.bad_lines == [3, 6, 8]
    assert len(run.records) == 40  # every valid record is kept
    assert "3 corrupt line(s) skipped (line 3, 6, 8)" in run.warnings()[0]
    rep = build([ft, pt], tmp_path / "rep", n_boot=200, figures=False)
    assert len(rep.gaps) == 2 and any("corrupt" in w for w in rep.warnings)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "3 corrupt line(s) skipped (line 3, 6, 8)" in md
    assert json.loads((tmp_path / "rep" / "summary.json").read_text())["runs"][1]["bad_lines"] == [3, 6, 8]


def test_unfinished_batches_are_left_out(tmp_path):
    ft, _ = golden_runs(tmp_path)
    with open(ft / "records.jsonl", "a") as f:  # a batch without its marker, then a line cut by a kill
        f.write(json.dumps({"batch": 9, "id": "late", "eps": E1, "correct": True, "score": 1.0}) + "\n")
        f.write('{"batch": 9, "id": "cut", "ep')
    run = load_run(ft)
    assert run.unfinished == 1 and len(run.bad_lines) == 1 and "late" not in set(run.records["id"])


def test_extra_columns_and_missing_optional_fields(tmp_path):
    r = write_run(tmp_path / "r", "prompt-x", PT, PT_CLEAN, extra={"brand_new_field": {"a": 1}, "linf": None})
    run = load_run(r)
    assert "brand_new_field" in run.records.columns and len(run.records) == 40


@pytest.mark.parametrize("case", ["missing", "empty", "not-a-run", "no-records", "all-corrupt", "bad-json"])
def test_bad_run_dirs_raise_one_clear_error(tmp_path, case):
    d = tmp_path / "run"
    if case != "missing":
        d.mkdir()
    if case == "not-a-run":
        (d / "notes.txt").write_text("hi")
    if case in ("no-records", "all-corrupt", "bad-json"):
        write_run(d, "prompt-x", PT, PT_CLEAN)
        if case == "no-records":
            (d / "records.jsonl").unlink()
        elif case == "all-corrupt":
            (d / "records.jsonl").write_text("garbage\n{]\n")
        else:
            (d / "run.json").write_text("{oops")
    with pytest.raises(RunDirError) as err:
        build([d], None)
    msg = str(err.value)
    assert "\n" not in msg and str(d) in msg
    assert {
        "missing": "does not exist",
        "empty": "is empty",
        "not-a-run": "not a run directory",
        "no-records": "has no records.jsonl",
        "all-corrupt": "2 corrupt line(s)",
        "bad-json": "not valid JSON",
    }[case] in msg


def test_mixed_tasks_need_allow_mixed(tmp_path):
    a = write_run(tmp_path / "a", "finetune-vqa", FT, FT_CLEAN, task="shapes-vqa")
    b = write_run(tmp_path / "b", "finetune-ve", FT, FT_CLEAN, task="shapes-ve")
    with pytest.raises(MixedRunsError, match="--allow-mixed"):
        load_runs([a, b])
    assert isinstance(MixedRunsError("x"), RobustPTError)
    rep = build([a, b], None, allow_mixed=True, n_boot=100)
    assert sorted(set(rep.summary["task"])) == ["shapes-ve", "shapes-vqa"]


def test_a_folder_of_runs_and_attack_labels(tmp_path):
    golden_runs(tmp_path / "runs")
    write_run(
        tmp_path / "runs" / "ft-pgd50",
        "finetune-shapes-vqa",
        FT,
        FT_CLEAN,
        spec={"kind": "image", "method": "pgd", "backend": "ours", "norm": "linf", "eps_unit": "pixel", "steps": 50},
    )
    runs = load_runs([tmp_path / "runs"])
    assert len(runs) == 3
    assert sorted(r.attack for r in runs) == ["pgd[steps=10]", "pgd[steps=10]", "pgd[steps=50]"]


def test_api_report_works_after_the_subpackage_is_imported(tmp_path):
    import robust_pt as rpt
    import robust_pt.report  # noqa: F401  (sets the attribute robust_pt.report to the subpackage)
    from robust_pt.report import Report

    ft, pt = golden_runs(tmp_path)
    for _ in range(2):
        rep = rpt.report([ft, pt], n_boot=100)
        assert isinstance(rep, Report) and len(rep.gaps) == 2
