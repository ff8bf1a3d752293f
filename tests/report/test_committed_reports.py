"""The committed reports under reports/: complete for their recipe, and regenerable from their runs.

Each was made by `robust-pt run RECIPE`; its run directories (records and run.json, no
sample images) are committed beside it so that `robust-pt report` can rebuild it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from robust_pt.recipe import load_recipe
from robust_pt.report import build

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = [
    "prompt-factors",
    "ofa-pt-robustness",
    "corruptions",
    "transfer",
    "tiny-llava",
    "adversarial-tuning",
    "certified",
    "clip-prompt-learning",
]


def _expected_runs(recipe) -> dict[str, dict]:
    """Run directory name -> what the recipe asks of it (its task, examples and eps grid)."""
    from robust_pt.attacks import build as build_attack

    want = {}
    for task, _t, a, name, _trained in recipe.runs():
        eps = a.eps if a.eps is not None else build_attack(a.attack, **dict(a.overrides)).eps_grid(None)
        want[name] = {"task": task, "n": recipe.examples_for(task, a), "eps": [round(float(e), 10) for e in eps]}
    return want


@pytest.mark.parametrize("name", COMMITTED)
def test_the_committed_report_holds_every_run_its_recipe_asks_for(name):
    root = ROOT / "reports" / name
    want = _expected_runs(load_recipe(ROOT / "recipes" / f"{name}.yaml"))
    got = sorted(p.name for p in (root / "runs").iterdir() if p.is_dir())
    assert got == sorted(want)
    for run, w in want.items():
        meta = json.loads((root / "runs" / run / "run.json").read_text())
        assert meta["status"] == "complete", run
        cfg = meta["config"]
        assert cfg["task"]["name"] == w["task"] and cfg["task"]["n"] == w["n"], run
        assert [round(float(e), 10) for e in cfg["eps"]] == w["eps"], run


@pytest.mark.parametrize("name", COMMITTED)
def test_the_committed_report_tables_are_what_its_committed_runs_give(name):
    """Point estimates and sample sizes; the CIs depend only on the bootstrap seed."""
    root = ROOT / "reports" / name
    committed = json.loads((root / "summary.json").read_text())["rows"]
    rep = build(root / "runs", None, allow_mixed=True, n_boot=100, figures=False)
    key = lambda r: (r["task"], r["model"], r["attack"], round(float(r["eps"]), 10))  # noqa: E731
    fresh = {key(r): r for r in rep.summary.to_dict(orient="records")}
    assert sorted(fresh) == sorted(key(r) for r in committed)
    for r in committed:
        f = fresh[key(r)]
        assert (f["n"], f["clean"], f["robust"]) == (r["n"], r["clean"], r["robust"]), key(r)
    if (root / "transfer.csv").exists():  # the transfer matrix, cell by cell
        import pandas as pd

        cols = ["task", "attack", "eps", "source", "target", "n", "robust", "white_box"]
        old = pd.read_csv(root / "transfer.csv")[cols].sort_values(cols[:5]).reset_index(drop=True)
        new = rep.transfer[cols].sort_values(cols[:5]).reset_index(drop=True)
        pd.testing.assert_frame_equal(old, new, check_dtype=False)
    if (root / "base_novel.csv").exists():  # base / novel classes and their harmonic mean, cell by cell
        import pandas as pd

        cols = ["base_task", "novel_task", "model", "attack", "eps", "base_n", "novel_n", "base_robust",
                "novel_robust", "hm_robust"]  # fmt: skip
        old = pd.read_csv(root / "base_novel.csv")[cols].sort_values(cols[:5]).reset_index(drop=True)
        new = rep.base_novel[cols].sort_values(cols[:5]).reset_index(drop=True)
        pd.testing.assert_frame_equal(old, new, check_dtype=False)


@pytest.mark.parametrize("name", COMMITTED)
def test_every_committed_gap_has_one_decision_rule(name):
    """Each gap's interval agrees with the unadjusted p printed beside it, and `significant` is the
    report's correction applied to those p-values across all its gaps."""
    import numpy as np
    import pandas as pd

    from robust_pt.report import stats

    root = ROOT / "reports" / name
    gaps = pd.read_csv(root / "gaps.csv")
    tests = json.loads((root / "summary.json").read_text())["tests"]
    assert len(gaps) and set(gaps["test"]) <= {"mcnemar", "bootstrap"}
    for prefix, lo, hi in (("", "gap_lo", "gap_hi"), ("rel_drop_", "rel_drop_gap_lo", "rel_drop_gap_hi")):
        p = gaps[f"{prefix}p"].to_numpy(float)
        ok = np.isfinite(p)
        excl = ((gaps[lo] > 0) | (gaps[hi] < 0)).to_numpy()
        bad = gaps[ok & (excl != (p < stats.ALPHA))]
        assert bad.empty, bad[["task", "model", "attack", "eps_label", lo, hi, f"{prefix}p"]]
        np.testing.assert_allclose(
            gaps[f"{prefix}p_adj"].to_numpy(float)[ok], stats.adjust(p, tests["correction"])[ok], rtol=1e-9
        )
        sig = gaps["significant" if not prefix else "rel_drop_significant"].astype(bool).to_numpy()
        assert (sig == (gaps[f"{prefix}p_adj"].to_numpy(float) < stats.ALPHA)).all()


@pytest.mark.parametrize("name", COMMITTED)
def test_the_committed_runs_would_resume_as_the_same_attack(name):
    """Each run's recorded attack identity is what its recipe's preset resolves to today, so re-running
    the recipe resumes the committed runs instead of refusing them as a different config."""
    from robust_pt.attacks import build as build_attack
    from robust_pt.attacks.transfer import CRAFTING

    recipe = load_recipe(ROOT / "recipes" / f"{name}.yaml")
    for _task, _t, a, run, _trained in recipe.runs():
        meta = json.loads((ROOT / "reports" / name / "runs" / run / "run.json").read_text())
        transfer = CRAFTING if a.surrogate else {}  # transfer runs craft with every step
        spec = build_attack(a.attack, **{**dict(a.overrides), **transfer}).spec
        assert spec.identity == meta["config"]["attack"], run


def test_the_committed_apt_against_prompt_report_is_what_its_runs_give():
    """reports/ofa-pt-robustness/apt-vs-prompt: the APT and prompt-tuning runs of the recipe with prompt
    tuning as the reference (`robust-pt report ... --reference prompt`); its gaps are APT - prompt."""
    import pandas as pd

    root = ROOT / "reports" / "ofa-pt-robustness"
    runs = sorted(p for p in (root / "runs").iterdir() if p.name.split("_")[1] in ("apt", "prompt"))
    rep = build(runs, None, allow_mixed=True, n_boot=100, figures=False, reference="prompt")
    committed = pd.read_csv(root / "apt-vs-prompt" / "gaps.csv")
    assert set(committed["method"]) == {"apt"}
    key = lambda r: (r["task"], r["attack"], round(float(r["eps"]), 10))  # noqa: E731
    fresh = {key(r): r for r in rep.gaps.to_dict(orient="records")}
    assert len(committed) == len(fresh) == 66
    for r in committed.to_dict(orient="records"):
        f = fresh[key(r)]
        assert f["method"] == "apt" and f["reference"].startswith("prompt-"), key(r)
        assert (f["n"], f["b"], f["c"]) == (r["n"], r["b"], r["c"]) and abs(f["gap"] - r["gap"]) < 1e-12, key(r)
