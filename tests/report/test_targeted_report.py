"""Targeted runs in reports: labelled with their target, kept out of the white-box checks, and checked
against the untargeted attack of the same preset (a targeted attack must not fool the model more often)."""

from __future__ import annotations

import numpy as np
import pytest

import robust_pt as rpt

from .helpers import PRESETS, write_run

N = 80
EPS = (4 / 255, 8 / 255)


@pytest.mark.parametrize("targeted_keep,status", [(0.6, "pass"), (0.1, "fail")])
def test_targeted_check(tmp_path, targeted_keep, status):
    rng = np.random.default_rng(0)
    clean = rng.random(N) < 0.9
    u = rng.random(N)
    plain = {e: clean & (u < 0.5 * (1 if e == EPS[0] else 0.8)) for e in EPS}
    aimed = {e: clean & (u < targeted_keep * (1 if e == EPS[0] else 0.8)) for e in EPS}
    write_run(tmp_path / "runs" / "pgd", "ft-vqa", plain, list(clean), model_cfg={"method": "finetune"})
    write_run(tmp_path / "runs" / "pgd-red", "ft-vqa", aimed, list(clean), model_cfg={"method": "finetune"},
              spec={**PRESETS["pgd"], "target": "red"})  # fmt: skip
    rep = rpt.report(sorted((tmp_path / "runs").iterdir()), n_boot=300, figures=False)
    assert {"pgd", "pgd (target red)"} <= set(rep.summary["attack"])
    san = rep.sanity.set_index("check")
    assert san.loc["targeted", "status"] == status
    assert san.loc["more-steps", "status"] == "not checked"  # the targeted run is not a second PGD


def test_a_targeted_run_is_compared_only_with_the_same_settings(tmp_path):
    rng = np.random.default_rng(1)
    clean = rng.random(N) < 0.9
    plain = {e: clean & (rng.random(N) < 0.5) for e in EPS}
    write_run(tmp_path / "runs" / "pgd-l2", "ft-vqa", plain, list(clean), model_cfg={"method": "finetune"},
              spec={**PRESETS["pgd"], "norm": "l2"})  # fmt: skip
    write_run(tmp_path / "runs" / "pgd-red", "ft-vqa", {e: clean & False for e in EPS}, list(clean),
              model_cfg={"method": "finetune"}, spec={**PRESETS["pgd"], "target": "red"})  # fmt: skip
    rep = rpt.report(sorted((tmp_path / "runs").iterdir()), n_boot=100, figures=False)
    assert rep.sanity.set_index("check").loc["targeted", "status"] == "not checked"  # an L2 run is no partner
