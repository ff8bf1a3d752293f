"""`robust-pt report`, `baseline` and `check`: outputs, exit codes, one-line errors."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from .._cli import assert_one_line_error, invoke
from .helpers import FT, FT_CLEAN, gate_runs, golden_runs, write_run


def test_report_writes_every_file(tmp_path):
    ft, pt = golden_runs(tmp_path)
    out = tmp_path / "rep"
    r = invoke("report", ft, pt, "--out", out, "--bootstrap", 200, "--gallery", 0)
    assert r.exit_code == 0, r.output
    assert "prompt tuning keeps 20.0 points more accuracy than finetuning" in r.stdout
    for name in ("report.md", "report.html", "summary.csv", "summary.tex", "summary.json"):
        assert (out / name).exists()
    assert list((out / "figures").glob("metric-vs-eps_*.png")) and list((out / "figures").glob("degradation_*.png"))


def test_report_bad_inputs_exit_2(tmp_path):
    assert_one_line_error(invoke("report", tmp_path / "nope", "--out", tmp_path / "o"), "does not exist")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(invoke("report", tmp_path / "empty", "--out", tmp_path / "o"), "is empty")
    a = write_run(tmp_path / "a", "finetune-vqa", FT, FT_CLEAN, task="shapes-vqa")
    b = write_run(tmp_path / "b", "finetune-ve", FT, FT_CLEAN, task="shapes-ve")
    assert_one_line_error(invoke("report", a, b, "--out", tmp_path / "o"), "different tasks", "--allow-mixed")
    r = invoke("report", a, b, "--out", tmp_path / "o", "--allow-mixed", "--bootstrap", 100, "--gallery", 0)
    assert r.exit_code == 0, r.output
    assert_one_line_error(invoke("report", a, "--out", tmp_path / "o2", "--bootstrap", 5), "n_boot")
    assert_one_line_error(
        invoke("report", a, "--out", tmp_path / "o3", "--correction", "bonferroni"),
        "unknown correction 'bonferroni'",
        "bh, holm, none",
    )
    assert not (tmp_path / "o3").exists()  # refused before anything is written


def test_corrupt_records_warn_and_still_report(tmp_path):
    ft, pt = golden_runs(tmp_path)
    with open(pt / "records.jsonl", "a") as f:
        f.write("{garbage\n")
    n_lines = len((pt / "records.jsonl").read_text().splitlines())
    out = tmp_path / "rep"
    r = invoke("report", ft, pt, "--out", out, "--bootstrap", 100, "--gallery", 0)
    assert r.exit_code == 0, r.output
    warn = [ln for ln in r.stderr.splitlines() if ln.startswith("warning: ")]
    assert len(warn) == 1 and f"1 corrupt line(s) skipped (line {n_lines})" in warn[0]
    assert f"(line {n_lines})" in (out / "report.md").read_text()
    assert "prompt tuning keeps" in r.stdout  # the valid records are still reported
    strict = invoke("report", ft, pt, "--out", out, "--bootstrap", 100, "--gallery", 0, "--strict")
    assert strict.exit_code == 2 and "error: corrupt record lines" in strict.stderr


def test_gate_cli(tmp_path):
    runs = gate_runs(tmp_path / "base")
    base = tmp_path / "reports" / "baseline.json"
    r = invoke("baseline", *runs, "--out", base)
    assert r.exit_code == 0, r.output
    assert json.loads(base.read_text())["schema_version"] == 1
    ok = invoke("check", *runs, "--baseline", base, "--junit", tmp_path / "ok.xml")
    assert ok.exit_code == 0, ok.output
    assert "check passed: 4 case(s)" in ok.stdout
    assert len(ET.parse(tmp_path / "ok.xml").getroot().findall(".//testcase")) == 4
    bad_runs = gate_runs(tmp_path / "now", pt_wrong_at_8=80)
    bad = invoke("check", *bad_runs, "--baseline", base, "--tolerance", "0.02", "--junit", tmp_path / "bad.xml")
    assert bad.exit_code == 1, bad.output
    regress = [ln for ln in bad.stdout.splitlines() if ln.startswith("REGRESSION ")]
    assert len(regress) == 2 and "check failed: 2 regression(s) in 1 of 4 case(s)" in bad.stdout
    assert len(ET.parse(tmp_path / "bad.xml").getroot().findall(".//failure")) == 1
    # a baseline of another schema version; a bad tolerance; a missing baseline
    b = json.loads(base.read_text())
    b["schema_version"] = 2
    old = tmp_path / "v2.json"
    old.write_text(json.dumps(b))
    assert_one_line_error(invoke("check", *runs, "--baseline", old), "schema version 2", "robust-pt baseline")
    assert_one_line_error(invoke("check", *runs, "--baseline", base, "--tolerance", "-1"), "tolerance")
    assert_one_line_error(invoke("check", *runs, "--baseline", tmp_path / "none.json"), "does not exist")
    assert_one_line_error(invoke("baseline", tmp_path / "nope", "--out", base), "does not exist")
