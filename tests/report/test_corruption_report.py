"""The report's natural-corruption section (robust_pt/report/corruption.py): the metric over a
corruption's severities, the mean over corruptions, the relative corruption error against the
reference, computed by hand on fixed runs; corruption runs stay out of the gradient-masking checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

import robust_pt as rpt

from .helpers import write_run

FOG = {"kind": "corruption", "method": "fog", "backend": "ours", "norm": "linf", "eps_unit": "severity", "steps": 1}
NOISE = {**FOG, "method": "gaussian_noise"}
N = 40


def _runs(root):
    rng = np.random.default_rng(0)
    clean_ft = rng.random(N) < 0.9
    clean_pt = rng.random(N) < 0.8
    made = {}
    for name, spec, drop in (("fog", FOG, (0.1, 0.3, 0.5)), ("gaussian-noise", NOISE, (0.2, 0.4, 0.6))):
        for method, clean, extra in (("finetune", clean_ft, 0.0), ("prompt", clean_pt, 0.1)):
            correct = {float(s): clean & (rng.random(N) > d + extra) for s, d in zip((1, 3, 5), drop)}
            made[(name, method)] = (clean, correct)
            write_run(root / f"{method}-{name}", f"{method}-vqa", correct, list(clean), attack=name, spec=spec,
                      model_cfg={"method": method})  # fmt: skip
    pgd = {float(e): clean_ft & (rng.random(N) > d) for e, d in ((2 / 255, 0.2), (8 / 255, 0.5))}
    write_run(root / "finetune-pgd", "finetune-vqa", pgd, list(clean_ft), model_cfg={"method": "finetune"})
    return made


def test_the_corruption_table_is_computed_by_hand(tmp_path):
    made = _runs(tmp_path / "runs")
    rep = rpt.report(sorted((tmp_path / "runs").iterdir()), out=tmp_path / "rep", n_boot=300, figures=False)
    c = rep.corruptions.set_index(["model", "corruption"])
    hand = {}
    for (name, method), (clean, correct) in made.items():
        m = np.mean([np.mean(correct[s]) for s in (1.0, 3.0, 5.0)])
        hand[(method, name)] = (np.mean(clean), m)
        row = c.loc[(f"{method}-vqa", name)]
        assert row["severities"] == 3 and row["n"] == N and row["kind"] == "image"
        assert row["clean"] == pytest.approx(np.mean(clean)) and row["corrupted"] == pytest.approx(m)
        assert row["corrupted_lo"] <= row["corrupted"] <= row["corrupted_hi"]
    for name in ("fog", "gaussian-noise"):
        (cf, mf), (cp, mp) = hand[("finetune", name)], hand[("prompt", name)]
        row = c.loc[("prompt-vqa", name)]
        assert row["rce"] == pytest.approx((cp - mp) / (cf - mf)) and row["rce_lo"] <= row["rce"] <= row["rce_hi"]
        assert row["reference"] == "finetune" and np.isnan(c.loc[("finetune-vqa", name)]["rce"])
    mean = c.loc[("prompt-vqa", "mean")]
    assert mean["corrupted"] == pytest.approx((hand[("prompt", "fog")][1] + hand[("prompt", "gaussian-noise")][1]) / 2)
    rces = [(hand[("prompt", n)][0] - hand[("prompt", n)][1]) / (hand[("finetune", n)][0] - hand[("finetune", n)][1])
            for n in ("fog", "gaussian-noise")]  # fmt: skip
    assert mean["rce"] == pytest.approx(np.mean(rces)) and mean["rce"] > 1  # prompt loses more, by construction
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Natural corruptions" in md and "rCE vs finetuning" in md
    assert (tmp_path / "rep" / "corruptions.csv").exists()
    assert json.loads((tmp_path / "rep" / "summary.json").read_text())["corruptions"]
    assert len(rep.sanity) and (rep.sanity["model"] == "finetune-vqa").all()  # the PGD run's checks only
    assert not any("fog" in str(d) or "gaussian" in str(d) for d in rep.sanity["detail"])  # corruptions: not attacks


def test_a_report_without_corruption_runs_has_no_corruption_section(tmp_path):
    rng = np.random.default_rng(1)
    clean = list(rng.random(20) < 0.8)
    run = write_run(tmp_path / "pgd", "finetune-vqa", {2 / 255: np.array(clean) & (rng.random(20) < 0.7)}, clean)
    rep = rpt.report([run], out=tmp_path / "rep", n_boot=100, figures=False)
    assert not len(rep.corruptions) and "corruptions" not in json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert "Natural corruptions" not in (tmp_path / "rep" / "report.md").read_text()


def test_a_corruption_report_opens_with_the_relative_corruption_error(tmp_path):
    """The key figure of corruptions is rCE (after the verdict); the metric-vs-severity plots come later.
    Sizes that do not apply are "-": a text corruption changes no pixel, an image one does."""
    _runs(tmp_path / "runs")
    text = {"kind": "text-corruption", "method": "keyboard", "backend": "ours", "norm": "linf", "eps_unit": "severity"}
    write_run(tmp_path / "runs" / "finetune-keyboard", "finetune-vqa", {1.0: [True, False] * 10}, [True] * 20,
              attack="keyboard", spec=text, model_cfg={"method": "finetune"},
              extra={"linf": 0.0, "l2": 0.0})  # fmt: skip
    rep = rpt.report(sorted((tmp_path / "runs").iterdir()), out=tmp_path / "rep", n_boot=200)
    assert ("rce", "all") in rep.figures and (tmp_path / "rep" / rep.figures[("rce", "all")]).exists()
    md = (tmp_path / "rep" / "report.md").read_text()
    first = md.index("![")
    assert md[first:].startswith("![relative corruption error](figures/rce.png)")
    assert md.index("**Verdict.**") < first < md.index("## Findings") < md.index("## Robust metric vs eps")
    rows = [ln for ln in md.splitlines() if ln.startswith("| finetune-vqa |")]
    keyboard = next(ln for ln in rows if "| keyboard |" in ln)
    fog = next(ln for ln in rows if "| fog |" in ln and "%" in ln)
    cells = lambda line: [c.strip() for c in line.strip("|").split("|")]  # noqa: E731
    assert cells(keyboard)[6:8] == ["-", "-"]  # Mean L-inf, Mean L2 of a text corruption: no pixel changed
    assert "-" not in cells(fog)[6:8]
