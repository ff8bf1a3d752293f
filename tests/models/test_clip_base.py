"""The committed miniature CLIP, builtin:clip-small: it learned (zero-shot far above chance, no training in the run),
every learner improves on zero-shot where zero-shot is weak, and adversarial CoOp is more robust than clean CoOp at
its eps. Margins: the numbers below were identical under the default, ATen `default` and `avx2` kernel paths
(oneDNN and MKL capped at AVX2); each margin is at least twice what it asserts."""

from __future__ import annotations

import pytest

import robust_pt
from robust_pt.models.predict import evaluate_clean
from robust_pt.tasks import load_task
from robust_pt.tuning import registry
from robust_pt.tuning.config import TrainConfig, TuningConfig
from robust_pt.tuning.train import tune

BASE = "builtin:clip-small"
LEARNERS = [m.name for m in registry.builtin_methods() if "mini-clip" in m.architectures]


@pytest.fixture(scope="module")
def clip():
    return robust_pt.load_model(BASE)


def test_the_committed_base_is_a_mini_clip_that_learned_zero_shot(clip):
    """Measured: 100% on the novel classes (chance 1/7) and on all 15 object classes (chance 1/15)."""
    assert clip.architecture == "mini-clip" and clip.meta["method"] == "pretrain"
    for name, chance in (("shapes-objects-novel", 1 / 7), ("shapes-objects", 1 / 15)):
        acc = evaluate_clean(clip, load_task(name, split="test", limit=300, size=clip.image_size))["accuracy"]
        assert acc >= 0.9 > 5 * chance, (name, acc)


@pytest.fixture(scope="module")
def counting_zero_shot(clip):
    """Counting is where zero-shot is weak (measured 31.3% on 300 test examples, chance 25%): the words of the
    hand template do not reach what the image features know."""
    return evaluate_clean(clip, load_task("shapes-counting", split="test", limit=300, size=clip.image_size))["accuracy"]


@pytest.mark.parametrize("method", LEARNERS)
def test_each_learner_improves_on_zero_shot(method, counting_zero_shot, tmp_path):
    """60 steps of 32 on shapes-counting, 300 test examples. Measured gains over zero-shot (points): CoOp +10.3,
    BitFit +35.7, VPT +38.7, MaPLe +43.3, linear probe +53.0, APT +54.0, Adapter +64.0, finetuning +68.0,
    LoRA +68.3; the test asks for +5."""
    tc = TrainConfig(steps=60, batch_size=32, eval_size=300, threads=1)
    meta = tune(BASE, "shapes-counting", TuningConfig(method), tc, tmp_path / method, log=lambda *_: None)
    assert meta["clean_metrics"]["accuracy"] >= counting_zero_shot + 0.05, (method, meta["clean_metrics"])


def test_adversarial_coop_is_more_robust_than_clean_coop_at_its_eps(tmp_path):
    """CoOp tuned 100 steps of 32 on base classes, clean and against PGD-2 at 4/255, then PGD-10 at 4/255 on 200
    test examples. Measured: 76.5% clean-tuned, 87.0% adversarially tuned (both 100% clean); the test asks for +4."""
    from robust_pt.tuning.adversarial import AdversarialConfig

    tc = TrainConfig(steps=100, batch_size=32, eval_size=50, threads=1)
    robust = {}
    for name, adv in (("clean", None), ("adversarial", AdversarialConfig("pgd", eps=4 / 255, steps=2))):
        tune(BASE, "shapes-objects-base", TuningConfig("coop"), tc, tmp_path / name, log=lambda *_: None,
             adversarial=adv)  # fmt: skip
        run = robust_pt.evaluate(tmp_path / name, task="shapes-objects-base", attack="pgd", eps=[4 / 255], limit=200,
                                 out=tmp_path / f"run-{name}", progress=False)  # fmt: skip
        robust[name] = float(run.summary["robust"].iloc[0])
    assert robust["adversarial"] >= robust["clean"] + 0.04, robust


def test_the_committed_robust_base_resists_pgd_and_keeps_its_zero_shot(tmp_path):
    """builtin:clip-small-robust (the image tower adversarially finetuned on the pairs, PGD-3 at 4/255, 500 steps):
    measured on 200 novel-class test examples, clean 100% for both bases, PGD-10 at 8/255 91.5% robust vs 24.5%
    plain; the test asks for 30 points. Not re-measured across kernel paths: the margin is 67 points."""
    robust = {}
    for base in ("builtin:clip-small", "builtin:clip-small-robust"):
        run = robust_pt.evaluate(base, task="shapes-objects-novel", attack="pgd", eps=[8 / 255], limit=200,
                                 out=tmp_path / base.split(":")[1], progress=False)  # fmt: skip
        assert float(run.summary["clean"].iloc[0]) >= 0.9, base
        robust[base] = float(run.summary["robust"].iloc[0])
    assert robust["builtin:clip-small-robust"] >= robust["builtin:clip-small"] + 0.30, robust
