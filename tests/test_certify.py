"""Randomized smoothing (attacks/certify.py): CERTIFY's radius against the closed form of a linear
classifier, its verdicts in the engine (nested in the radius, abstentions not robust), batch
independence, agreement with IBM ART, and the refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.stats import norm
from torch import nn

import robust_pt as rpt
from robust_pt.attacks import build
from robust_pt.attacks.certify import certify, lower_confidence_bound, params, predict
from robust_pt.attacks.seeds import derive_seed
from robust_pt.errors import AttackError
from tests._cli import assert_one_line_error, invoke

SIGMA = 0.25
DISTANCES = [0.1, 0.2, 0.35, 0.5, 0.7]  # to the decision boundary, in L2 pixels


def _linear() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A 2-class linear classifier on 1x8x8 images whose boundary passes through the grey image, and images
    at DISTANCES from it on the class-0 side plus one on it (distance 1e-4), all in [0, 1]: its smoothed
    classifier's radius is exactly the distance."""
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 2)).eval()
    weight = torch.randn(2, 64, generator=g)
    w = weight[0] - weight[1]
    grey = torch.full((64,), 0.5)
    with torch.no_grad():
        net[1].weight.copy_(weight)
        net[1].bias.copy_(torch.tensor([float(-(w @ grey)), 0.0]))
    unit = w / w.norm()
    x = torch.stack([grey + d * unit for d in DISTANCES + [1e-4]]).view(-1, 1, 8, 8)
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    for p in net.parameters():
        p.requires_grad_(False)
    return net, x, torch.zeros(len(x), dtype=torch.long)


def _logits_of(net):
    return lambda xs, rows: net(xs)


def test_the_radius_of_a_linear_classifier_is_its_distance_to_the_boundary():
    """For a linear classifier, pA = Phi(d / sigma) and sigma Phi^-1(pA) = d. CERTIFY's radius must lie where
    the Clopper-Pearson bound puts it for counts within 4 standard deviations of n pA."""
    net, x, _ = _linear()
    p = params(build("smoothing", sigma=SIGMA, n=2000, n0=100).spec)
    certs = certify(_logits_of(net), x, [derive_seed(0, i) for i in range(len(x))], p)
    for d, c in zip(DISTANCES, certs):
        pa = norm.cdf(d / SIGMA)
        sd = np.sqrt(p.n * pa * (1 - pa))
        lo, hi = (
            lower_confidence_bound(int(k), p.n, p.alpha) for k in (p.n * pa - 4 * sd, min(p.n, p.n * pa + 4 * sd))
        )
        assert c.top == 0 and c.radius is not None, (d, c)
        assert SIGMA * norm.ppf(lo) <= c.radius <= SIGMA * norm.ppf(hi), (d, c.radius)
        assert c.radius < d + 1e-9 or c.radius <= SIGMA * norm.ppf(hi)  # a lower bound, up to alpha
    assert certs[-1].abstain and certs[-1].radius is None  # on the boundary pA is 1/2: it abstains
    radii = [c.radius for c in certs[:-1]]
    assert radii == sorted(radii)  # farther from the boundary, larger radius


def test_the_statistics_are_the_papers():
    from statsmodels.stats.proportion import proportion_confint

    for k, n in ((0, 10), (7, 10), (990, 1000), (1000, 1000)):
        expected = 0.0 if k == 0 else proportion_confint(k, n, alpha=2 * 0.001, method="beta")[0]
        assert lower_confidence_bound(k, n, 0.001) == pytest.approx(expected, abs=1e-12)
    assert predict(np.array([90, 5, 5]), 0.001) == 0
    assert predict(np.array([52, 48, 0]), 0.001) is None  # not separated: abstain


@pytest.fixture(scope="module")
def engine_run():
    net, x, y = _linear()
    kw = dict(attack="smoothing", eps=[0, 0.1, 0.2, 0.3, 0.6], sigma=SIGMA, n=500, n0=50, progress=False)
    return rpt.evaluate(net, (x, y), batch_size=4, **kw), (net, x, y, kw)


def test_certified_at_r_means_right_and_radius_at_least_r(engine_run):
    run, _ = engine_run
    r = run.records
    for _, row in r.iterrows():
        radius = row["certified_radius"]
        certified = bool(row["clean_correct"]) and radius is not None and not np.isnan(radius) and radius >= row["eps"]
        certified = certified and row["pred"] == row["clean_pred"]  # the smoothed top class is the label here
        assert bool(row["correct"]) == certified, row.to_dict()
    wide = r.pivot(index="index", columns="eps", values="correct")
    for _, verdicts in wide.iterrows():  # certified at r: certified at every smaller r
        v = verdicts.tolist()
        assert v == sorted(v, reverse=True), v
    assert 0 < r[r["eps"] == 0.3]["correct"].sum() < r[r["eps"] == 0]["correct"].sum()  # the radius matters


def test_an_abstention_is_not_robust(engine_run):
    run, _ = engine_run
    r = run.records
    on = r[(r["index"] == len(DISTANCES)) & (r["eps"] == 0)].iloc[0]
    assert bool(on["clean_correct"]) and bool(on["abstain"]) and not bool(on["correct"])


def test_the_same_seed_gives_the_same_records_at_any_batch(engine_run):
    run, (net, x, y, kw) = engine_run
    cols = ["index", "eps", "correct", "certified_radius", "top_count", "abstain", "pred"]
    for batch_size, noise_batch in ((1, 7), (16, 1000)):
        other = rpt.evaluate(net, (x, y), batch_size=batch_size, batch=noise_batch, **kw).records
        a = run.records[cols].sort_values(["index", "eps"]).reset_index(drop=True)
        b = other[cols].sort_values(["index", "eps"]).reset_index(drop=True)
        assert a.astype(str).equals(b.astype(str)), (batch_size, noise_batch)


def test_certificates_agree_with_ibm_art():
    """ART's RandomizedSmoothing (numpy noise) and ours (per-example torch noise) on the same classifier: the
    same prediction wherever either certifies with margin, radii within their Monte-Carlo spread."""
    from art.estimators.certification import randomized_smoothing as art  # make setup installs ART (test-only)

    net, x, _ = _linear()
    n = 2000
    np.random.seed(0)
    smoothed = art.PyTorchRandomizedSmoothing(
        model=net, loss=nn.CrossEntropyLoss(), input_shape=(1, 8, 8), nb_classes=2, sample_size=100, scale=SIGMA
    )
    art_pred, art_radius = smoothed.certify(x.numpy(), n=n, batch_size=500)
    p = params(build("smoothing", sigma=SIGMA, n=n, n0=100).spec)
    ours = certify(_logits_of(net), x, [derive_seed(1, i) for i in range(len(x))], p)
    for d, c, ap, ar in zip(DISTANCES, ours, art_pred, art_radius):
        pa = norm.cdf(d / SIGMA)
        spread = SIGMA * (norm.ppf(min(pa + 4 * np.sqrt(pa * (1 - pa) / n), 1 - 1e-9)) - norm.ppf(pa)) + 1e-3
        assert ap == c.top == 0
        assert abs(c.radius - ar) <= 2 * spread, (d, c.radius, ar)
    assert art_pred[-1] == -1 and ours[-1].abstain  # both abstain on the boundary


@pytest.mark.parametrize(
    "option, message",
    [
        (["--sigma", "0"], "sigma must be > 0"),
        (["--sigma", "-1"], "sigma must be > 0"),
        (["--set", "n=0"], "n must be a positive integer"),
        (["--set", "n0=0"], "n0 must be a positive integer"),
        (["--set", "alpha=1"], "alpha must lie in (0, 1)"),
        (["--set", "alpha=0"], "alpha must be > 0"),
        (["--eps", "-0.25"], "cannot be negative"),
    ],
)
def test_bad_smoothing_settings_are_one_line(option, message):
    r = invoke("attack", "--model", "builtin:base-small", "--attack", "smoothing", *option)
    assert_one_line_error(r, message)


@pytest.mark.parametrize("task", ["shapes-caption", "shapes-ground"])
def test_smoothing_refuses_generation_tasks(task):
    r = invoke("attack", "--model", "builtin:base-small", "--attack", "smoothing", "--task", task, "--limit", "2")
    assert_one_line_error(r, "randomized smoothing certifies a classifier over them")


def test_python_refusals():
    with pytest.raises(AttackError, match="L2"):
        build("smoothing", norm="linf")


def test_the_noise_batch_is_how_fast_not_what(engine_run, tmp_path):
    """`batch` (noisy copies per pass) is out of the run fingerprint: a run resumes under another one."""
    run, (net, x, y, kw) = engine_run

    def stop(b: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # killed after its first stored batch
        rpt.evaluate(net, (x, y), batch_size=4, out=tmp_path / "run", batch=400, on_batch=stop, **kw)
    again = rpt.evaluate(net, (x, y), batch_size=4, out=tmp_path / "run", batch=7, **kw)  # resumes, adds the rest
    assert again.stats["batches_run"] == 1 and len(again.records) == len(run.records)
    cols = ["index", "eps", "correct", "top_count"]
    a = run.records[cols].sort_values(["index", "eps"]).reset_index(drop=True)
    assert a.equals(again.records[cols].sort_values(["index", "eps"]).reset_index(drop=True))


def test_the_command_line_certifies_and_its_report_has_the_figure(tmp_path):
    run, rep = tmp_path / "run", tmp_path / "report"
    r = invoke("attack", "--model", "builtin:base-small", "--task", "shapes-vqa", "--attack", "smoothing",
               "--eps", "0,0.25,0.5", "--sigma", "0.25", "--set", "n=40", "--set", "n0=10", "--limit", "6",
               "--out", run)  # fmt: skip
    assert r.exit_code == 0, r.output
    records = [json.loads(line) for line in (run / "records.jsonl").read_text().splitlines() if '"eps"' in line]
    assert {rec["eps"] for rec in records} == {0.0, 0.25, 0.5}
    assert all(rec["samples"] == 40 for rec in records if rec["attacked"])
    r = invoke("report", str(run), "--out", rep, "--gallery", "0")
    assert r.exit_code == 0, r.output
    assert (rep / "figures" / "certified_shapes-vqa.png").exists() and (rep / "certified.csv").exists()
    assert "## Certified robustness" in (rep / "report.md").read_text()
