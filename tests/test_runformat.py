"""robust_pt/runformat.py: one eps label, one "broken" rule, one set of per-run statistics,
used by the engine's run summary and the report's summary rows, which therefore agree."""

from __future__ import annotations

import hashlib
import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from robust_pt import runformat as rf

# the columns the engine's run summary and the report's summary rows both have
SHARED = [
    "task",
    "model",
    "attack",
    "kind",
    "norm",
    "eps",
    "eps_label",
    "n",
    "metric",
    "clean",
    "robust",
    "drop",
    "rel_drop",
    "success_rate",
    "mean_linf",
    "mean_l2",
]
TEXT_SHARED = ["mean_queries", "mean_words_changed"]


def test_runformat_imports_no_torch():
    import subprocess

    code = "import sys, robust_pt.runformat, robust_pt.store; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ----------------------------------------------------------------------------- eps labels


@pytest.mark.parametrize(
    "eps, unit, label",
    [
        (8 / 255, "pixel", "8/255"),
        (1 / 255, "pixel", "1/255"),
        (128 / 255, "pixel", "128/255"),
        (0.2, "pixel", "0.2"),  # as typed (the report once wrote 51/255)
        (0.25, "pixel", "0.25"),
        (1.0, "pixel", "1"),
        (0.001, "pixel", "0.001"),
        (0.0123, "pixel", "0.0123"),
        (8 / 255, "rms", "0.0313725"),
        (0.2, "rms", "0.2"),
        (0.05, "abs", "0.05"),
        (0.25, "words", "0.25"),
        (1 / 51, "words", "0.0196078"),
    ],
)
def test_one_eps_label(eps, unit, label):
    from robust_pt.engine import summary
    from robust_pt.report import load

    assert rf.eps_label(eps, unit) == label
    assert summary.eps_label is rf.eps_label and load.eps_label is rf.eps_label
    if unit == "pixel":
        assert rf.eps_label(eps) == label  # pixel is the default unit


def test_eps_unit_of_a_spec():
    assert rf.eps_unit({"kind": "embedding", "eps_unit": "abs"}) == "abs"
    assert rf.eps_unit({"kind": "image"}) == rf.eps_unit({}) == "pixel"
    assert rf.eps_unit({"kind": "joint"}) == "pixel" and rf.eps_unit({"kind": "text"}) == "words"
    assert rf.eps_unit({"kind": "embedding"}) == "rms"


def test_sample_names_parse_back():
    name = rf.sample_name(8 / 255, "shapes-vqa:test:0:17", True)
    assert name == "eps-8-255_shapes-vqa_test_0_17_broken.png"
    m = rf.SAMPLE_RE.match(name)
    assert m and m["eps"] == "8-255" and m["id"] == rf.safe_id("shapes-vqa:test:0:17") and m["status"] == "broken"
    assert rf.sample_name(0.2, "a/b", False) == "eps-0.2_a_b_robust.png"
    assert len(rf.safe_id("x" * 100)) == 60
    assert rf.slug("pgd[steps=50]") == "pgd-steps-50" and rf.slug("///") == "x"


# ----------------------------------------------------------------------------- broken


def test_broken_binary_same_for_engine_and_report_values():
    engine_style = pd.DataFrame(
        {"clean_correct": [True, True, False, False, True], "correct": [False, True, False, True, None]}
    )
    report_style = pd.DataFrame({"clean_correct": [1.0, 1.0, 0.0, 0.0, 1.0], "correct": [0.0, 1.0, 0.0, 1.0, math.nan]})
    want = [True, False, False, False, False]  # a record without a verdict is not broken
    for d in (engine_style, report_style):
        assert rf.broken_mask(d, binary=True).tolist() == want
        assert rf.could_break(d, binary=True).tolist() == [True, True, False, False, True]


def test_broken_graded_tolerance_zero():
    d = pd.DataFrame({"clean_score": [0.8, 0.8, 0.8, 0.0, 0.5], "score": [0.8, 0.8 - 1e-13, 0.5, 0.0, math.nan]})
    assert rf.broken_mask(d, binary=False).tolist() == [False, True, True, False, False]
    assert rf.could_break(d, binary=False).all()
    assert rf.broken_mask(d.iloc[:0], binary=False).tolist() == []


def test_binary_verdict_by_task_kind():
    """The verdict is the task kind's declaration (tasks/kinds.py), which run.json's declares block records."""
    from robust_pt.tasks import kinds

    assert kinds.get("closed").binary and kinds.get("ground").binary and not kinds.get("caption").binary


# ----------------------------------------------------------------------------- statistics on hand-made runs


def _caption_records() -> list[dict]:
    """4 captions at 2 eps: unchanged, a hair lower (broken), much lower (broken from eps1 on), clean 0."""
    clean = [0.8, 0.6, 0.9, 0.0]
    score = {2 / 255: [0.8, 0.6 - 1e-13, 0.4, 0.0], 8 / 255: [0.8, 0.3, 0.2, 0.0]}
    recs = []
    for e in (2 / 255, 8 / 255):
        for i in range(4):
            s = score[e][i]
            recs.append(
                {
                    "batch": 0,
                    "index": i,
                    "id": f"c{i}",
                    "eps": e,
                    "attacked": True,
                    "clean_correct": None,
                    "correct": None,
                    "clean_score": clean[i],
                    "score": s,
                    "clean_pred": f"a shape {i}",
                    "pred": f"a shape {i}" if s == clean[i] else "a thing",
                    "linf": e if s < clean[i] else 0.0,
                    "l2": 2 * e if s < clean[i] else 0.0,
                    "steps": 3 + i,
                    "queries": None,
                    "broken_at": None,
                    "early_stop": False,
                    "backend": "ours",
                }
            )
    return recs


def _text_records() -> list[dict]:
    """4 examples at word budgets 0.1, 0.25: clean-wrong (not attacked), broken at 0.1 (reused at 0.25),
    broken at 0.25 only, never broken."""
    rows = {  # (attacked, correct, words_changed, queries) at 0.1 and at 0.25
        0: [(False, False, 0, None), (False, False, 0, None)],
        1: [(True, False, 1, 20), (False, False, 1, None)],
        2: [(True, True, 2, 40), (True, False, 3, 60)],
        3: [(True, True, 2, 50), (True, True, 4, 80)],
    }
    recs = []
    for k, e in enumerate((0.1, 0.25)):
        for i in range(4):
            att, ok, w, q = rows[i][k]
            recs.append(
                {
                    "batch": 0,
                    "index": i,
                    "id": f"t{i}",
                    "eps": e,
                    "attacked": att,
                    "clean_correct": i > 0,
                    "correct": ok,
                    "clean_score": float(i > 0),
                    "score": float(ok),
                    "clean_pred": "yes",
                    "pred": "yes" if ok else "no",
                    "linf": 0.0,
                    "l2": 0.0,
                    "steps": 0,
                    "queries": q,
                    "broken_at": None,
                    "early_stop": False,
                    "backend": "textattack",
                    "adv_text": "words",
                    "words_changed": w,
                    "words_fraction": w / 8,
                    "max_words": 2,
                }
            )
    return recs


def test_eps_stats_caption_graded():
    df = pd.DataFrame(_caption_records())
    s1 = rf.eps_stats(df[rf.at_eps(df["eps"], 2 / 255)], binary=False)
    assert s1["n_broken"] == 2 and s1["success_rate"] == 2 / 4 and s1["n_attacked"] == 4
    assert s1["mean_linf"] == pytest.approx(2 / 255) and s1["mean_l2"] == pytest.approx(4 / 255)
    assert s1["mean_steps"] == pytest.approx(4.5)
    assert math.isnan(s1["mean_queries"]) and math.isnan(s1["mean_words_changed"])
    s2 = rf.eps_stats(df[rf.at_eps(df["eps"], 8 / 255)], binary=False)
    assert s2["n_broken"] == 2 and s2["success_rate"] == 0.5


def test_eps_stats_text_words_over_broken_queries_over_attacked():
    df = pd.DataFrame(_text_records())
    s1 = rf.eps_stats(df[rf.at_eps(df["eps"], 0.1)], binary=True)
    assert s1["n_broken"] == 1 and s1["success_rate"] == pytest.approx(1 / 3) and s1["n_attacked"] == 3
    assert s1["mean_words_changed"] == 1.0  # over broken examples (over all records it was 1.25)
    assert s1["mean_words_fraction"] == 1 / 8
    assert s1["mean_queries"] == pytest.approx(110 / 3)
    s2 = rf.eps_stats(df[rf.at_eps(df["eps"], 0.25)], binary=True)
    assert s2["n_broken"] == 2 and s2["success_rate"] == pytest.approx(2 / 3) and s2["n_attacked"] == 2
    assert s2["mean_words_changed"] == 2.0  # the reused eps-0.1 adversarial (1 word) and the new one (3)
    assert s2["mean_queries"] == 70.0


def test_eps_stats_without_the_optional_fields():
    d = pd.DataFrame(
        {"clean_correct": [1.0, 1.0], "correct": [0.0, 1.0], "clean_score": [1.0, 1.0], "score": [0.0, 1.0]}
    )
    s = rf.eps_stats(d, binary=True)
    assert s["success_rate"] == 0.5 and s["n_attacked"] == 2  # records that do not say: all attacked
    assert all(math.isnan(s[k]) for k in ("mean_linf", "mean_l2", "mean_queries", "mean_words_changed", "mean_steps"))


def _write_run(path: Path, records: list[dict], *, task: dict, spec: dict, eps: list[float], model: str) -> Path:
    path.mkdir(parents=True)
    config = {"model": {"name": model, "method": "prompt"}, "task": task, "attack": spec, "eps": eps, "seed": 0}
    meta = {
        "format": rf.FORMAT,
        "fingerprint": hashlib.sha256(json.dumps(config).encode()).hexdigest(),
        "config": config,
        "model_name": model,
        "status": "complete",
    }
    (path / rf.RUN_JSON).write_text(json.dumps(meta))
    lines = [json.dumps(r) for r in records] + [json.dumps({rf.MARKER: 0})]
    (path / rf.RECORDS).write_text("\n".join(lines) + "\n")
    return path


class _CaptionTask:
    name, kind, metric = "shapes-caption", "caption", "cider"

    def __getitem__(self, i):
        return types.SimpleNamespace(refs=[f"a shape {i}", "a shape"])


def _agree(engine_summary, report_rows, cols):
    assert len(engine_summary) == len(report_rows)
    for e_row, r_row in zip(engine_summary.to_dict(orient="records"), report_rows):
        for c in cols:
            a, b = e_row[c], r_row[c]
            if isinstance(a, str) or isinstance(b, str):
                assert a == b, c
            else:
                assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-12, abs=1e-15), c


@pytest.mark.parametrize("case", ["caption", "text"])
def test_engine_summary_and_report_rows_agree_on_hand_made_runs(case, tmp_path):
    from robust_pt.engine.summary import summarize
    from robust_pt.report.load import load_run
    from robust_pt.report.tables import summary_rows

    if case == "caption":
        recs, eps, task = _caption_records(), [2 / 255, 8 / 255], _CaptionTask()
        spec = {
            "name": "pgd",
            "kind": "image",
            "method": "pgd",
            "backend": "ours",
            "norm": "linf",
            "eps_unit": "pixel",
            "early_stop": False,
        }
    else:
        recs, eps = _text_records(), [0.1, 0.25]
        task = types.SimpleNamespace(name="shapes-vqa", kind="closed", metric="accuracy")
        spec = {
            "name": "pwws",
            "kind": "text",
            "method": "pwws",
            "backend": "textattack",
            "norm": "words",
            "eps_unit": "words",
            "early_stop": False,
        }
    attack = types.SimpleNamespace(spec=types.SimpleNamespace(**spec))
    frame = rf.records_frame(recs, "m", task.name, spec["name"])
    es = summarize(frame, model="m", task=task, attack=attack, eps=eps, seed=0, n=4)
    run = load_run(
        _write_run(tmp_path / "run", recs, task={"name": task.name, "kind": task.kind}, spec=spec, eps=eps, model="m")
    )
    _agree(es, summary_rows(run, B=20), SHARED + (TEXT_SHARED if case == "text" else []))
    if case == "text":
        assert list(es["mean_words_changed"]) == [1.0, 2.0] and list(es["mean_queries"]) == [110 / 3, 70.0]
        assert list(es["eps_label"]) == ["0.1", "0.25"]
    else:
        assert list(es["success_rate"]) == [0.5, 0.5] and list(es["eps_label"]) == ["2/255", "8/255"]


# ----------------------------------------------------------------------------- one real run


def test_engine_and_report_agree_on_a_real_run(tiny_vqa, vqa_task, tmp_path):
    import robust_pt
    from robust_pt.report import plots
    from robust_pt.report.load import load_run
    from robust_pt.report.tables import summary_rows

    out = tmp_path / "run"
    run = robust_pt.evaluate(
        tiny_vqa, vqa_task, attack="fgsm", eps=[2 / 255, 8 / 255], limit=24, samples=2, out=out, progress=False
    )
    es = run.summary
    assert list(es.columns[: len(rf.SUMMARY_COLUMNS)]) == rf.SUMMARY_COLUMNS
    assert pd.read_csv(out / rf.SUMMARY)["eps_label"].tolist() == ["2/255", "8/255"]
    rd = load_run(out)
    rows = summary_rows(rd, B=20)
    _agree(es, rows, SHARED)
    assert (es["n_broken"] > 0).any()  # the comparison covers broken examples
    # the report finds the engine's samples and matches each to its record
    found = plots.samples(rd, limit=10)
    assert found and all(s["clean_pred"] is not None for s in found)
    assert {s["eps_label"] for s in found} <= {"2/255", "8/255"}
    assert all(rf.SAMPLE_RE.match(p.name) for p in (out / rf.SAMPLES).glob("*.png"))
    assert np.isfinite(es["success_rate"]).all()
