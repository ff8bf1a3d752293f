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
    assert s[0].startswith("5 comparisons against finetuning (2 methods, 2 tasks") and "Holm adjustment" in s[0]
    assert s[1] == "More robust than finetuning: LoRA in 1 of 2 cells (image 1)."
    assert s[2] == "Less robust than finetuning: prompt tuning in 2 of 3 cells (embedding 1, image 1)."
    assert "larger than finetuning's for prompt tuning in 1 cells" in s[3]
    assert "smaller than finetuning's for LoRA in 1 cells" in s[3]


def test_nothing_significant_is_said_plainly():
    g = _gaps([("vqa", "pgd", "prompt", -0.05, False, -0.03, False)])
    s = verdict(g, SUMMARY, "none")
    assert "without adjustment for multiplicity" in s[0]
    assert s[1] == "No tuning method is significantly more robust than finetuning anywhere."
    assert s[2] == "No tuning method is significantly less robust than finetuning anywhere."
    assert s[3].endswith("no difference from finetuning is significant.")
    assert verdict(g.iloc[:0], SUMMARY, "bh") == []
