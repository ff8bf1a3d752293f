"""The engine: clean pass, only correct examples attacked, survivors go on, monotone in eps,
every task kind, classifiers on tensors, embedding attacks, and the refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import robust_pt as rpt
from robust_pt.errors import AttackError, TaskError

EPS = [1 / 255, 2 / 255, 4 / 255, 8 / 255]
COLUMNS = [
    "model",
    "task",
    "attack",
    "eps",
    "n",
    "metric",
    "clean",
    "robust",
    "drop",
    "rel_drop",
    "success_rate",
    "mean_linf",
    "mean_l2",
]


def _check_monotone(run, eps):
    s = run.summary.sort_values("eps")
    assert list(s["eps"]) == sorted(eps)
    assert (s["robust"] <= s["clean"] + 1e-12).all()
    assert (np.diff(s["robust"].to_numpy()) <= 1e-12).all()


@pytest.fixture(scope="module")
def pgd_run(tiny_vqa, vqa_task):
    return rpt.evaluate(
        tiny_vqa, vqa_task, attack="pgd", eps=list(reversed(EPS)), steps=4, batch_size=16, progress=False
    )


def test_summary_columns_and_monotone(pgd_run, vqa_task):
    s = pgd_run.summary
    assert set(COLUMNS) <= set(s.columns)
    assert len(s) == len(EPS) and (s["n"] == len(vqa_task)).all()
    assert (s["metric"] == "accuracy").all() and (s["task"] == "shapes-vqa").all()
    _check_monotone(pgd_run, EPS)
    assert s["robust"].iloc[-1] < s["clean"].iloc[-1]  # the attack breaks something
    clean = s["clean"].iloc[0]
    assert all(math.isclose(r.drop, clean - r.robust) for r in s.itertuples())
    assert all(0 <= r.success_rate <= 1 for r in s.itertuples())


def test_records_one_per_example_and_eps_inside_ball(pgd_run, vqa_task):
    r = pgd_run.records
    assert len(r) == len(vqa_task) * len(EPS)
    assert not r.duplicated(["id", "eps"]).any()
    assert (r["linf"] <= r["eps"] + 1e-6).all()
    assert (r["l2"] <= r["eps"] * math.sqrt(3 * 48 * 48) + 1e-6).all()
    for col in ("id", "eps", "clean_correct", "correct", "score", "pred", "clean_pred", "linf", "l2", "steps"):
        assert col in r.columns
    assert set(r["early_stop"]) == {True} and set(r["backend"]) == {"ours"}


def test_only_correct_examples_are_attacked_and_broken_stays_broken(pgd_run):
    r = pgd_run.records
    assert not r.loc[~r["clean_correct"], "attacked"].any()
    assert not r.loc[~r["clean_correct"], "correct"].any()
    for _, g in r.groupby("id"):
        g = g.sort_values("eps")
        correct = g["correct"].to_numpy()
        assert all(not correct[k] or correct[k - 1] for k in range(1, len(correct)))  # never un-broken
        if g["broken_at"].notna().any():
            first = g["broken_at"].dropna().iloc[0]
            after = g[g["eps"] > first]
            assert not after["attacked"].any()  # survivors only
            assert (after["broken_at"] == first).all()  # the eps1 adversarial is reused
    n_att = pgd_run.summary.sort_values("eps")["n_attacked"].to_numpy()
    assert (np.diff(n_att) <= 0).all()


def test_same_seed_same_records(tiny_vqa, vqa_task, pgd_run):
    again = rpt.evaluate(tiny_vqa, vqa_task, attack="pgd", eps=EPS, steps=4, batch_size=16, progress=False)
    assert again.records.equals(pgd_run.records)


@pytest.mark.parametrize("name", ["emb-fgsm", "emb-pgd"])
def test_embedding_attacks(name, tiny_vqa, vqa_task):
    eps = [0.02, 0.1]
    run = rpt.evaluate(
        tiny_vqa, vqa_task, attack=name, eps=eps, steps=None if name == "emb-fgsm" else 3, batch_size=24, progress=False
    )
    _check_monotone(run, eps)
    r = run.records
    assert (r["linf"] <= r["eps"] + 1e-5).all()  # in units of each example's embedding RMS
    assert run.summary["robust"].iloc[-1] < run.summary["clean"].iloc[-1]
    assert (run.summary["kind"] == "embedding").all()


def test_classifier_on_tensors(tiny_cnn):
    model, x, y = tiny_cnn
    run = rpt.evaluate(model, (x, y), attack="fgsm", eps=8 / 255, progress=False)
    s = run.summary
    assert len(s) == 1 and s["task"].iloc[0] == "tensors" and s["model"].iloc[0] == "TinyCNN"
    with torch.no_grad():
        acc = float((model(x).argmax(-1) == y).float().mean())
    assert math.isclose(s["clean"].iloc[0], acc)
    assert s["robust"].iloc[0] <= s["clean"].iloc[0]
    assert (run.records["linf"] <= 8 / 255 + 1e-6).all()


def _untrained(image_size=48):
    from robust_pt.models.ofa import build
    from robust_pt.tasks.vocab import WORDS, bin_tokens

    torch.manual_seed(0)
    m = build("tiny", vocab=list(WORDS) + bin_tokens()).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    m.meta = {"name": "untrained"}
    return m


def test_caption_reports_cider_bleu_and_keeps_worst_caption():
    m = _untrained()
    task = rpt.load_task("shapes-caption", limit=6, size=m.image_size)
    run = rpt.evaluate(m, task, attack="pgd", eps=[2 / 255, 8 / 255], steps=2, batch_size=3, progress=False)
    s = run.summary
    assert (s["metric"] == "cider").all() and {"bleu4_clean", "bleu4_robust"} <= set(s.columns)
    _check_monotone(run, [2 / 255, 8 / 255])
    r = run.records
    assert r["attacked"].all()  # no correctness notion: every example at every eps
    for _, g in r.groupby("id"):
        sc = g.sort_values("eps")["score"].to_numpy()
        assert (np.diff(sc) <= 1e-12).all() and (sc <= g["clean_score"].iloc[0] + 1e-12).all()
    # clean CIDEr equals the task's corpus CIDEr of the same captions
    from robust_pt.tasks.metrics import cider

    g0 = r[r["eps"] == r["eps"].min()].sort_values("index")
    assert math.isclose(s["clean"].iloc[0], cider([list(task[i].refs) for i in g0["index"]], list(g0["clean_pred"])))


def test_grounding_runs_with_generated_boxes():
    m = _untrained()
    task = rpt.load_task("shapes-ground", limit=4, size=m.image_size)
    run = rpt.evaluate(m, task, attack="pgd", eps=[8 / 255], steps=1, batch_size=4, progress=False)
    assert run.summary["metric"].iloc[0] == "acc@0.5"
    assert run.records["pred"].map(lambda p: isinstance(p, str)).all()
    with pytest.raises(AttackError, match="needs logits"):
        rpt.evaluate(m, task, attack="pgd", eps=[8 / 255], backend="torchattacks", progress=False)
    with pytest.raises(AttackError, match="needs logits"):
        rpt.evaluate(m, task, attack="square", eps=[8 / 255], progress=False)


def test_refusals(tiny_vqa, tiny_cnn):
    model, x, y = tiny_cnn
    with pytest.raises(TaskError, match="tuned on shapes-vqa, not shapes-ve"):
        rpt.evaluate(tiny_vqa, "shapes-ve", attack="fgsm", limit=4, progress=False)
    with pytest.raises(AttackError, match="embeddings"):
        rpt.evaluate(model, (x, y), attack="emb-fgsm", progress=False)
    with pytest.raises(TaskError, match="needs a task with questions"):
        rpt.evaluate(tiny_vqa, (x, y), attack="fgsm", progress=False)
    with pytest.raises(TaskError, match=r"\(images, labels\)"):
        rpt.evaluate(model, "shapes-vqa", attack="fgsm", progress=False)
    with pytest.raises(TaskError, match="labels must lie"):
        rpt.evaluate(model, (x, y + 10), attack="fgsm", progress=False)
