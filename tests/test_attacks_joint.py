"""Joint attacks (text then image PGD, image PGD then text): both budgets respected, each
stage stops once the other succeeded, and every verdict re-scored with a freshly loaded
model at the final (adversarial image, adversarial text) pair."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import robust_pt as rpt
from robust_pt.errors import AttackError

EPS = [2 / 255, 8 / 255]


def _records_and_direct(name, tiny_vqa_dir, vqa_task, eps):
    """The engine's records for 12 examples, and run_joint called directly with the engine's seeds."""
    from robust_pt.attacks import build
    from robust_pt.attacks.joint import run_joint
    from robust_pt.attacks.text.recipes import TextRunner
    from robust_pt.attacks.threats import derive_seed
    from robust_pt.models.predict import images_of
    from robust_pt.tuning import checkpoint as ckpt

    run = rpt.evaluate(tiny_vqa_dir, vqa_task, attack=name, eps=[eps], limit=12, batch_size=12, progress=False)
    model = ckpt.load(tiny_vqa_dir)
    r = run.records
    exs = [vqa_task[i] for i in range(12)]
    keep = [i for i in range(12) if bool(r.loc[r["id"] == exs[i].id, "clean_correct"].iloc[0])]
    sub = [exs[i] for i in keep]
    spec = build(name).spec
    text_eps = eps if spec.method == "image-text" else "any"
    out = run_joint(
        spec,
        TextRunner(spec, model, vqa_task.answers),
        model,
        vqa_task.answers,
        images_of(sub),
        [e.text for e in sub],
        torch.tensor([e.label for e in sub]),
        eps,
        seeds=[derive_seed(0, e.id, eps, 0) for e in sub],
        batch_seed=derive_seed(0, "batch", 0, eps, 0),
        text_seeds=[derive_seed(0, e.id, text_eps, "text") for e in sub],
        ids=[e.id for e in sub],
    )
    return run, sub, out


def _rescore(tiny_vqa_dir, vqa_task, run, sub, out, eps):
    from robust_pt.tuning import checkpoint as ckpt

    fresh = ckpt.load(tiny_vqa_dir)  # a second, freshly loaded copy
    recs = run.records.set_index("id")
    n_broken = 0
    for j, ex in enumerate(sub):
        rec = recs.loc[ex.id]
        assert out.texts[j] == (ex.text if pd.isna(rec["adv_text"]) else rec["adv_text"])
        with torch.no_grad():
            pred = int(fresh.candidate_logits(out.adv[j : j + 1], [out.texts[j]], vqa_task.answers).argmax(-1))
        assert vqa_task.answers[pred] == rec["pred"], ex.id
        assert (pred != ex.label) == (not rec["correct"]), ex.id
        n_broken += pred != ex.label
        assert float((out.adv[j] - torch.from_numpy(ex.image)).abs().max()) <= eps + 1e-6
        assert abs(float(out.linf[j]) - rec["linf"]) < 1e-6
    return n_broken


def test_joint_text_image(tiny_vqa_dir, vqa_task):
    run, sub, out = _records_and_direct("joint-text-image", tiny_vqa_dir, vqa_task, 8 / 255)
    assert _rescore(tiny_vqa_dir, vqa_task, run, sub, out, 8 / 255) > 0
    for j, tr in enumerate(out.text):
        assert tr is not None and tr.words_changed <= tr.max_words  # the text stage runs first, for every example
        broken_by_text = int(tr.logits.argmax()) != sub[j].label
        if broken_by_text:  # the image stage is skipped
            assert float(out.linf[j]) == 0 and int(out.steps[j]) == 0


def test_joint_image_text(tiny_vqa_dir, vqa_task):
    run, sub, out = _records_and_direct("joint-image-text", tiny_vqa_dir, vqa_task, 2 / 255)
    _rescore(tiny_vqa_dir, vqa_task, run, sub, out, 2 / 255)
    recs = run.records.set_index("id")
    for j, ex in enumerate(sub):
        tr = out.text[j]
        if tr is None:  # the image stage already broke it: no text stage
            assert recs.loc[ex.id, "words_changed"] == 0 and recs.loc[ex.id, "queries"] == 0
            assert not recs.loc[ex.id, "correct"]
        else:
            assert tr.queries > 0 and tr.words_changed <= tr.max_words
            assert recs.loc[ex.id, "queries"] == tr.queries


def test_joint_sweep_records_and_summary(tiny_vqa_dir, vqa_task):
    run = rpt.evaluate(
        tiny_vqa_dir, vqa_task, attack="joint-text-image", eps=EPS, limit=24, batch_size=24, progress=False
    )
    s, r = run.summary.sort_values("eps"), run.records
    assert (s["kind"] == "joint").all() and {"mean_words_changed", "mean_queries"} <= set(s.columns)
    assert (np.diff(s["robust"]) <= 1e-12).all() and (s["robust"] <= s["clean"]).all()
    att = r[r["attacked"]]
    assert (att["linf"] <= att["eps"] + 1e-6).all() and (att["words_changed"] <= att["max_words"]).all()
    # the text stage does not depend on eps: one adversarial text per example across the sweep
    assert (att.groupby("id")["adv_text"].nunique() == 1).all()
    assert run.stats["text_queries"] > 0 and run.stats["grad_evals"] > 0


def test_joint_bad_input(tiny_cnn, tmp_path):
    from robust_pt.attacks import build

    model, x, y = tiny_cnn
    with pytest.raises(AttackError, match="image-only classifier"):
        rpt.evaluate(model, (x, y), attack="joint-image-text", progress=False)
    p = tmp_path / "mine.yaml"
    p.write_text("name: mine\nkind: joint\nmethod: text-image\nmax_words_fraction: 0.2\neps: [8/255]\n")
    with pytest.raises(AttackError, match="text_method"):
        build(str(p))
    p.write_text("name: mine\nkind: joint\nmethod: text-image\ntext_method: pwws\neps: [8/255]\n")
    with pytest.raises(AttackError, match="max_words_fraction"):
        build(str(p))
    with pytest.raises(AttackError, match=r"\(0, 1\]"):
        build("joint-text-image", max_words_fraction=1.5)
    with pytest.raises(AttackError, match="larger than 1"):
        build("joint-text-image").eps_grid([2.0])
