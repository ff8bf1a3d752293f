"""docs/extending.md's toy task kind (tests/extending_count.py: one file, one registration) runs
through evaluate, the report and the gate, with no change anywhere else."""

from __future__ import annotations

import json

import numpy as np
import pytest

import robust_pt as rpt
from robust_pt.tasks import Task
from robust_pt.tasks.kinds import declarations

from . import extending_count  # noqa: F401  (registers the "near-count" kind)


def near_count_task(counting: Task) -> Task:
    """The counting questions of `counting`, scored with partial credit (what docs/extending.md shows)."""
    return Task(
        name=counting.name,
        kind="near-count",
        split=counting.split,
        metric="near-count",
        answers=counting.answers,
        image_size=counting.image_size,
        _examples=list(counting),
    )


@pytest.fixture(scope="module")
def count_run(tiny_vqa, vqa_task, tmp_path_factory):
    root = tmp_path_factory.mktemp("near-count")
    out = root / "run"
    task = near_count_task(vqa_task)
    run = rpt.evaluate(tiny_vqa, task, attack="fgsm", eps=[2 / 255, 16 / 255], out=out, seed=1, progress=False)
    return root, out, run, task


def test_the_kind_scores_with_partial_credit(vqa_task):
    task = near_count_task(vqa_task)
    ex = next(e for e in task if e.target == "two")
    picks = [task.answers.index(a) for a in ("two", "three", "four", "red")]
    assert task.example_scores([ex] * 4, picks).tolist() == [1.0, 0.5, 0.0, 0.0]
    d = declarations(task)
    assert (d["verdict"], d["metric"], d["candidates"], d["early_stop"]) == ("graded", "near-count", 15, False)


def test_the_toy_kind_runs_with_a_graded_verdict(count_run):
    _, out, run, _ = count_run
    r = run.records
    assert len(r) == 48 * 2
    assert set(r["score"]) <= {0.0, 0.5, 1.0} and set(r["clean_score"]) <= {0.0, 0.5, 1.0}
    # graded: nobody is "clean-correct"; the worst score so far is kept, never above the clean one
    assert r["clean_correct"].isna().all() and r["attacked"].all()
    assert (r["score"] <= r["clean_score"]).all()
    by_eps = r.pivot(index="index", columns="eps", values="score").to_numpy()
    assert (np.diff(by_eps, axis=1) <= 0).all()
    assert set(run.summary["metric"]) == {"near-count"}
    assert json.loads((out / "run.json").read_text())["config"]["task"]["kind"] == "near-count"


def test_the_toy_kind_goes_through_the_report_and_the_gate(count_run):
    from robust_pt.report.check import check, save_baseline

    root, out, _, _ = count_run
    rep = rpt.report([out], out=root / "report", n_boot=200, figures=False)
    assert set(rep.summary["metric"]) == {"near-count"} and len(rep.summary) == 2
    base = root / "baseline.json"
    save_baseline([out], base)
    assert check([out], base).passed


def test_a_kind_that_declares_no_target_refuses_a_targeted_attack(tiny_vqa, vqa_task):
    """What a targeted attack aims at is the kind's declaration (TaskKind.target); the toy declares none."""
    from robust_pt.errors import AttackError

    with pytest.raises(AttackError, match="near-count task shapes-vqa takes no target"):
        rpt.evaluate(tiny_vqa, near_count_task(vqa_task), attack="pgd", eps=8 / 255, target="red", progress=False)
