"""Prompt-factor panels: which prompt-tuned models form each panel, and the figure in the report."""

from __future__ import annotations

import json

import numpy as np

import robust_pt as rpt
from robust_pt.report.factors import panels, prompt_settings
from robust_pt.report.load import load_runs
from tests.report.helpers import write_run

N = 40
SETTINGS = {  # model -> (length, depth, reparam)
    "prompt-L4": (4, "both", False),
    "prompt-L8": (8, "both", False),
    "prompt-L16": (16, "both", False),
    "prompt-L32": (32, "both", False),
    "prompt-L16-enc": (16, "encoder", False),
    "prompt-L16-rep": (16, "both", True),
    "prompt-L8-enc": (8, "encoder", False),  # differs in two factors
}


def _runs(root):
    rng = np.random.default_rng(0)
    clean = [True] * N
    paths = [
        write_run(
            root / "finetune",
            "finetune-vqa",
            {2 / 255: rng.random(N) < 0.7, 8 / 255: rng.random(N) < 0.3},
            clean,
            model_cfg={"method": "finetune"},
        )
    ]
    for k, (name, (length, depth, reparam)) in enumerate(SETTINGS.items()):
        p = write_run(
            root / name,
            name,
            {2 / 255: rng.random(N) < 0.7, 8 / 255: rng.random(N) < 0.2 + 0.05 * k},
            clean,
            model_cfg={"method": "prompt"},
        )
        meta = json.loads((p / "run.json").read_text())
        meta["model_meta"] = {
            "method": "prompt",
            "tuning": {"method": "prompt", "prompt_length": length, "prompt_depth": depth, "prompt_reparam": reparam},
        }
        (p / "run.json").write_text(json.dumps(meta))
        paths.append(p)
    return paths


def test_each_panel_varies_one_factor_and_holds_the_others_at_the_reference(tmp_path):
    runs = load_runs(_runs(tmp_path))
    assert prompt_settings(next(r for r in runs if r.method == "finetune")) is None
    got = {p.factor: p for p in panels(runs)}
    assert set(got) == {"prompt_length", "prompt_depth", "prompt_reparam"}
    length = got["prompt_length"]
    assert length.values == [4, 8, 16, 32] and length.fixed == {"prompt_depth": "both", "prompt_reparam": False}
    assert length.models == ["prompt-L4", "prompt-L8", "prompt-L16", "prompt-L32"]
    assert got["prompt_depth"].values == ["encoder", "both"]  # L8-enc differs in length too: left out
    assert got["prompt_depth"].models == ["prompt-L16-enc", "prompt-L16"]
    assert got["prompt_reparam"].values == [False, True] and got["prompt_reparam"].fixed["prompt_length"] == 16


def test_report_draws_the_factor_figure_only_when_there_are_factors(tmp_path):
    paths = _runs(tmp_path / "runs")
    rep = rpt.report(paths, out=tmp_path / "rep", n_boot=200)
    fig = tmp_path / "rep" / rep.figures[("prompt_factors", "shapes-vqa")]
    assert fig.stat().st_size > 10_000
    assert "## Prompt-tuning factors" in (tmp_path / "rep" / "report.md").read_text()
    two = rpt.report(paths[:2], out=tmp_path / "rep2", n_boot=200)  # finetune + one prompt: nothing to vary
    assert not any(k[0] == "prompt_factors" for k in two.figures)
    assert "Prompt-tuning factors" not in (tmp_path / "rep2" / "report.md").read_text()
