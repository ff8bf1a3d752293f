"""docs/extending.md's toy threat model (tests/extending_noise.py: one file, one registration)
runs through evaluate, the report and the gate, with no change anywhere else."""

from __future__ import annotations

import json

import pytest

import robust_pt as rpt
from robust_pt.errors import AttackError

from . import extending_noise  # noqa: F401  (registers the "noise" threat model)

PRESET = "name: noise\nkind: noise\nmethod: uniform\neps_unit: pixel\neps: [8/255, 64/255, 255/255]\n"


@pytest.fixture(scope="module")
def noise_run(tiny_vqa, vqa_task, tmp_path_factory):
    root = tmp_path_factory.mktemp("noise")
    (root / "noise.yaml").write_text(PRESET)
    out = root / "run"
    run = rpt.evaluate(tiny_vqa, vqa_task, attack=str(root / "noise.yaml"), out=out, seed=1, progress=False)
    return root, out, run


def test_the_toy_threat_model_runs_every_level_inside_its_ball(noise_run):
    _, out, run = noise_run
    r = run.records
    assert len(r) == 48 * 3 and set(r["eps"].round(6)) == {round(8 / 255, 6), round(64 / 255, 6), 1.0}
    cc = r["clean_correct"].astype(bool)
    # not nested: every clean-correct example is perturbed at every level, each level on its own
    assert (r.loc[cc, "attacked"]).all() and not r.loc[~cc, "attacked"].any()
    assert (r["linf"] <= r["eps"] + 1e-6).all()
    # heavier noise breaks more; the record at a level is that level's own outcome
    robust = run.summary.set_index("eps")["robust"].to_numpy()
    assert robust[-1] < robust[0]
    assert json.loads((out / "run.json").read_text())["config"]["attack"]["kind"] == "noise"
    assert list((out / "samples").glob("*.png"))


def test_the_toy_threat_model_goes_through_the_report_and_the_gate(noise_run):
    from robust_pt.report.check import check, save_baseline

    root, out, _ = noise_run
    rep = rpt.report([out], out=root / "report", n_boot=200, figures=False)
    assert set(rep.summary["attack"]) == {"noise"} and len(rep.summary) == 3
    base = root / "baseline.json"
    save_baseline([out], base)
    assert check([out], base).passed


def test_a_registered_kind_validates_its_presets(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(PRESET.replace("uniform", "gaussian"))
    with pytest.raises(AttackError, match="method gaussian does not exist for noise attacks; use one of uniform"):
        rpt.evaluate(None, None, attack=str(bad))
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(PRESET.replace("kind: noise", "kind: fog"))
    with pytest.raises(
        AttackError,
        match="unknown kind .fog.; use one of image, embedding, text, joint, certify, corruption, noise, text-corruption",
    ):
        rpt.evaluate(None, None, attack=str(unknown))


def test_the_monotone_check_judges_nested_runs_and_leaves_out_what_declares_it_is_not(noise_run, tiny_vqa, vqa_task):
    """The toy threat model says nested: false (run.json's declares block), so the "metric monotone in eps"
    check leaves it out because it says so; a nested attack of the same model in the same report is judged."""
    root, out, _ = noise_run
    assert json.loads((out / "run.json").read_text())["declares"]["nested"] is False
    pgd = root / "pgd"
    rpt.evaluate(tiny_vqa, vqa_task, attack="pgd", eps=[1 / 255, 4 / 255], out=pgd, seed=1, progress=False)
    assert json.loads((pgd / "run.json").read_text())["declares"]["nested"] is True

    def monotone(runs):
        rep = rpt.report(runs, out=root / f"report-{len(runs)}", n_boot=200, figures=False)
        row = rep.sanity[rep.sanity["check"] == "monotone"]
        assert len(row) == 1
        return row["status"].iloc[0], row["detail"].iloc[0]

    status, detail = monotone([out])
    assert status == "not checked" and "nested: false" in detail
    status, detail = monotone([out, pgd])
    assert status in ("pass", "fail") and "in 1 run(s)" in detail
