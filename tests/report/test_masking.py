"""The sanity checks fire on a model that masks its gradients, attacked by the real engine.

The classifier reads the mean of the red channel; in front of it, x -> round(4x) / 4 (torch.round,
no straight-through estimator) makes every input gradient zero. Gradient attacks (FGSM, PGD) then
cannot move it even at eps = 0.5, while the score-based black-box Square attack can: the
huge-eps and black-box checks must say `fail`. Without the quantisation the same checks pass.
"""

from __future__ import annotations

import torch

import robust_pt as rpt

torch.set_num_threads(1)


class Quantise(torch.nn.Module):
    def forward(self, x):
        return torch.round(x * 4) / 4


def red_mean_classifier(masked: bool) -> torch.nn.Module:
    lin = torch.nn.Linear(3 * 8 * 8, 2)
    with torch.no_grad():
        w = torch.zeros(2, 3, 8, 8)
        w[0, 0], w[1, 0] = 8 / 64, -8 / 64  # logit 0 = 8 * mean(red) - 4
        lin.weight.copy_(w.reshape(2, -1))
        lin.bias.copy_(torch.tensor([-4.0, 4.0]))
    layers = ([Quantise()] if masked else []) + [torch.nn.Flatten(), lin]
    model = torch.nn.Sequential(*layers).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def data(n: int = 40):
    g = torch.Generator().manual_seed(0)
    levels = torch.where(torch.rand(n, generator=g) < 0.5, 0.25, 0.75)
    x = (torch.rand(n, 3, 8, 8, generator=g) * 0.2 - 0.1 + levels.view(-1, 1, 1, 1)).clamp(0, 1)
    y = (levels < 0.5).long()  # dark red -> class 1
    return x, y


def attack_all(model, root):
    x, y = data()
    runs = []
    for name, kw in (("fgsm", {}), ("pgd", {}), ("square", {"queries": 100})):
        run = rpt.evaluate(
            model, (x, y), attack=name, eps=[8 / 255, 0.5], seed=0, out=root / name, progress=False, samples=0, **kw
        )
        assert run.summary["clean"].iloc[0] == 1.0
        runs.append(root / name)
    return rpt.report(runs, n_boot=500)


def status(rep, check):
    s = rep.sanity
    return s[s["check"] == check].iloc[0]


def test_masked_gradients_fail_the_sanity_checks(tmp_path):
    rep = attack_all(red_mean_classifier(masked=True), tmp_path)
    huge = status(rep, "huge-eps")
    assert huge["status"] == "fail", huge["detail"]
    assert "fgsm eps=0.5: relative drop 0.0%" in huge["detail"]
    bb = status(rep, "black-box")
    assert bb["status"] == "fail" and "square stronger" in bb["detail"], bb["detail"]
    assert status(rep, "monotone")["status"] == "pass"
    assert status(rep, "more-steps")["status"] == "not checked"


def test_the_same_model_without_masking_passes(tmp_path):
    rep = attack_all(red_mean_classifier(masked=False), tmp_path)
    for check in ("huge-eps", "black-box", "fgsm-vs-pgd", "monotone"):
        row = status(rep, check)
        assert row["status"] == "pass", (check, row["detail"])


def test_huge_eps_leaves_out_answers_the_text_decides(tmp_path):
    """At a huge eps every example survives whose answer the text alone fixes (ShapesWorld VE's
    "maybe" statements): counting them would call a sound attack gradient masking."""
    from tests.report.helpers import write_run

    n, text_decided = 40, set(range(0, 40, 3))  # 14 examples
    clean = [True] * n
    correct = {8 / 255: [i % 2 == 0 for i in range(n)], 0.5: [i in text_decided for i in range(n)]}
    flag = {"image_decides": lambda i, e: i not in text_decided}
    plain = write_run(tmp_path / "plain", "m", correct, clean)
    flagged = write_run(tmp_path / "flagged", "m", correct, clean, extra=flag)
    assert status(rpt.report([plain], n_boot=300), "huge-eps")["status"] == "fail"
    row = status(rpt.report([flagged], n_boot=300), "huge-eps")
    assert row["status"] == "pass", row["detail"]
    assert "relative drop 100.0%" in row["detail"] and "14 decided by the text alone left out" in row["detail"]


def test_shapes_ve_marks_its_maybe_statements_text_decided():
    task = rpt.load_task("shapes-ve", split="test", limit=60, seed=0, size=48)
    flags = {(ex.target, ex.image_decides) for ex in task}
    assert flags == {("yes", True), ("no", True), ("maybe", False)}
