"""Training variants in reports: adversarially tuned models and models tuned from a robust base.

Why: a study tunes each method four ways (clean or adversarially, from the plain or the robust base).
Each of those is its own model: named with its variant, compared with the reference method's model of
the same variant (never a clean prompt against an adversarially tuned finetune), and, with the
reference "clean", compared with its clean partner. The variant is read from what run.json declares
(model_meta), never from a name; reports without any variant keep their outputs exactly.
"""

from __future__ import annotations

import json

import pytest

from robust_pt.report import ReportError, build
from robust_pt.report.load import load_run, load_runs
from robust_pt.report.tables import GAP_COLUMNS, SUMMARY_COLUMNS, VERDICT_COLUMNS, verdict_frame

from .._cli import invoke
from .helpers import E1, E4, FT, FT_CLEAN, PT, PT_CLEAN, golden_runs, right_except, write_run

#: tuning/adversarial.py's record of PGD-AT at 4/255, as a checkpoint's meta holds it
ADV = {
    "attack": "pgd",
    "eps": 4 / 255,
    "steps": 3,
    "step_size": 1 / 255,
    "loss": "ce",
    "beta": None,
    "ratio": 1.0,
    "kind": "image",
    "norm": "linf",
    "eps_unit": "pixel",
}
TRADES = {**ADV, "loss": "trades", "beta": 6.0}
EMB = {**ADV, "attack": "emb-pgd", "eps": 0.05, "kind": "embedding", "eps_unit": "rms"}
ROBUST = {"base_adversarial": ADV, "tuned_from": "builtin:base-small-robust"}

# adversarially tuned models break less than the clean ones (FT, PT of the golden runs)
FT_ADV = {E1: right_except({0, 1, 2}), E4: right_except({0, 1, 2, 3, 4, 5})}
PT_ADV = {E1: right_except({0, 1}), E4: right_except({0, 1, 2})}


def _study(root, *, robust_ft: bool = False) -> list:
    """Clean and adversarial finetuning and prompt tuning from the plain base, prompt tuning clean and
    adversarial from the robust base (finetuning from it only with `robust_ft`), the plain and robust bases."""
    runs = [
        write_run(root / "ft", "finetune-shapes-vqa", FT, FT_CLEAN),
        write_run(root / "pt", "prompt-shapes-vqa", PT, PT_CLEAN),
        write_run(root / "ft-adv", "finetune-adv-shapes-vqa", FT_ADV, FT_CLEAN, model_meta={"adversarial": ADV}),
        write_run(root / "pt-adv", "prompt-adv-shapes-vqa", PT_ADV, PT_CLEAN, model_meta={"adversarial": ADV}),
        write_run(root / "pt-rb", "prompt-rb-shapes-vqa", PT, PT_CLEAN, model_meta=ROBUST),
        write_run(
            root / "pt-rb-adv", "prompt-rbadv-shapes-vqa", PT_ADV, PT_CLEAN, model_meta={**ROBUST, "adversarial": ADV}
        ),
        write_run(root / "base", "base-small", FT, FT_CLEAN),
        write_run(root / "base-rob", "base-small-robust", FT_ADV, FT_CLEAN, model_meta={"adversarial": ADV}),
    ]
    if robust_ft:
        runs.append(write_run(root / "ft-rb", "finetune-rb-shapes-vqa", FT, FT_CLEAN, model_meta=ROBUST))
    return runs


def _robust(correct: dict, eps: float) -> float:
    return sum(correct[eps]) / len(correct[eps])


def _pairs(gaps) -> set:
    return set(zip(gaps["model"], gaps["reference"]))


def test_variant_labels_come_from_declared_meta(tmp_path):
    metas = {
        "plain": None,
        "adv": {"adversarial": ADV},
        "trades-rb": {"adversarial": TRADES, **ROBUST},
        "rb": ROBUST,
        "emb": {"adversarial": EMB},
        "none": {"adversarial": None, "base_adversarial": None, "tuned_from": "builtin:base-small"},
    }
    want = {
        "plain": "",
        "adv": "adversarial 4/255",
        "trades-rb": "TRADES 4/255, robust base",
        "rb": "robust base",
        "emb": "adversarial emb-pgd 0.05",
        "none": "",
    }
    for name, meta in metas.items():
        run = load_run(write_run(tmp_path / name, f"prompt-{name}", PT, PT_CLEAN, model_meta=meta))
        assert run.variant == want[name], name
    # a name that says adversarial and robust declares nothing: no variant
    named = load_run(write_run(tmp_path / "n", "prompt-adversarial-4-255-robust-base", PT, PT_CLEAN))
    assert named.variant == "" and named.adversarial == "" and not named.robust_base


def test_same_name_different_variants_are_told_apart(tmp_path):
    """`robust-pt train` names a checkpoint METHOD-TASK however it was trained: the variant joins the name."""
    a = write_run(tmp_path / "a", "prompt-shapes-vqa", PT, PT_CLEAN)
    b = write_run(
        tmp_path / "b",
        "prompt-shapes-vqa",
        PT_ADV,
        PT_CLEAN,
        model_cfg={"state_sha256": "1" * 64},
        model_meta={"adversarial": ADV},
    )
    models = [r.model for r in load_runs([a, b])]
    assert models == ["prompt-shapes-vqa", "prompt-shapes-vqa (adversarial 4/255)"]


def test_gaps_pair_runs_of_the_same_variant(tmp_path):
    rep = build(_study(tmp_path, robust_ft=True), n_boot=200)
    g = rep.gaps
    assert list(g.columns) == GAP_COLUMNS[:7] + ["variant"] + GAP_COLUMNS[7:]
    assert _pairs(g) == {
        ("prompt-shapes-vqa", "finetune-shapes-vqa"),
        ("base-small", "finetune-shapes-vqa"),
        ("prompt-adv-shapes-vqa", "finetune-adv-shapes-vqa"),
        ("base-small-robust", "finetune-adv-shapes-vqa"),
        ("prompt-rb-shapes-vqa", "finetune-rb-shapes-vqa"),
    }
    # a clean prompt is never compared with an adversarially tuned finetune, nor the other way round
    assert not g[(g["variant"] == "") & (g["reference"] == "finetune-adv-shapes-vqa")].shape[0]
    adv = g[g["model"] == "prompt-adv-shapes-vqa"].set_index("eps")
    for e in (E1, E4):
        assert adv.loc[e, "gap"] == pytest.approx(_robust(PT_ADV, e) - _robust(FT_ADV, e))
        assert adv.loc[e, "variant"] == "adversarial 4/255"
    text = " ".join(rep.findings)
    assert (
        "prompt tuning (adversarial 4/255) keeps 15.0 points more accuracy than finetuning (adversarial 4/255)" in text
    )
    assert "prompt tuning keeps 20.0 points more accuracy than finetuning (" in text  # the clean pair as always
    assert "the pretrained base (adversarial 4/255) keeps the same accuracy as finetuning (adversarial 4/255)" in text


def test_a_variant_without_its_reference_gets_a_note(tmp_path):
    rep = build(_study(tmp_path), n_boot=200)
    assert rep.notes == [
        "shapes-vqa, pgd: no finetuning (robust base) run, so no gap against finetuning (robust base) "
        "(attack a finetuned checkpoint (robust base) with the same attack to get one)",
        "shapes-vqa, pgd: no finetuning (adversarial 4/255, robust base) run, so no gap against finetuning "
        "(adversarial 4/255, robust base) (attack a finetuned checkpoint (adversarial 4/255, robust base) with the "
        "same attack to get one)",
    ]
    assert not rep.gaps["model"].isin(["prompt-rb-shapes-vqa", "prompt-rbadv-shapes-vqa"]).any()


def test_clean_reference_compares_each_adversarial_run_with_its_clean_partner(tmp_path):
    runs = _study(tmp_path)
    runs.append(
        write_run(tmp_path / "ad-adv", "adapter-adv-shapes-vqa", PT_ADV, PT_CLEAN, model_meta={"adversarial": ADV})
    )
    out = tmp_path / "rep"
    rep = build(runs, out, n_boot=200, figures=False, reference="clean")
    assert rep.reference == "clean"
    assert _pairs(rep.gaps) == {
        ("finetune-adv-shapes-vqa", "finetune-shapes-vqa"),
        ("prompt-adv-shapes-vqa", "prompt-shapes-vqa"),
        ("prompt-rbadv-shapes-vqa", "prompt-rb-shapes-vqa"),  # the same kind of base
        ("base-small-robust", "base-small"),
    }
    pt = rep.gaps[rep.gaps["model"] == "prompt-adv-shapes-vqa"].set_index("eps")
    assert pt.loc[E4, "gap"] == pytest.approx(_robust(PT_ADV, E4) - _robust(PT, E4))
    assert rep.notes == [
        "shapes-vqa, pgd: no Adapter run, so no gap of Adapter (adversarial 4/255) against its clean partner "
        "(attack the same method tuned without adversarial training from the same base with the same attack to "
        "get one)"
    ]
    text = " ".join(rep.findings)
    assert "prompt tuning (adversarial 4/255) keeps 25.0 points more accuracy than its clean partner" in text
    assert "than finetuning" not in text
    md = (out / "report.md").read_text()
    assert "Gaps against its clean partner" in md and "| vs its clean partner |" in md and "Clean partner robust" in md
    assert "comparisons against its clean partner" in md and "against finetuning" not in md
    tests = json.loads((out / "summary.json").read_text())["tests"]
    assert tests["reference"] == "clean" and tests["reference_name"] == "its clean partner"


def test_clean_reference_needs_an_adversarially_tuned_run(tmp_path):
    with pytest.raises(ReportError) as err:
        build(list(golden_runs(tmp_path)), n_boot=200, reference="clean")
    assert "no run in the report declares adversarial tuning" in str(err.value) and "\n" not in str(err.value)


def test_verdict_rows_split_by_variant(tmp_path):
    out = tmp_path / "rep"
    rep = build(_study(tmp_path, robust_ft=True), out, n_boot=200, figures=False)
    v = verdict_frame(rep.gaps)
    assert list(v.columns) == VERDICT_COLUMNS[:2] + ["variant"] + VERDICT_COLUMNS[2:]
    assert set(zip(v["method"], v["variant"])) == {
        ("prompt", ""),
        ("prompt", "adversarial 4/255"),
        ("prompt", "robust base"),
        ("pretrain", ""),
        ("pretrain", "adversarial 4/255"),
    }
    assert (v["cells"] == 2).all()
    md = (out / "report.md").read_text()
    assert "| shapes-vqa | prompt tuning (adversarial 4/255) | 2 |" in md
    assert "| shapes-vqa | the pretrained base (adversarial 4/255) | 2 |" in md
    assert "| prompt-rb-shapes-vqa | prompt tuning (robust base) |" in md  # the runs and result tables


def test_outputs_and_figures_name_the_variant(tmp_path):
    from robust_pt.report import plots

    out = tmp_path / "rep"
    rep = build(_study(tmp_path, robust_ft=True), out, n_boot=200, gallery=0)
    assert list(rep.summary.columns) == SUMMARY_COLUMNS[:3] + ["variant"] + SUMMARY_COLUMNS[3:]
    pts = rep.summary[rep.summary["method"] == "prompt"].drop_duplicates("model")
    assert list(pts["variant"]) == ["", "adversarial 4/255", "robust base", "adversarial 4/255, robust base"]
    assert "variant" in (out / "summary.csv").read_text().splitlines()[0].split(",")
    assert "variant" in (out / "gaps.csv").read_text().splitlines()[0].split(",")
    assert {r["variant"] for r in json.loads((out / "summary.json").read_text())["runs"]} >= {"", "robust base"}
    fig = plots.metric_vs_eps_figure(rep.summary, "shapes-vqa")
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
    assert {"Prompt tuning", "Prompt tuning (adversarial 4/255)", "The pretrained base (adversarial 4/255)"} <= set(
        lines
    )
    styles = {(ln.get_linestyle(), ln.get_marker()) for k, ln in lines.items() if k.startswith("Prompt tuning")}
    assert len(styles) == 4 and len({ln.get_color() for k, ln in lines.items() if k.startswith("Prompt")}) == 1
    tags = {b["model"]: b["variant"] for b in plots.degradation_layout(rep.summary, "pgd")["bars"]}
    assert tags["prompt-shapes-vqa"] == "clean" and tags["prompt-adv-shapes-vqa"] == "adversarial 4/255"
    assert "prompt tuning (adversarial 4/255)" in (out / "summary.tex").read_text()


def test_a_report_without_variants_has_no_variant_column(tmp_path):
    out = tmp_path / "rep"
    rep = build(list(golden_runs(tmp_path)), out, n_boot=200, figures=False)
    assert list(rep.summary.columns) == SUMMARY_COLUMNS and list(rep.gaps.columns) == GAP_COLUMNS
    assert list(verdict_frame(rep.gaps).columns) == VERDICT_COLUMNS
    for name in ("summary.csv", "gaps.csv"):
        assert "variant" not in (out / name).read_text().splitlines()[0].split(","), name
    assert all("variant" not in r for r in json.loads((out / "summary.json").read_text())["runs"])
    assert "(adversarial" not in (out / "report.md").read_text()


def test_cli_reference_clean(tmp_path):
    runs = _study(tmp_path / "runs")
    out = tmp_path / "rep"
    r = invoke("report", *runs, "--out", out, "--bootstrap", 100, "--gallery", 0, "--reference", "clean")
    assert r.exit_code == 0, r.output
    assert "prompt tuning (adversarial 4/255) keeps 25.0 points more accuracy than its clean partner" in r.stdout
    assert json.loads((out / "summary.json").read_text())["tests"]["reference"] == "clean"
    ft, pt = golden_runs(tmp_path / "plain")
    bad = invoke("report", ft, pt, "--out", tmp_path / "bad", "--reference", "clean")
    assert bad.exit_code == 2 and "no run in the report declares adversarial tuning" in bad.stderr


FOG = {"kind": "corruption", "method": "fog", "backend": "ours", "norm": "linf", "eps_unit": "severity", "steps": 1}


def test_corruption_error_is_against_the_reference_of_the_same_variant(tmp_path):
    """rCE of an adversarially tuned prompt is against adversarially tuned finetuning (never clean finetuning);
    the rCE figure draws both prompt variants in prompt tuning's colour, named apart."""
    sev = {1.0: right_except({0, 1, 2, 3}), 3.0: right_except(set(range(10)))}  # clean finetuning loses most
    sev_adv = {1.0: right_except({0, 1}), 3.0: right_except({0, 1, 2, 3})}
    sev_pt = {1.0: right_except({0, 1, 2}), 3.0: right_except({0, 1, 2, 3, 4})}
    adv = {"adversarial": ADV}
    runs = [
        write_run(tmp_path / "ft", "finetune-vqa", sev, FT_CLEAN, attack="fog", spec=FOG),
        write_run(tmp_path / "pt", "prompt-vqa", sev_pt, PT_CLEAN, attack="fog", spec=FOG),
        write_run(tmp_path / "ft-adv", "finetune-adv-vqa", sev_adv, FT_CLEAN, attack="fog", spec=FOG, model_meta=adv),
        write_run(tmp_path / "pt-adv", "prompt-adv-vqa", sev_pt, PT_CLEAN, attack="fog", spec=FOG, model_meta=adv),
    ]
    rep = build(runs, tmp_path / "rep", n_boot=200, gallery=0)
    c = rep.corruptions.set_index("model")
    assert list(rep.corruptions.columns[:4]) == ["task", "model", "method", "variant"]

    def lost(correct, clean):  # clean - mean over severities of the robust metric
        return sum(clean) / 20 - sum(sum(v) for v in correct.values()) / 40

    for model, ref in (("prompt-vqa", sev), ("prompt-adv-vqa", sev_adv)):
        want = lost(sev_pt, PT_CLEAN) / lost(ref, FT_CLEAN)
        assert c.loc[model, "rce"] == pytest.approx(want), model
    assert c.loc["prompt-adv-vqa", "variant"] == "adversarial 4/255"
    assert ("rce", "all") in rep.figures
