"""SGA (attacks/sga.py): the rescaled views, the set-level loss, and both presets on the committed base."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import robust_pt as rpt
from robust_pt.attacks.sga import SCALES, SetGuided, rescale


def test_rescale_keeps_the_size_zooms_out_with_padding_and_in_with_a_crop():
    x = torch.rand(2, 3, 48, 48)
    assert torch.equal(rescale(x, 1.0), x)
    for s in SCALES:
        assert rescale(x, s).shape == x.shape
    out = rescale(x, 0.5)
    assert out[..., :12, :].abs().max() == 0 and out[..., 12:36, 12:36].abs().max() > 0  # a frame of padding
    flat = torch.full((1, 3, 48, 48), 0.3)
    assert torch.allclose(rescale(flat, 1.5), flat)  # a zoom-in of a flat image is the same flat image


class _Quadratic:
    labels = None

    def __init__(self, w):
        self.w = w

    def loss(self, xs, rows):
        return (xs[0] * self.w).flatten(1).sum(1) ** 2, None

    def logits(self, xs, rows):
        return None


def test_the_set_loss_is_the_mean_over_texts_and_scales():
    x = torch.rand(3, 3, 16, 16)
    a, b = _Quadratic(1.0), _Quadratic(-0.5)
    rows = torch.arange(3)
    assert torch.equal(SetGuided([a], scales=(1.0,)).loss([x], rows)[0], a.loss([x], rows)[0])
    hand = sum(p.loss([rescale(x, s)], rows)[0] for s in SCALES for p in (a, b)) / (2 * len(SCALES))
    assert torch.allclose(SetGuided([a, b]).loss([x], rows)[0], hand)


@pytest.mark.parametrize("task", ["shapes-vqa", "shapes-caption"])
def test_sga_image_stays_in_the_ball_and_changes_predictions(task):
    run = rpt.evaluate("builtin:base-small", task, "sga-image", eps=[8 / 255], limit=16, progress=False)
    r = run.records
    assert (r["linf"] <= 8 / 255 + 1e-6).all()
    s = run.summary.iloc[0]
    assert s["robust"] < s["clean"] - (0.2 if task == "shapes-vqa" else 0.5)


def test_sga_joint_rewrites_the_question_within_budget_and_breaks_examples():
    joint = rpt.evaluate("builtin:base-small", "shapes-vqa", "sga", eps=[4 / 255], limit=16, progress=False)
    r = joint.records[joint.records["attacked"]]
    assert r["adv_text"].notna().all() and (r["words_fraction"] <= 0.25 + 1e-9).all()
    assert (r["linf"] <= 4 / 255 + 1e-6).all()
    s = joint.summary.iloc[0]
    assert s["robust"] < s["clean"] - 0.2 and np.isfinite(s["success_rate"])
