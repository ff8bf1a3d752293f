"""Attack settings are typed by the method that declares them (attacks/methods.py, attacks/params.py):
presets, overrides and recipe entries with a wrongly typed, unknown or out-of-range value are one
line naming the key; the run fingerprint of every shipped preset is what it was before methods
declared their parameters (tests/assets/attack_identities.json, computed from the code before)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from robust_pt.attacks import build, methods
from robust_pt.attacks.presets import preset_files
from robust_pt.errors import AttackError, ConfigError

PINNED = json.loads((Path(__file__).parent / "assets" / "attack_identities.json").read_text())


def test_every_shipped_preset_keeps_its_fingerprint_byte_for_byte():
    assert sorted(preset_files()) == sorted(PINNED["presets"])
    for name, identity in PINNED["presets"].items():
        assert json.dumps(build(name).spec.identity) == json.dumps(identity), name


def test_the_overrides_the_recipes_use_keep_their_fingerprint():
    for key, case in PINNED["overridden"].items():
        got = build(case["attack"], **case["overrides"]).spec.identity
        assert json.dumps(got) == json.dumps(case["identity"]), key


def test_the_report_sees_the_preset_it_always_saw():
    d = build("pgd").spec.to_dict()
    assert "settings" not in d and list(d)[-1] == "path" and list(d)[:2] == ["name", "description"]


def _preset(tmp_path, body: str) -> str:
    p = tmp_path / "mine.yaml"
    p.write_text("name: mine\nkind: image\nmethod: pgd\neps: [2/255]\n" + body)
    return str(p)


@pytest.mark.parametrize(
    "line, message",
    [
        ("steps: ten", "steps must be an integer in attack preset .*mine.yaml, got 'ten'"),
        ("steps: 2.5", "steps must be an integer in attack preset .*, got 2.5"),
        ("random_start: 3", "random_start must be true or false in attack preset .*, got 3"),
        ("step_ratio: big", "step_ratio must be a number"),
        (
            "c: 2.0",
            r"unknown key 'c' in attack preset .* \(c is a setting of image cw\); allowed keys: name.*restarts \(those of image pgd\)",
        ),
    ],
)
def test_a_wrongly_typed_or_unknown_preset_value_is_refused_by_name(tmp_path, line, message):
    with pytest.raises(ConfigError, match=message):
        build(_preset(tmp_path, line + "\n"))


def test_values_are_read_by_their_declared_type(tmp_path):
    spec = build(_preset(tmp_path, "steps: 10.0\nstep_ratio: 1/8\nrestarts: '2'\n")).spec
    assert (spec.steps, spec.step_ratio, spec.restarts) == (10, 0.125, 2)
    assert type(spec.params.step_ratio) is float and type(spec.params.steps) is int


@pytest.mark.parametrize(
    "overrides, error, message",
    [
        ({"steps": "ten"}, ConfigError, "steps must be an integer in the overrides of attack pgd"),
        ({"steps": 0}, AttackError, "attack pgd: steps must be a positive integer, got 0"),
        ({"kappa": 1.0}, ConfigError, "unknown attack option 'kappa' for image pgd"),
        ({"step_ratio": -1}, AttackError, "attack pgd: step_ratio must be > 0, got -1"),
    ],
)
def test_overrides_are_checked_against_the_method(overrides, error, message):
    with pytest.raises(error, match=message):
        build("pgd", **overrides)


def test_ranges_and_choices_come_from_the_method():
    with pytest.raises(AttackError, match="attack apgd-ce: loss must be ce or dlr, got 'margin'"):
        build("apgd-ce", loss="margin")
    with pytest.raises(AttackError, match="attack square: p_init must lie in \\(0, 1\\], got 1.5"):
        build("square", p_init=1.5)
    with pytest.raises(AttackError, match="max_words_fraction must lie in \\(0, 1\\]"):
        build("joint-image-text", max_words_fraction=2)
    with pytest.raises(ConfigError, match="unknown attack option 'steps' for text deepwordbug"):
        build("deepwordbug", steps=5)
    with pytest.raises(ConfigError, match="unknown attack option 'queries' for corruption fog"):
        build("fog", queries=5)


def test_one_name_one_meaning_for_the_query_budget():
    square = methods.get("image", "square")
    assert square.black_box and not hasattr(square, "query_budget")
    assert build("square", steps=500).spec.queries == 500  # a black-box attack's one budget knob
    assert build("deepwordbug", queries=100).spec.queries == 100


def test_the_shipped_gradient_methods_declare_the_roles_the_masking_checks_gave_them():
    """A pin of the shipped methods (a method registered later declares its own): exactly what report/sanity.py's
    name sets meant before the declarations, a method's name whatever its kind."""
    before = {"pgd": ("white-box", "steps"), "apgd": ("white-box",), "fgsm": ("one-step",), "square": ("black-box",)}
    shipped = {
        "image": ("pgd", "fgsm", "apgd", "square", "cw", "autoattack", "mifgsm", "difgsm", "sga"),
        "embedding": ("pgd", "fgsm"),
    }
    for kind, names in shipped.items():
        for name in names:
            assert methods.get(kind, name).sanity_roles == before.get(name, ()), (kind, name)
    for kind in ("text", "joint"):
        assert all(methods.get(kind, name).sanity_roles == () for name in methods.names(kind))


def test_text_joint_and_corruption_methods_register_as_the_gradient_ones():
    from robust_pt.attacks.presets import method_of

    assert methods.get("text", "pwws").params_class is methods.TextParams
    assert methods.get("joint", "sga").params_class is methods.JointParams
    assert method_of("corruption", "fog").params_class is methods.SeverityParams
    assert method_of("text-corruption", "keyboard") is not None


def test_a_minimising_method_runs_once_per_example_and_is_clipped_to_each_eps(tiny_cnn):
    """CW declares `minimises`: each example's minimal perturbation is found once and projected onto
    every eps ball (the sweep's survivors at a larger eps are not attacked again)."""
    pytest.importorskip("torchattacks")
    from dataclasses import replace

    import robust_pt as rpt

    cw = methods.get("image", "cw")
    attacked = []

    def counting(spec, p, ta, model, eps, *rest):
        atk = cw.torchattacks(spec, p, ta, model, eps, *rest)
        return lambda x, y: (attacked.append(len(x)), atk(x, y))[1]

    methods.register(replace(cw, torchattacks=counting))
    try:
        model, x, y = tiny_cnn
        run = rpt.evaluate(model, (x, y), attack="cw-l2", eps=[0.05, 0.5, 2.0], progress=False)
    finally:
        methods.register(cw)
    r = run.records
    assert (r["l2"] <= r["eps"] + 1e-5).all()
    assert sum(attacked) == int(r.drop_duplicates("id")["clean_correct"].sum())  # once each, at the first eps
    assert r[r["attacked"]]["eps"].nunique() > 1  # survivors went on to larger balls, reusing their result


def test_a_minimising_method_on_foolbox_keeps_its_unclipped_result_for_larger_balls(tiny_cnn):
    """foolbox returns CW's result clipped to the eps asked; the kept result must be the raw one, so a
    sweep is as strong at its largest eps as a run at that eps alone (a clipped one would not grow)."""
    pytest.importorskip("foolbox")
    import robust_pt as rpt

    model, x, y = tiny_cnn
    kw = dict(attack="cw-l2", backend="foolbox", steps=20, progress=False)
    sweep = rpt.evaluate(model, (x, y), eps=[0.05, 0.5, 3.0], **kw).summary.set_index("eps")
    alone = rpt.evaluate(model, (x, y), eps=[3.0], **kw).summary.set_index("eps")
    assert sweep.loc[3.0, "robust"] <= alone.loc[3.0, "robust"]
    assert sweep.loc[3.0, "robust"] < sweep.loc[0.05, "robust"]  # the larger ball broke more


def test_every_registered_text_recipe_and_joint_order_has_its_implementation():
    from robust_pt.attacks.joint import ORDERS
    from robust_pt.attacks.text.recipes import RECIPES

    assert set(RECIPES) == set(methods.names("text")) and set(ORDERS) == set(methods.names("joint"))
