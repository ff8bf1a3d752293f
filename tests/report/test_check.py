"""The CI gate: baseline, check, JUnit XML."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from robust_pt.report.check import BaselineError, check, load_baseline, save_baseline

from .helpers import PRESETS, gate_runs


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    root = tmp_path_factory.mktemp("gate")
    runs = gate_runs(root / "base")
    path = root / "reports" / "baseline.json"
    save_baseline(runs, path)
    return root, runs, path


def test_baseline_file(baseline):
    _, _, path = baseline
    b = json.loads(path.read_text())
    assert b["schema_version"] == 1 and b["kind"] == "robust-pt-baseline"
    assert len(b["metrics"]) == 4 and len(b["gaps"]) == 2
    g8 = [g for g in b["gaps"] if g["eps_label"] == "8/255"][0]
    assert g8["gap"] == pytest.approx(0.4) and g8["gap_lo"] > 0  # the CI excludes 0: its sign is kept


def test_identical_runs_pass_and_junit_parses(baseline, tmp_path):
    _, runs, path = baseline
    res = check(runs, path, junit=tmp_path / "junit.xml")
    assert res.passed and res.exit_code == 0 and not res.regressions
    root = ET.parse(tmp_path / "junit.xml").getroot()
    cases = root.findall(".//testcase")
    assert len(cases) == 4  # one per (task, model, attack, eps)
    assert {c.get("name") for c in cases} == {"pgd eps=2/255", "pgd eps=8/255"}
    assert {c.get("classname") for c in cases} == {
        "robust-pt.shapes-vqa.finetune-shapes-vqa",
        "robust-pt.shapes-vqa.prompt-shapes-vqa",
    }
    assert not root.findall(".//failure") and root.find("testsuite").get("failures") == "0"


def test_a_report_folder_checks_like_its_runs(baseline, tmp_path):
    from robust_pt.report import build

    _, runs, path = baseline
    build(runs, tmp_path / "rep", n_boot=200, figures=False)
    assert check([tmp_path / "rep"], path).passed
    assert check([tmp_path / "rep" / "summary.json"], path).passed


def test_small_drop_within_tolerance_passes(baseline, tmp_path):
    _, _, path = baseline
    runs = gate_runs(tmp_path, pt_wrong_at_8=31)  # 1 point lower
    assert check(runs, path, tolerance=0.02).passed
    assert not check(runs, path, tolerance=0.005).passed


def test_degraded_run_fails_with_one_line_per_regression(baseline, tmp_path):
    _, _, path = baseline
    runs = gate_runs(tmp_path, pt_wrong_at_8=80)  # prompt tuning now below finetuning at 8/255
    res = check(runs, path, junit=tmp_path / "j.xml")
    assert not res.passed and res.exit_code == 1
    assert len(res.regressions) == 2 and all("\n" not in r for r in res.regressions)
    robust, gap = res.regressions
    assert (
        "shapes-vqa prompt-shapes-vqa pgd eps=8/255: robust accuracy 10.0 < baseline 60.0 - tolerance 2.0 (points)"
        in robust
    )
    assert "lost its sign: baseline +40.0, now -10.0 points" in gap
    root = ET.parse(tmp_path / "j.xml").getroot()
    failed = [c for c in root.iter("testcase") if c.find("failure") is not None]
    assert [(c.get("classname"), c.get("name")) for c in failed] == [
        ("robust-pt.shapes-vqa.prompt-shapes-vqa", "pgd eps=8/255")
    ]
    assert "lost its sign" in failed[0].find("failure").text


def test_the_gate_keeps_the_sign_of_gaps_significant_after_adjustment_only(baseline, tmp_path):
    """A baseline gap whose CI excluded 0 but whose adjusted p did not pass is not held to its sign;
    a baseline without decisions (made before adjusted p-values) falls back on its CI."""
    _, _, path = baseline
    b = json.loads(path.read_text())
    assert all({"p_adj", "significant"} <= set(g) for g in b["gaps"])
    g8 = [g for g in b["gaps"] if g["eps_label"] == "8/255"][0]
    assert g8["significant"] and g8["p_adj"] < 0.05
    runs = gate_runs(tmp_path, pt_wrong_at_8=80)
    lost = lambda res: [r for r in res.regressions if "lost its sign" in r]  # noqa: E731
    assert len(lost(check(runs, path))) == 1
    for g in b["gaps"]:
        g.update(significant=False)  # e.g. Holm across many cells did not pass it
    relaxed = tmp_path / "relaxed.json"
    relaxed.write_text(json.dumps(b))
    assert lost(check(runs, relaxed)) == []
    for g in b["gaps"]:
        del g["significant"], g["p_adj"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(b))
    assert len(lost(check(runs, old))) == 1


def test_two_sided_gate_also_fails_a_rise(baseline, tmp_path):
    """CI's dogfood gate: on a fixed model a robust metric that rose means a weaker attack."""
    _, _, path = baseline
    runs = gate_runs(tmp_path, pt_wrong_at_8=20)  # 10 points more robust than the baseline
    assert check(runs, path).passed  # the default gate only guards against drops
    res = check(runs, path, two_sided=True)
    assert not res.passed and len(res.regressions) == 1
    assert (
        "shapes-vqa prompt-shapes-vqa pgd eps=8/255: robust accuracy 70.0 > baseline 60.0 + tolerance 2.0 "
        "(points): the attack got weaker"
    ) in res.regressions[0]
    assert check(gate_runs(tmp_path / "b", pt_wrong_at_8=29), path, two_sided=True).passed  # 1 point: tolerated
    moved = check(gate_runs(tmp_path / "c", clean_wrong=5), path, two_sided=True)  # clean 90 -> 95
    assert not moved.passed and len(moved.regressions) == 4  # every case: the model or the data changed
    assert "clean accuracy 95.0 differs from baseline 90.0 by more than tolerance 2.0" in moved.regressions[0]


def test_missing_rows_are_regressions(baseline, tmp_path):
    _, runs, path = baseline
    res = check(runs[:1], path)
    assert not res.passed and any("not measured now" in r for r in res.regressions)


def test_baseline_schema_and_kind_are_checked(baseline, tmp_path):
    _, runs, path = baseline
    b = json.loads(path.read_text())
    b["schema_version"] = 99
    other = tmp_path / "old.json"
    other.write_text(json.dumps(b))
    with pytest.raises(BaselineError, match="schema version 99"):
        load_baseline(other)
    with pytest.raises(BaselineError, match="does not exist"):
        check(runs, tmp_path / "nope.json")


def test_example_workflow_runs_the_gate():
    from pathlib import Path

    import yaml

    wf = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples" / "ci" / "robust-pt.yml").read_text())
    steps = wf["jobs"]["robustness"]["steps"]
    text = "\n".join(str(s.get("run", "")) for s in steps)
    assert "robust-pt check" in text and "--baseline reports/baseline.json" in text and "--junit" in text
    assert "robust-pt report" in text and "robust-pt baseline" in text


PGD50 = {**PRESETS["pgd"], "steps": 50}


def test_pgd50_runs_against_a_pgd10_baseline_fail_naming_both_settings(baseline, tmp_path):
    """The gate keys on the attack's identity: PGD-50 runs are not the PGD-10 baseline's attack, even alone
    (where the report of the runs alone calls them plain "pgd")."""
    _, _, path = baseline
    runs = gate_runs(tmp_path, spec=PGD50)
    for inputs in (runs, [_report(runs, tmp_path / "rep")]):  # run directories, or a report folder
        res = check(inputs, path)
        assert not res.passed and res.exit_code == 1
        missing = [r for r in res.regressions if "missing" in r]
        assert len(missing) == 4  # every baseline row: 2 models x 2 eps
        assert (
            "missing: baseline has pgd[steps=10] at eps 8/255 for model prompt-shapes-vqa; the runs have "
            "pgd[steps=50] - re-make the baseline if the attack changed on purpose"
        ) in "\n".join(missing)
        assert sorted(res.new) == sorted(
            f"shapes-vqa {m}-shapes-vqa pgd[steps=50] eps={e}"
            for m in ("finetune", "prompt")
            for e in ("2/255", "8/255")
        )


def test_the_same_settings_pass_and_keep_the_plain_label(baseline, tmp_path):
    _, _, path = baseline
    res = check(gate_runs(tmp_path, spec=dict(PRESETS["pgd"])), path)
    assert res.passed and not res.new and {c.attack for c in res.cases} == {"pgd"}
    b = json.loads(path.read_text())
    assert all(m["attack_settings"]["steps"] == 10 and m["attack_base"] == "pgd" for m in b["metrics"])


def test_a_pgd50_baseline_against_both_settings_matches_its_own(tmp_path):
    """A baseline of two settings of pgd, checked against runs of both: each row meets its own setting."""
    base = tmp_path / "base.json"
    save_baseline(gate_runs(tmp_path / "a", spec=PGD50), base)
    runs = gate_runs(tmp_path / "b", spec=PGD50) + gate_runs(tmp_path / "c", spec=dict(PRESETS["pgd"]))
    res = check(runs, base)
    assert res.passed, res.regressions
    assert len(res.new) == 4 and all("pgd[steps=10]" in n for n in res.new)


def test_an_old_baseline_without_settings_matches_by_name_only_where_unambiguous(baseline, tmp_path):
    _, runs, path = baseline
    b = json.loads(path.read_text())
    for item in b["metrics"] + b["gaps"]:
        del item["attack_settings"], item["attack_base"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(b))
    res = check(runs, old)
    assert res.passed and any("records no attack settings" in w for w in res.warnings)
    both = runs + gate_runs(tmp_path / "b", spec=PGD50)
    res = check(both, old)
    assert not res.passed
    assert "the runs have pgd[steps=10], pgd[steps=50], so which one it was is unknown" in res.regressions[0]
    for item in b["metrics"] + b["gaps"]:
        item["attack"] = "pgd[steps=10]"  # an old baseline of two settings: never guessed
    old.write_text(json.dumps(b))
    res = check(both, old)
    assert not res.passed and "cannot be matched to the runs" in res.regressions[0]


def _report(runs, out):
    from robust_pt.report import build

    build(runs, out, n_boot=200, figures=False)
    return out
