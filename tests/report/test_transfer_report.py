"""The report's transfer matrix (robust_pt/report/transfer.py): sources x targets from fixed runs, the
white-box diagonal, the heatmap, and the sanity check that transfer is never stronger than white-box."""

from __future__ import annotations

import json

import numpy as np

import robust_pt as rpt

from .helpers import write_run

N = 60
EPS = (4 / 255, 8 / 255)


def _matrix_runs(root, stronger_transfer: bool = False):
    """Targets finetune and prompt; sources base (pretrain), finetune and prompt: robust[(source, target)]."""
    rng = np.random.default_rng(0)
    clean = {"finetune": rng.random(N) < 0.9, "prompt": rng.random(N) < 0.85}
    keep = {("pretrain", "finetune"): 0.8, ("pretrain", "prompt"): 0.75, ("finetune", "finetune"): 0.4,
            ("prompt", "finetune"): 0.6, ("finetune", "prompt"): 0.55, ("prompt", "prompt"): 0.35}  # fmt: skip
    if stronger_transfer:
        keep[("pretrain", "prompt")] = 0.05
    made = {}
    u = {t: rng.random(N) for t in clean}
    for (src, tgt), k in keep.items():
        correct = {e: clean[tgt] & (u[tgt] < k * (1.0 if e == EPS[0] else 0.8)) for e in EPS}
        made[(src, tgt)] = correct
        write_run(root / f"{tgt}_pgd-from-{src}", f"{tgt}-vqa", correct, list(clean[tgt]),
                  model_cfg={"method": tgt}, surrogates=[src if src != "pretrain" else "base"])  # fmt: skip
    return made


def test_matrix_cells_diagonal_and_files(tmp_path):
    made = _matrix_runs(tmp_path / "runs")
    rep = rpt.report(sorted((tmp_path / "runs").iterdir()), out=tmp_path / "rep", n_boot=200)
    f = rep.transfer
    assert set(f["source"]) == {"pretrain", "finetune", "prompt"} and set(f["target"]) == {"finetune", "prompt"}
    for (src, tgt), correct in made.items():
        for e in EPS:
            row = f[(f["source"] == src) & (f["target"] == tgt) & np.isclose(f["eps"], e)].iloc[0]
            assert row["robust"] == np.mean(correct[e])
            assert row["robust_lo"] <= row["robust"] <= row["robust_hi"]
            assert row["white_box"] == np.mean(made[(tgt, tgt)][e])  # the diagonal: crafted on the target
    assert (tmp_path / "rep" / "transfer.csv").exists()
    assert "transfer" in json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert any(k[0] == "transfer" for k in rep.figures)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Transfer attacks" in md and "crafted on the public base" in md
    san = rep.sanity[rep.sanity["check"] == "transfer"]
    assert len(san) == 2 and (san["status"] == "pass").all()
    assert "pgd from pretrain" in set(rep.summary["attack"])


def test_transfer_stronger_than_white_box_fails_the_check(tmp_path):
    _matrix_runs(tmp_path / "runs", stronger_transfer=True)
    rep = rpt.report(sorted((tmp_path / "runs").iterdir()), n_boot=200, figures=False)
    san = rep.sanity.set_index(["check", "method"])
    assert san.loc[("transfer", "prompt"), "status"] == "fail"
    assert "pgd from pretrain" in san.loc[("transfer", "prompt"), "detail"]
    assert san.loc[("transfer", "finetune"), "status"] == "pass"


def test_reports_without_transfer_runs_have_no_transfer_parts(tmp_path):
    rng = np.random.default_rng(1)
    clean = rng.random(N) < 0.9
    write_run(tmp_path / "runs" / "ft", "ft-vqa", {e: clean & (rng.random(N) < 0.5) for e in EPS}, list(clean),
              model_cfg={"method": "finetune"})  # fmt: skip
    rep = rpt.report([tmp_path / "runs" / "ft"], out=tmp_path / "rep", n_boot=100, figures=False)
    assert rep.transfer is None and not (tmp_path / "rep" / "transfer.csv").exists()
    assert "transfer" not in json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert "transfer" not in set(rep.sanity["check"])


def test_a_transfer_report_opens_with_its_matrix(tmp_path):
    """The key figure of transfer runs is the transfer matrix, with what the public base's inputs do, right
    after the verdict; the per-source metric-vs-eps panels come later."""
    _matrix_runs(tmp_path / "runs")
    rpt.report(sorted((tmp_path / "runs").iterdir()), out=tmp_path / "rep", n_boot=200)
    md = (tmp_path / "rep" / "report.md").read_text()
    first = md.index("![")
    assert md[first:].startswith("![shapes-vqa: pgd transfer matrix](figures/transfer_shapes-vqa_pgd.png)")
    assert md.index("**Verdict.**") < md.index("crafted on the public base, the inputs leave") < first
    assert first < md.index("## Findings") < md.index("## Transfer attacks") < md.index("## Robust metric vs eps")
    assert md.count("transfer matrix](figures/") == 1  # shown once, at the top
