"""docs/extending.md's image attack with a setting of its own (tests/extending_shortstep.py: one file,
one registration, plus its YAML) runs through evaluate; its setting reaches the method as a float and a
wrongly typed value is refused with one line."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

import robust_pt as rpt
from robust_pt.attacks import build, methods
from robust_pt.errors import AttackError, ConfigError

from . import extending_shortstep

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "extending.md").read_text()


def _preset_from_the_docs() -> str:
    block = re.search(r"```yaml\n# short-step.yaml\n(.*?)```", DOC, re.S)
    assert block, "docs/extending.md shows short-step.yaml"
    return block.group(1)


def test_the_docs_show_the_example_file_as_it_is():
    code = Path(extending_shortstep.__file__).read_text().split('"""', 2)[2].strip()
    assert code in DOC


def test_the_new_attack_runs_through_evaluate_with_its_setting_a_float(tiny_cnn, tmp_path):
    preset = tmp_path / "short-step.yaml"
    preset.write_text(_preset_from_the_docs())
    m = methods.get("image", "short-step")
    seen = []

    def spy(spec, p, *rest):
        seen.append(p.scale)
        return m.run(spec, p, *rest)

    methods.register(replace(m, run=spy))
    try:
        model, x, y = tiny_cnn
        run = rpt.evaluate(model, (x, y), attack=str(preset), progress=False)
    finally:
        methods.register(m)
    assert seen and all(type(s) is float and s == 0.5 for s in seen)
    r = run.records
    a = r[r["attacked"]]
    assert len(a) and (a["linf"] <= 0.5 * a["eps"] + 1e-6).all() and (a["linf"] > 0.5 * a["eps"] - 1e-6).any()
    assert build(str(preset), scale="1/4").spec.params.scale == 0.25  # an override, read as a number


def test_a_wrongly_typed_or_out_of_range_setting_is_refused(tmp_path):
    preset = tmp_path / "short-step.yaml"
    preset.write_text(_preset_from_the_docs().replace("scale: 0.5", "scale: half"))
    with pytest.raises(
        ConfigError, match=r"^scale must be a number .* in attack preset .*short-step.yaml, got 'half'$"
    ):
        build(str(preset))
    preset.write_text(_preset_from_the_docs())
    with pytest.raises(AttackError, match="attack short-step: scale must lie in \\(0, 1\\], got 2.0"):
        build(str(preset), scale=2)
    with pytest.raises(ConfigError, match="unknown attack option 'kappa' for image short-step"):
        build(str(preset), kappa=1)


def test_a_new_setting_moves_no_existing_fingerprint_and_is_its_own_runs():
    spec = build("pgd").spec
    assert "settings" not in spec.identity
    shortstep = methods.get("image", "short-step")
    own = replace(spec, method="short-step", settings=(("scale", 0.5),))
    assert own.identity["settings"] == {"scale": 0.5} and shortstep.params(own).scale == 0.5
