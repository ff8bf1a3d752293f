"""The reference method of a report (`build(reference=...)`, `robust-pt report --reference`).

Why: finetuning is the default comparison, but a study of, say, prompt-tuning variants wants every
method against prompt tuning; the gaps, their signs and all the wording must follow the choice, and
the default must stay exactly what it was.
"""

from __future__ import annotations

import json

import pytest

from robust_pt.report import ReportError, build

from .._cli import assert_one_line_error, invoke
from .helpers import E1, E4, FT, FT_CLEAN, PT, golden_runs, right_except, write_run

#: An adapter-tuned model: breaks on fewer examples than prompt tuning at 4/255.
AD = {E1: right_except({0, 2}), E4: right_except({0, 2, 3, 4})}


def _runs(tmp_path):
    ft, pt = golden_runs(tmp_path)
    ad = write_run(tmp_path / "ad-pgd", "adapter-shapes-vqa", AD, FT_CLEAN)
    return [ft, pt, ad]


def _robust(correct: dict, eps: float) -> float:
    return sum(correct[eps]) / len(correct[eps])


def test_prompt_reference_compares_every_other_method_against_prompt(tmp_path):
    rep = build(_runs(tmp_path), n_boot=200, reference="prompt")
    g = rep.gaps
    assert rep.reference == "prompt"
    assert sorted(set(g["method"])) == ["adapter", "finetune"] and len(g) == 4
    assert set(g["reference"]) == {"prompt-shapes-vqa"}
    for _, r in g.iterrows():  # gap = method - prompt, on the same examples
        mine = {"finetune": FT, "adapter": AD}[r["method"]]
        eps = E1 if abs(r["eps"] - E1) < 1e-9 else E4
        assert r["gap"] == pytest.approx(_robust(mine, eps) - _robust(PT, eps))
        assert r["reference_robust"] == pytest.approx(_robust(PT, eps))
    ft = g[g["method"] == "finetune"].set_index("eps")["gap"]
    assert (ft < 0).all()  # finetuning keeps less than prompt tuning (the golden runs)


def test_prompt_reference_is_the_mirror_of_the_default(tmp_path):
    runs = _runs(tmp_path)
    default, prompt = build(runs, n_boot=200), build(runs, n_boot=200, reference="prompt")
    d = default.gaps[default.gaps["method"] == "prompt"].set_index("eps")
    p = prompt.gaps[prompt.gaps["method"] == "finetune"].set_index("eps")
    assert list(d.index) == list(p.index)
    assert (p["gap"] == -d["gap"]).all() and (p["p"] == d["p"]).all()  # McNemar is symmetric in b, c
    assert (p["b"] == d["c"]).all() and (p["c"] == d["b"]).all()


def test_prompt_reference_names_prompt_tuning_everywhere(tmp_path):
    out = tmp_path / "rep"
    rep = build(_runs(tmp_path), out, n_boot=200, figures=False, reference="prompt")
    text = " ".join(rep.findings)
    assert "finetuning keeps 20.0 points less accuracy than prompt tuning" in text
    assert "than finetuning" not in text
    md = (out / "report.md").read_text()
    assert "comparisons against prompt tuning (2 methods" in md
    assert "Gaps against prompt tuning" in md and "| vs prompt tuning |" in md and "Prompt tuning robust" in md
    assert "gap = method - prompt tuning on the same examples" in md
    assert "against finetuning" not in md and "finetuning's" not in md
    assert "gap = method - prompt tuning" in (out / "summary.tex").read_text()
    tests = json.loads((out / "summary.json").read_text())["tests"]
    assert tests["reference"] == "prompt" and tests["reference_name"] == "prompt tuning"


def test_alias_and_missing_reference_runs_of_one_attack(tmp_path):
    """`pt` is prompt; an attack without a prompt-tuning run gets a note naming prompt tuning."""
    runs = _runs(tmp_path) + [write_run(tmp_path / "ft-fgsm", "finetune-shapes-vqa", FT, FT_CLEAN, attack="fgsm")]
    rep = build(runs, n_boot=200, reference="pt")
    assert rep.reference == "prompt" and set(rep.gaps["attack"]) == {"pgd"}
    assert rep.notes == [
        "shapes-vqa, fgsm: no prompt tuning run, so no gap against prompt tuning "
        "(attack a checkpoint tuned with prompt tuning with the same attack to get one)"
    ]


def test_default_reference_is_finetuning_and_unchanged(tmp_path):
    runs = _runs(tmp_path)
    out = tmp_path / "rep"
    default = build(runs, out, n_boot=200, figures=False)
    explicit = build(runs, n_boot=200, reference="finetune")
    assert default.reference == explicit.reference == "finetune"
    assert default.findings == explicit.findings and default.gaps.equals(explicit.gaps)
    assert sorted(set(default.gaps["method"])) == ["adapter", "prompt"]
    assert "prompt tuning keeps 20.0 points more accuracy than finetuning" in " ".join(default.findings)
    tests = json.loads((out / "summary.json").read_text())["tests"]
    assert "reference" not in tests and "reference_name" not in tests  # default outputs as they were
    md = (out / "report.md").read_text()
    assert "Gaps against finetuning" in md and "Finetuning robust" in md


@pytest.mark.parametrize(
    "reference, needles",
    [
        ("nope", ["unknown reference method 'nope'", "finetune, prompt, adapter"]),
        ("lora", ["no run of the reference method 'lora'", "finetune, prompt, adapter"]),
    ],
)
def test_bad_reference_is_a_one_line_report_error(tmp_path, reference, needles):
    with pytest.raises(ReportError) as err:
        build(_runs(tmp_path), n_boot=200, reference=reference)
    msg = str(err.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, msg


def test_cli_reference(tmp_path):
    ft, pt = golden_runs(tmp_path)
    out = tmp_path / "rep"
    r = invoke("report", ft, pt, "--out", out, "--bootstrap", 100, "--gallery", 0, "--reference", "prompt")
    assert r.exit_code == 0, r.output
    assert "finetuning keeps 20.0 points less accuracy than prompt tuning" in r.stdout
    assert json.loads((out / "summary.json").read_text())["tests"]["reference"] == "prompt"
    bad = tmp_path / "bad"
    assert_one_line_error(
        invoke("report", ft, pt, "--out", bad, "--reference", "nope"), "unknown reference method 'nope'", "finetune"
    )
    assert_one_line_error(
        invoke("report", ft, pt, "--out", bad, "--reference", "lora"), "no run of the reference method 'lora'"
    )
    assert not bad.exists()  # refused before anything is written
