"""The sentences a report opens with, from the adjusted decisions."""

from __future__ import annotations

import pandas as pd

from robust_pt.report.verdict import verdict


def _gaps(rows):
    return pd.DataFrame(
        rows, columns=["task", "attack", "method", "gap", "significant", "rel_drop_gap", "rel_drop_significant"]
    )


SUMMARY = pd.DataFrame(
    [("vqa", "pgd", "image"), ("vqa", "emb-fgsm", "embedding"), ("ve", "pgd", "image")],
    columns=["task", "attack", "kind"],
)


def test_the_verdict_counts_adjusted_decisions_with_their_attack_families():
    g = _gaps(
        [
            ("vqa", "pgd", "prompt", -0.05, True, -0.03, True),
            ("vqa", "emb-fgsm", "prompt", -0.08, True, -0.01, False),
            ("ve", "pgd", "prompt", 0.04, False, 0.02, False),  # a CI off 0 would not count: not significant
            ("vqa", "pgd", "lora", 0.06, True, 0.04, True),
            ("ve", "pgd", "lora", -0.01, False, 0.0, False),
        ]
    )
    s = verdict(g, SUMMARY, "holm")
    assert 2 <= len(s) <= 4
    # the answer first (every attack here is white-box: no run declares surrogates), the method last
    assert s[0] == (
        "White-box and query attacks on the model itself: more robust than finetuning: LoRA in 1 of 2 cells "
        "(image 1); less robust: prompt tuning in 2 of 3 cells (embedding 1, image 1)."
    )
    assert "larger than finetuning's for prompt tuning in 1 cells" in s[1]
    assert "smaller than finetuning's for LoRA in 1 cells" in s[1]
    assert s[-1].startswith("5 comparisons against finetuning (2 methods, 2 tasks") and "Holm adjustment" in s[-1]


def test_nothing_significant_is_said_plainly():
    g = _gaps([("vqa", "pgd", "prompt", -0.05, False, -0.03, False)])
    s = verdict(g, SUMMARY, "none")
    assert s[0] == (
        "White-box and query attacks on the model itself: no tuning method is significantly more or less robust "
        "than finetuning (1 cells)."
    )
    assert s[1].endswith("no difference from finetuning is significant.")
    assert "without adjustment for multiplicity" in s[-1]
    assert verdict(g.iloc[:0], SUMMARY, "bh") == []


def _transfer_runs(root):
    """Targets finetune and prompt, 100 examples, PGD crafted on the public base, on finetuning and on
    prompt tuning. Crafted on finetuning, the inputs break finetuning far more (a white-box attack on it)
    than prompt tuning (a transfer attack); from the base both keep the same accuracy."""
    import numpy as np

    from .helpers import write_run

    n, e = 100, 8 / 255
    clean = [True] * n
    keep = {("base", "finetune"): 60, ("base", "prompt"): 60, ("finetune", "finetune"): 10,
            ("finetune", "prompt"): 60, ("prompt", "finetune"): 60, ("prompt", "prompt"): 10}  # fmt: skip
    for (src, tgt), k in keep.items():
        write_run(root / f"{tgt}_pgd-from-{src}", f"{tgt}-vqa", {e: list(np.arange(n) < k)}, clean,
                  model_cfg={"method": tgt}, surrogates=[src])  # fmt: skip
    write_run(
        root / "finetune_pgd", "finetune-vqa", {e: list(np.arange(n) < 20)}, clean, model_cfg={"method": "finetune"}
    )
    write_run(root / "prompt_pgd", "prompt-vqa", {e: list(np.arange(n) < 50)}, clean, model_cfg={"method": "prompt"})
    return sorted(root.iterdir())


def test_the_verdict_is_given_per_threat_and_never_counts_a_white_box_attack_on_the_reference(tmp_path):
    """Inputs crafted on finetuning and judged on prompt tuning are a white-box attack on finetuning against a
    transfer attack on prompt tuning: that cell says nothing about which is more robust, so it is left out."""
    import robust_pt as rpt

    rep = rpt.report(_transfer_runs(tmp_path / "runs"), out=tmp_path / "rep", n_boot=200, figures=False)
    g = rep.gaps.set_index("attack")
    assert g.loc["pgd from finetune", "significant"] and g.loc["pgd from finetune", "gap"] > 0  # the trap
    s = verdict(rep.gaps, rep.summary, rep.correction, rep.reference, rep.runs)
    assert s[0] == (
        "White-box and query attacks on the model itself: more robust than finetuning: prompt tuning in 1 of 1 "
        "cells (image 1); none significantly less robust."
    )
    assert (
        s[1]
        == "Transferred from the public base: no tuning method is significantly more or less robust than finetuning (1 cells)."
    )
    assert s[2].startswith("Left out: 2 cells where finetuning or the method compared with it was itself among")
    assert not any(x.startswith("Transferred from a tuned sibling") for x in s)  # no sibling of both here
    md = (tmp_path / "rep" / "report.md").read_text()
    assert md.startswith("# Robustness report: shapes-vqa\n\n**Verdict.** White-box and query attacks on the model")


def test_the_count_table_counts_each_threat_apart(tmp_path):
    import robust_pt as rpt

    rpt.report(_transfer_runs(tmp_path / "runs"), out=tmp_path / "rep", n_boot=200, figures=False)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| Task | Threat | Method | Cells | More robust | Less robust |" in md
    assert "| shapes-vqa | left out: white-box on one side only | prompt tuning | 2 | 1 | 1 | " in md
    assert "| shapes-vqa | transferred from the public base | prompt tuning | 1 | 0 | 0 | " in md
