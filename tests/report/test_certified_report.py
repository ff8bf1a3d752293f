"""The report's certified-robustness section (report/certified.py): the average certified radius, the
abstention rate and the certified accuracy at radius 0 per certification run, computed from its records,
with the certified-accuracy-vs-radius figure and certified.csv."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import robust_pt as rpt
from tests.test_certify import SIGMA, _linear


@pytest.fixture(scope="module")
def certified_report(tmp_path_factory):
    net, x, y = _linear()
    tmp = tmp_path_factory.mktemp("cert")
    kw = dict(attack="smoothing", eps=[0, 0.1, 0.2, 0.3, 0.6], sigma=SIGMA, n=500, n0=50, progress=False)
    run = rpt.evaluate(net, (x, y), out=tmp / "run", **kw)
    rep = rpt.report([tmp / "run"], out=tmp / "report", gallery=0)
    return run, rep, tmp / "report"


def test_the_average_certified_radius_and_abstentions_come_from_the_records(certified_report):
    run, rep, _ = certified_report
    r = run.records[run.records["eps"] == 0].set_index("id")
    right = r["clean_correct"].astype(bool) & r["top_correct"].astype(bool) & ~r["abstain"].astype(bool)
    radius = np.where(right, r["certified_radius"].astype(float).fillna(0.0), 0.0)
    row = rep.certified.iloc[0]
    assert row["acr"] == pytest.approx(radius.mean()) and row["acr_lo"] <= row["acr"] <= row["acr_hi"]
    assert 0 < row["acr"] < 0.7
    assert row["abstain"] == pytest.approx(1 / 6)  # the example on the boundary, of 6 right on the clean image
    assert row["certified_at_0"] == pytest.approx(float(r["correct"].mean()))
    assert row["sigma"] == SIGMA and row["samples"] == 500
    assert row["max_radius"] == pytest.approx(SIGMA * 2.2047, abs=1e-3)  # sigma Phi^-1(0.001^(1/500))
    assert run.records["certified_radius"].max() <= row["max_radius"]


def test_the_report_shows_the_section_the_figure_and_the_csv(certified_report):
    _, rep, out = certified_report
    md = (out / "report.md").read_text()
    assert "## Certified robustness" in md and "ACR [95% CI]" in md
    assert ("certified", rep.certified.iloc[0]["task"]) in rep.figures
    assert (out / rep.figures[("certified", rep.certified.iloc[0]["task"])]).exists()
    csv = pd.read_csv(out / "certified.csv")
    assert list(csv["acr"].round(6)) == list(rep.certified["acr"].round(6))
    assert "certified" in __import__("json").loads((out / "summary.json").read_text())


def test_reports_without_certification_are_unchanged(tmp_path):
    from robust_pt.report.certified import certified_frame

    assert certified_frame([], 10, 0).empty
