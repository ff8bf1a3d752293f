"""Attack methods are a registry (attacks/methods.py): the built-in ones declare their parameters
and capabilities, and a new method is one registration that presets, the engine and the
library backends pick up without any other edit."""

from __future__ import annotations

import pytest

import robust_pt as rpt
from robust_pt.attacks import build, methods
from robust_pt.attacks.methods import AttackMethod, GradientParams
from robust_pt.attacks.presets import NEEDS_LOGITS, SUPPORT
from robust_pt.errors import AttackError


def test_the_builtin_methods_declare_what_the_old_lists_said():
    assert NEEDS_LOGITS == ("apgd", "square", "cw", "autoattack", "mifgsm", "difgsm")
    assert SUPPORT[("image", "pgd")] == ("ours", "torchattacks", "foolbox")
    assert SUPPORT[("embedding", "fgsm")] == ("ours",)
    assert methods.get("image", "fgsm").one_step and methods.get("image", "square").black_box
    assert methods.get("image", "pgd").engine_restarts and not methods.get("image", "apgd").engine_restarts
    p = methods.get("image", "cw").params(build("cw-l2").spec)
    assert (p.steps, p.c, p.kappa) == (build("cw-l2").spec.steps, build("cw-l2").spec.c, build("cw-l2").spec.kappa)
    with pytest.raises(AttackError, match="Carlini-Wagner is an L2 attack"):
        build("cw-l2", norm="linf")
    with pytest.raises(AttackError, match="is a one-step attack"):
        build("fgsm", steps=3)


@pytest.fixture
def rfgsm():
    """R+FGSM (torchattacks.RFGSM): a random step of eps/2, then a gradient step, as a new method."""
    m = methods.register(
        AttackMethod(
            "rfgsm",
            "image",
            GradientParams,
            ("torchattacks",),
            torchattacks=lambda spec, p, ta, model, eps, *_: ta.RFGSM(model, eps=eps, alpha=eps / 2, steps=p.steps),
        )
    )
    yield m
    methods._methods.pop(("image", "rfgsm"))


def test_a_registered_method_runs_through_presets_and_the_engine(rfgsm, tiny_cnn, tmp_path):
    pytest.importorskip("torchattacks")
    preset = tmp_path / "rfgsm.yaml"
    preset.write_text("name: rfgsm\nkind: image\nmethod: rfgsm\nbackend: torchattacks\nsteps: 1\neps: [8/255]\n")
    model, x, y = tiny_cnn
    run = rpt.evaluate(model, (x, y), attack=str(preset), progress=False)
    r = run.records
    assert (r["linf"] <= 8 / 255 + 1e-6).all() and r["attacked"].any()
    with pytest.raises(AttackError, match="has no ours backend; use --backend torchattacks"):
        build(str(preset), backend="ours")


@pytest.mark.parametrize("preset", ["mi-fgsm", "di-fgsm"])
def test_the_transfer_oriented_presets_run_inside_their_ball(preset, tiny_cnn):
    pytest.importorskip("torchattacks")
    model, x, y = tiny_cnn
    run = rpt.evaluate(model, (x, y), attack=preset, eps=[2 / 255, 8 / 255], progress=False)
    r = run.records
    assert (r["linf"] <= r["eps"] + 1e-6).all() and r["attacked"].any()
    assert run.summary.set_index("eps")["robust"][8 / 255] < run.summary["clean"].iloc[0]  # it breaks some


def test_mi_fgsm_through_the_engine_is_torchattacks_mifgsm(tiny_cnn):
    """Same robust accuracy as torchattacks' MIFGSM called directly on the clean-correct examples."""
    ta = pytest.importorskip("torchattacks")
    import torch

    model, x, y = tiny_cnn
    eps = 8 / 255
    run = rpt.evaluate(model, (x, y), attack="mi-fgsm", eps=[eps], progress=False)
    with torch.no_grad():
        cc = model(x).argmax(-1) == y
    adv = ta.MIFGSM(model, eps=eps, alpha=eps / 10, steps=10, decay=1.0)(x[cc], y[cc])
    with torch.no_grad():
        direct = int((model(adv).argmax(-1) == y[cc]).sum())
    assert int(run.records["correct"].astype(bool).sum()) == direct
