"""Image attacks: every preset stays in its eps-ball and in [0, 1]; our PGD/FGSM equal
torchattacks' bit for bit; foolbox and torchattacks agree; presets validate."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from robust_pt.attacks import build, list_presets
from robust_pt.attacks.image import flat_norms, run_image_attack
from robust_pt.attacks.objectives import ClassifierImage, ClosedImage
from robust_pt.errors import AttackError, ConfigError
from robust_pt.models.base import BoundClassifier
from robust_pt.models.predict import images_of

PRESETS = ["fgsm", "pgd", "pgd-l2", "apgd-ce", "square", "cw-l2", "autoattack"]
# tiny budgets so the whole file stays fast
TINY = {
    "pgd": dict(steps=3),
    "pgd-l2": dict(steps=3),
    "apgd-ce": dict(steps=3),
    "square": dict(queries=15),
    "cw-l2": dict(steps=5),
    "autoattack": dict(steps=2, queries=10, target_classes=2),
}


def _batch(task, n):
    exs = [task[i] for i in range(n)]
    x = images_of(exs)
    y = torch.tensor([e.label for e in exs])
    return exs, x, y


def _in_ball(adv, x0, eps, norm):
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    linf, l2 = flat_norms(adv - x0)
    if norm == "linf":
        assert bool((linf <= eps + 1e-6).all()), (linf.max(), eps)
    else:
        assert bool((l2 <= eps * (1 + 1e-5)).all()), (l2.max(), eps)


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_stays_in_ball_vl(name, tiny_vqa, vqa_task):
    """On the VL model (library attacks see subsets of the batch: RowMatched must hold)."""
    atk = build(name, **TINY.get(name, {}))
    exs, x, y = _batch(vqa_task, 8)
    obj = ClosedImage(tiny_vqa, [e.text for e in exs], vqa_task.answers, y)
    eps = max(atk.spec.eps)
    r = run_image_attack(
        atk.spec,
        obj,
        x,
        eps,
        seeds=list(range(8)),
        batch_seed=1,
        classifier=obj.classifier,
        n_classes=len(vqa_task.answers),
    )
    assert r.adv.shape == x.shape
    _in_ball(r.adv, x, eps, atk.spec.norm)
    assert r.logits is not None and r.logits.shape == (8, len(vqa_task.answers))
    with torch.no_grad():
        ref = tiny_vqa.candidate_logits(r.adv, [e.text for e in exs], vqa_task.answers)
    assert torch.equal(ref.argmax(-1), r.logits.argmax(-1))


@pytest.mark.parametrize(
    "name,backend",
    [("pgd", "torchattacks"), ("pgd", "foolbox"), ("fgsm", "foolbox"), ("pgd-l2", "foolbox"), ("cw-l2", "foolbox")],
)
def test_other_backends_stay_in_ball(name, backend, tiny_cnn):
    model, x, y = tiny_cnn
    atk = build(name, backend=backend, **TINY.get(name, {}))
    obj = ClassifierImage(model, y)
    for eps in atk.spec.eps:
        r = run_image_attack(
            atk.spec, obj, x, eps, seeds=list(range(len(x))), batch_seed=0, classifier=model, n_classes=4
        )
        _in_ball(r.adv, x, eps, atk.spec.norm)


def test_ours_pgd_equals_torchattacks_pgd(tiny_vqa, vqa_task):
    import torchattacks

    exs, x, y = _batch(vqa_task, 16)
    texts = [e.text for e in exs]
    bound = BoundClassifier(tiny_vqa, texts, vqa_task.answers)
    eps = 4 / 255
    ta = torchattacks.PGD(bound, eps=eps, alpha=1 / 255, steps=5, random_start=False)(x, y)
    spec = build("pgd", steps=5, random_start=False, early_stop=False).spec
    obj = ClosedImage(tiny_vqa, texts, vqa_task.answers, y)
    ours = run_image_attack(spec, obj, x, eps, seeds=[0] * 16, batch_seed=0)
    assert torch.equal(ours.adv, ta)
    assert not torch.equal(ours.adv, x)  # it did move


def test_ours_pgd_l2_and_fgsm_equal_torchattacks(tiny_cnn):
    import torchattacks

    model, x, y = tiny_cnn
    obj = ClassifierImage(model, y)
    spec = build("pgd-l2", steps=4, random_start=False, early_stop=False).spec
    ta = torchattacks.PGDL2(model, eps=0.5, alpha=0.125, steps=4, random_start=False)(x, y)
    assert torch.equal(run_image_attack(spec, obj, x, 0.5, seeds=[0] * len(x), batch_seed=0).adv, ta)
    spec = build("fgsm").spec
    ta = torchattacks.FGSM(model, eps=8 / 255)(x, y)
    assert torch.equal(run_image_attack(spec, obj, x, 8 / 255, seeds=[0] * len(x), batch_seed=0).adv, ta)


def test_early_stop_is_at_least_as_strong_and_cheaper(tiny_vqa, vqa_task):
    exs, x, y = _batch(vqa_task, 16)
    obj = ClosedImage(tiny_vqa, [e.text for e in exs], vqa_task.answers, y)
    eps = 8 / 255
    full = run_image_attack(
        build("pgd", steps=5, early_stop=False).spec, obj, x, eps, seeds=list(range(16)), batch_seed=0
    )
    fast = run_image_attack(
        build("pgd", steps=5, early_stop=True).spec, obj, x, eps, seeds=list(range(16)), batch_seed=0
    )
    wrong_full = full.logits.argmax(-1) != y
    wrong_fast = fast.logits.argmax(-1) != y
    assert bool((wrong_fast | ~wrong_full).all())  # whatever full PGD breaks, early stop breaks too
    assert fast.grad_evals <= full.grad_evals


def test_foolbox_agrees_with_torchattacks_within_2_points(tiny_cnn_class):
    """Robust accuracy of the same PGD through both libraries, on 256 examples."""
    import robust_pt as rpt

    TinyCNN = tiny_cnn_class
    torch.manual_seed(1)
    model = TinyCNN().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.rand(256, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(-1)
    accs = {}
    for backend in ("torchattacks", "foolbox"):
        run = rpt.evaluate(
            model,
            (x, y),
            attack="pgd",
            eps=[8 / 255, 16 / 255, 24 / 255],
            backend=backend,
            steps=5,
            random_start=False,
            batch_size=128,
            progress=False,
        )
        accs[backend] = run.summary["robust"].to_numpy()
    assert abs(accs["torchattacks"] - accs["foolbox"]).max() <= 0.02, accs
    assert 0.0 < accs["torchattacks"][1] < 1.0  # the attack did something, not everything


# ----------------------------------------------------------------------------- presets


def test_presets_listed_and_valid():
    names = {s.name for s in list_presets()}
    assert set(PRESETS) | {"emb-fgsm", "emb-pgd"} <= names
    for s in list_presets():
        assert s.description and s.eps
    aa = build("autoattack").spec
    assert aa.steps == 100 and aa.target_classes == 9  # the reference settings


def test_autoattack_uses_reference_settings(tiny_cnn):
    from robust_pt.attacks.image import _torchattacks_attack

    model, x, y = tiny_cnn
    atk = _torchattacks_attack(build("autoattack").spec, model, 8 / 255, n_classes=20, seed=0)
    subs = atk._autoattack.attacks
    assert all(s.steps == 100 for s in subs if hasattr(s, "steps"))
    assert all(s.n_target_classes == 9 for s in subs if hasattr(s, "n_target_classes"))


def test_preset_validation(tmp_path):
    with pytest.raises(AttackError, match="known presets: .*pgd"):
        build("nope")
    with pytest.raises(AttackError, match="steps must be a positive"):
        build("pgd", steps=0)
    with pytest.raises(AttackError, match="no foolbox backend"):
        build("apgd-ce", backend="foolbox")
    with pytest.raises(ConfigError, match="unknown attack option 'stepz'"):
        build("pgd", stepz=3)
    with pytest.raises(AttackError, match="eps must be > 0"):
        build("pgd").eps_grid("0")
    with pytest.raises(AttackError, match="larger than 1"):
        build("pgd").eps_grid("2")
    assert build("pgd-l2").eps_grid("2") == [2.0]  # L2 eps may exceed 1
    with pytest.raises(ConfigError, match="bad eps value"):
        build("pgd").eps_grid("8/x")
    assert build("pgd").eps_grid("8/255, 0.01,1/255") == [1 / 255, 0.01, 8 / 255]
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nmethod: pgd\nsteps: 3\nstepsize: 0.1\n")
    with pytest.raises(ConfigError, match="unknown key 'stepsize'.*allowed keys: name"):
        build(str(bad))
    good = tmp_path / "mine.yaml"
    good.write_text("name: mine\nmethod: pgd\nsteps: 3\nrandom_start: false\neps: [2/255]\n")
    spec = build(str(good)).spec
    assert spec.steps == 3 and spec.eps == (2 / 255,) and not spec.random_start
    assert dataclasses.asdict(spec)["path"] == str(good)


def test_shared_images_keep_their_own_questions(tiny_vqa, vqa_task):
    """Two questions on one image (as in VQAv2): subset-calling library attacks must not mix them up."""
    from robust_pt.attacks.image import unique_image_groups

    exs, x, y = _batch(vqa_task, 6)
    x = torch.cat([x[:3], x[:3]])  # rows 3-5 repeat the images of rows 0-2 ...
    texts = [e.text for e in exs[:3]] + ["how many objects are there?"] * 3  # ... with other questions
    y = torch.cat([y[:3], y[3:6]])
    groups = unique_image_groups(x)
    assert [g.tolist() for g in groups] == [[0, 1, 2], [3, 4, 5]]
    seen = []

    class Spy(ClosedImage):
        def _logits(self, xx, rows):
            seen.append(rows.tolist())
            return super()._logits(xx, rows)

    obj = Spy(tiny_vqa, texts, vqa_task.answers, y)
    r = run_image_attack(
        build("apgd-ce", steps=2, backend="torchattacks").spec,  # a library backend, which calls subsets
        obj,
        x,
        8 / 255,
        seeds=[0] * 6,
        batch_seed=0,
        classifier=obj.classifier,
        n_classes=len(vqa_task.answers),
    )
    _in_ball(r.adv, x, 8 / 255, "linf")
    assert any(rows and min(rows) >= 3 for rows in seen)  # the second group used its own questions
    assert all(set(rows) <= {0, 1, 2} or set(rows) <= {3, 4, 5} for rows in seen[:-1])
