"""Targeted attacks: success means the target was produced, re-verified on a freshly loaded model;
targets are seeded, the task's verdict stays in the records, and bad targets are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import robust_pt as rpt
from robust_pt.errors import AttackError

EPS = [8 / 255, 32 / 255]


def _run(model, task, target, attack="pgd", **kw):
    kw.setdefault("steps", 10)  # None: the preset's (a text attack has no steps)
    return rpt.evaluate(model, task, attack, eps=kw.pop("eps", EPS), target=target, progress=False, **kw)


def test_a_targeted_success_is_the_target_on_a_fresh_model(tiny_vqa, tiny_vqa_dir, vqa_task):
    """The engine's own perturbation (the image threat model bound to the run's victim): every row it
    calls a success gives the target on the checkpoint loaded again from disk, and no other row does."""
    from robust_pt.attacks import build
    from robust_pt.attacks.core import threat_model
    from robust_pt.attacks.victim import make_victim
    from robust_pt.models.predict import images_of

    spec = build("pgd", steps=10, target="random").spec
    victim = make_victim(tiny_vqa, vqa_task, torch.device("cpu"), {"grad_evals": 0, "fwd_evals": 0})
    bound = threat_model("image").bind(victim, spec, seed=0)
    exs = list(vqa_task)[:24]
    x0 = images_of(exs)
    with torch.enable_grad():
        out = bound.perturb(0, exs, list(range(len(exs))), x0, 32 / 255, 0)
    fresh = rpt.load_model(tiny_vqa_dir)
    with torch.no_grad():
        pred = fresh.candidate_logits(out.adv, [e.text for e in exs], vqa_task.answers).argmax(-1).tolist()
    targets = [vqa_task.answers.index(f["target"]) for f in out.extra]
    assert out.success.any()  # (how many: the model is trained in the run and differs across CPU kernels)
    assert [p == t for p, t in zip(pred, targets)] == out.success.tolist()
    assert all(t != e.label for t, e in zip(targets, exs))  # random targets are never the truth
    assert (out.adv - x0).abs().amax() <= 32 / 255 + 1e-6 and out.adv.min() >= 0 and out.adv.max() <= 1


def test_targeted_records_keep_the_task_verdict_and_the_target(tiny_vqa, vqa_task):
    run = _run(tiny_vqa, vqa_task, "random", seed=3)
    r = run.records
    aimed = r[r["target"].notna()]
    assert len(aimed) and aimed["target_success"].any()
    hit = aimed[aimed["target_success"].astype(bool)]
    assert (hit["pred"] == hit["target"]).all() and not hit["correct"].any()
    missed = aimed[~aimed["target_success"].astype(bool)]
    truth = {ex.id: vqa_task.answers[ex.label] for ex in vqa_task}
    assert len(missed) and (missed["correct"].astype(bool) == (missed["pred"] == missed["id"].map(truth))).all()
    for e in EPS:  # the summary's target_success: hits among the aimed-at examples
        d = aimed[np.isclose(aimed["eps"], e)]
        row = run.summary[np.isclose(run.summary["eps"], e)].iloc[0]
        assert row["target"] == "random" and row["target_success"] == pytest.approx(d["target_success"].mean())
    # a success at the smaller eps counts at the larger one
    first = aimed[np.isclose(aimed["eps"], EPS[0]) & aimed["target_success"].astype(bool)]["id"]
    later = aimed[np.isclose(aimed["eps"], EPS[1])].set_index("id").loc[list(first)]
    assert later["target_success"].all()
    # seeded: the same targets again
    again = _run(tiny_vqa, vqa_task, "random", seed=3).records
    assert list(again["target"]) == list(r["target"])


def test_a_fixed_target_and_least_likely(tiny_vqa, vqa_task):
    answer = vqa_task.answers[vqa_task[0].label]
    run = _run(tiny_vqa, vqa_task, answer)
    r = run.records
    own = [ex.id for ex in vqa_task if vqa_task.answers[ex.label] == answer]
    assert r.set_index("id").loc[own, "target"].isna().all()  # the truth is the target: nothing to aim at
    assert set(r["target"].dropna()) == {answer}
    ll = _run(tiny_vqa, vqa_task, "least-likely").records
    assert ll["target"].notna().any()


def test_targeted_is_harder_than_untargeted(tiny_vqa, vqa_task):
    untargeted = rpt.evaluate(tiny_vqa, vqa_task, "pgd", eps=EPS, steps=10, progress=False).summary
    targeted = _run(tiny_vqa, vqa_task, "random").summary
    assert (targeted["success_rate"].to_numpy() <= untargeted["success_rate"].to_numpy() + 1e-9).all()


def test_embedding_targeted(tiny_vqa, vqa_task):
    run = _run(tiny_vqa, vqa_task, "random", attack="emb-pgd", eps=[0.1, 0.5])
    hit = run.records[run.records["target_success"].astype(bool)]
    assert len(hit) and (hit["pred"] == hit["target"]).all()


def test_generative_targets_run(tmp_path):
    from robust_pt.models.ofa import build
    from robust_pt.tasks import load_task
    from robust_pt.tasks.vocab import WORDS, bin_tokens

    torch.manual_seed(0)
    model = build("tiny", vocab=list(WORDS) + bin_tokens()).eval()
    cap = load_task("shapes-caption", split="test", limit=4, size=model.image_size)
    run = _run(model, cap, "a red circle", eps=[8 / 255], batch_size=4)
    r = run.records
    assert set(r["target"]) == {"a red circle"} and r["target_cider"].notna().all()
    assert (r["target_success"] == (r["pred"] == "a red circle")).all()
    ground = load_task("shapes-ground", split="test", limit=4, size=model.image_size)
    run = _run(model, ground, f"0,0,{model.image_size // 2},{model.image_size // 2}", eps=[8 / 255])
    r = run.records  # a binary verdict: only the examples right on the clean input are aimed at
    assert (r["attacked"] == r["target"].notna()).all() and (r["attacked"] == r["clean_correct"]).all()


def test_bad_targets_are_refused(tiny_vqa, vqa_task):
    with pytest.raises(AttackError, match="not an answer of task shapes-vqa"):
        _run(tiny_vqa, vqa_task, "purple-elephant")
    with pytest.raises(AttackError, match="cannot take a target"):
        _run(tiny_vqa, vqa_task, "random", attack="square")
    with pytest.raises(AttackError, match="cannot take a target"):
        _run(tiny_vqa, vqa_task, "random", attack="deepwordbug", steps=None)
    with pytest.raises(AttackError, match="white-box"):
        _run(tiny_vqa, vqa_task, "random", surrogate=tiny_vqa)
    from robust_pt.models.ofa import build
    from robust_pt.tasks import load_task
    from robust_pt.tasks.vocab import WORDS, bin_tokens

    model = build("tiny", vocab=list(WORDS) + bin_tokens()).eval()
    ground = load_task("shapes-ground", split="test", limit=2, size=model.image_size)
    for box in ("1,2,3", "5,5,2,9", "0,0,1,999"):
        with pytest.raises(AttackError, match="x0,y0,x1,y1"):
            rpt.evaluate(model, ground, "pgd", target=box, progress=False)


def test_cli_target_flags(tmp_path):
    from tests._cli import assert_one_line_error, invoke

    base = ["attack", "--model", "builtin:base-small", "--task", "shapes-vqa", "--attack", "pgd", "--limit", 8]
    res = invoke(*base, "--eps", "8/255", "--target", "least-likely", "--out", tmp_path / "run")
    assert res.exit_code == 0, res.output
    assert_one_line_error(invoke(*base, "--target", "purple-elephant"), "not an answer of task shapes-vqa")
    assert_one_line_error(invoke(*base, "--target", "red", "--target-text", "a red circle"), "give one of --target")
    assert_one_line_error(invoke(*base[:-3], "fgsm", "--backend", "torchattacks", "--target", "red"), "ours backend")
