"""Golden tests on fixed records: the tables, CIs, McNemar p-values and findings of a report."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from robust_pt.report import build
from robust_pt.report.tables import finding

from .helpers import E1, E4, FT, FT_CLEAN, PT, PT_CLEAN, golden_runs
from .test_stats import direct_ci, direct_reps

B = 1000


@pytest.fixture(scope="module")
def rep(tmp_path_factory):
    root = tmp_path_factory.mktemp("golden")
    ft, pt = golden_runs(root)
    return build([ft, pt], root / "report", n_boot=B, seed=0, figures=False)


def row(rep, model, eps):
    s = rep.summary
    r = s[(s["model"] == model) & np.isclose(s["eps"], eps)]
    assert len(r) == 1
    return r.iloc[0]


def test_summary_table_values(rep):
    s = rep.summary
    assert list(s["method"]) == ["finetune", "finetune", "prompt", "prompt"]  # finetuning first
    expected = {  # model, eps: clean, robust, success rate
        ("finetune-shapes-vqa", E1): (0.9, 0.7, 4 / 18),
        ("finetune-shapes-vqa", E4): (0.9, 0.4, 10 / 18),
        ("prompt-shapes-vqa", E1): (0.95, 0.85, 2 / 19),
        ("prompt-shapes-vqa", E4): (0.95, 0.6, 7 / 19),
    }
    for (model, eps), (clean, robust, sr) in expected.items():
        r = row(rep, model, eps)
        assert r["n"] == 20 and r["metric"] == "accuracy" and r["attack"] == "pgd" and r["task"] == "shapes-vqa"
        assert r["clean"] == pytest.approx(clean) and r["robust"] == pytest.approx(robust)
        assert r["drop"] == pytest.approx(clean - robust)
        assert r["rel_drop"] == pytest.approx((clean - robust) / clean)
        assert r["success_rate"] == pytest.approx(sr)
    assert row(rep, "finetune-shapes-vqa", E4)["eps_label"] == "4/255"


def test_robust_cis_match_direct_bootstrap(rep):
    for model, clean, corr in (("finetune-shapes-vqa", FT_CLEAN, FT), ("prompt-shapes-vqa", PT_CLEAN, PT)):
        c = np.array(clean, float)
        for eps in (E1, E4):
            s = np.array(corr[eps], float)
            r = row(rep, model, eps)
            assert (r["robust_lo"], r["robust_hi"]) == pytest.approx(
                direct_ci([c, s], lambda c, s: s.mean(), B, 0), abs=1e-12
            )
            assert (r["rel_drop_lo"], r["rel_drop_hi"]) == pytest.approx(
                direct_ci([c, s], lambda c, s: 1 - s.mean() / c.mean(), B, 0), abs=1e-12
            )
            assert r["robust_lo"] <= r["robust"] <= r["robust_hi"]


def test_gap_table_cis_and_mcnemar(rep):
    g = rep.gaps
    assert len(g) == 2
    assert set(g["method"]) == {"prompt"} and set(g["reference"]) == {"finetune-shapes-vqa"}
    for eps, b, c in ((E1, 3, 0), (E4, 5, 1)):
        r = g[np.isclose(g["eps"], eps)].iloc[0]
        a, f = np.array(PT[eps], float), np.array(FT[eps], float)
        ac, fc = np.array(PT_CLEAN, float), np.array(FT_CLEAN, float)
        assert r["gap"] == pytest.approx(a.mean() - f.mean())
        # the interval McNemar's exact test inverts: Clopper-Pearson on b of the b + c discordant pairs,
        # on the gap's scale (b + c) / n * (2 pi - 1)
        m, n = b + c, len(a)
        plo = 0.0 if b == 0 else sps.beta.ppf(0.025, b, m - b + 1)
        phi = 1.0 if b == m else sps.beta.ppf(0.975, b + 1, m - b)
        assert (r["gap_lo"], r["gap_hi"]) == pytest.approx((m / n * (2 * plo - 1), m / n * (2 * phi - 1)), abs=1e-12)
        assert (r["gap_lo"] > 0 or r["gap_hi"] < 0) == (r["p"] < 0.05)
        # relative drop: estimate -/+ 1.96 x the standard deviation of the textbook paired bootstrap
        rel = (1 - f.mean() / fc.mean()) - (1 - a.mean() / ac.mean())
        se = np.std(
            direct_reps(
                [a, f, ac, fc], lambda x, y, xc, yc: (1 - y.mean() / yc.mean()) - (1 - x.mean() / xc.mean()), B, 0
            ),
            ddof=1,
        )
        assert (r["rel_drop_gap_lo"], r["rel_drop_gap_hi"]) == pytest.approx(
            (rel - 1.96 * se, rel + 1.96 * se), abs=1e-3 * se
        )
        assert r["rel_drop_p"] == pytest.approx(2 * sps.norm.sf(abs(rel) / se), rel=1e-6)
        assert (r["b"], r["c"], r["test"]) == (b, c, "mcnemar")
        assert r["p"] == pytest.approx(sps.binomtest(b, b + c, 0.5).pvalue)
    assert g[np.isclose(g["eps"], E4)].iloc[0]["p"] == pytest.approx(14 / 64)


def test_findings_one_sentence_per_comparison_whichever_way(rep):
    assert len(rep.findings) == 2
    g = rep.gaps[np.isclose(rep.gaps["eps"], E4)].iloc[0]
    f = rep.findings[1]
    assert f.startswith(
        "shapes-vqa, pgd eps=4/255: prompt tuning keeps 20.0 points more accuracy than finetuning "
        f"(95% CI {100 * g['gap_lo']:.1f} to {100 * g['gap_hi']:.1f}; McNemar p = 0.22, adjusted "
        f"p = 0.25, not significant)"
    )
    assert g["p_adj"] == pytest.approx(min(2 * g["p"], sps.binomtest(3, 3, 0.5).pvalue))  # BH over the 2 gaps
    assert f.count(".") >= 1 and f.endswith(".")
    # the other way round: a negative gap is said as "less", with the CI of the stated difference
    neg = dict(g, gap=-0.123, gap_lo=-0.16, gap_hi=-0.081, p=0.0004, p_adj=0.003, significant=True)
    assert (
        "prompt tuning keeps 12.3 points less accuracy than finetuning (95% CI 8.1 to 16.0; McNemar p < 0.001, "
        "adjusted p = 0.003, significant)" in finding(neg)
    )


def test_files_and_formats(rep):
    out = rep.out
    for name in ("report.md", "report.html", "summary.csv", "summary.tex", "summary.json", "gaps.csv"):
        assert (out / name).stat().st_size > 0, name
    csv = pd.read_csv(out / "summary.csv")
    assert len(csv) == 4 and {"clean", "robust", "robust_lo", "robust_hi", "drop", "rel_drop"} <= set(csv.columns)
    np.testing.assert_allclose(csv["robust"], rep.summary["robust"])
    js = json.loads((out / "summary.json").read_text())
    assert js["schema_version"] == 1 and js["kind"] == "robust-pt-report"
    assert len(js["rows"]) == 4 and len(js["gaps"]) == 2 and len(js["findings"]) == 2
    assert {s["check"] for s in js["sanity"]} == {"monotone", "huge-eps", "more-steps", "black-box", "fgsm-vs-pgd"}
    md = (out / "report.md").read_text()
    # the wide table: rows model / method, clean, then per eps robust [CI] and drop (relative drop)
    assert "| Model | Method | Clean accuracy | eps=1/255 robust [95% CI] | eps=1/255 drop (rel.) |" in md
    r = row(rep, "finetune-shapes-vqa", E4)
    assert (
        "| finetune-shapes-vqa | finetuning | 90.0 | 70.0 [" in md
        and f"| 40.0 [{100 * r['robust_lo']:.1f}, {100 * r['robust_hi']:.1f}] | 50.0 (55.6%) |" in md
    )
    assert "## Findings" in md and "Gaps against finetuning" in md and "Sanity checks" in md
    verdict = "| Task | Method | Cells | More robust | Less robust | Rel. drop smaller | Rel. drop larger |"
    assert md.index(verdict) < md.index("## shapes-vqa")  # the count table opens the findings
    assert "| shapes-vqa | prompt tuning | 2 |" in md
    tex = (out / "summary.tex").read_text()
    assert tex.count(r"\toprule") == 2 and r"\midrule" in tex and r"\bottomrule" in tex
    assert r"95\% CI" in tex and "finetune-shapes-vqa & finetuning & 90.0 & 70.0" in tex
    assert not re.search(r"(?<!\\)%", tex.split("\n", 1)[1])  # every % escaped past the comment line


def test_sanity_table_in_every_report(rep):
    s = rep.sanity
    assert len(s) == 10  # 5 checks x 2 models
    assert set(s["status"]) <= {"pass", "fail", "not checked"}
    mono = s[s["check"] == "monotone"]
    assert set(mono["status"]) == {"pass"}
    nc = s[s["status"] == "not checked"]
    assert all(len(d) > 10 for d in nc["detail"])  # each says why


def test_non_binary_scores_use_means_and_the_sign_test(tmp_path):
    """Captioning records (the engine writes correct=None and per-example CIDEr scores)."""
    import json as _json

    from .helpers import write_run

    def caption_run(name, clean, adv):
        d = write_run(tmp_path / name, f"{name}-shapes-caption", {E4: [True] * 6}, [True] * 6, task="shapes-caption")
        recs = []
        for line in (d / "records.jsonl").read_text().splitlines():
            r = _json.loads(line)
            if "batch_done" not in r:
                i = int(r["index"])
                r.update(correct=None, clean_correct=None, score=adv[i], clean_score=clean[i])
            recs.append(_json.dumps(r))
        (d / "records.jsonl").write_text("\n".join(recs) + "\n")
        meta = _json.loads((d / "run.json").read_text())
        meta["config"]["task"]["kind"] = "caption"
        meta["summary"] = [{"metric": "cider"}]
        (d / "run.json").write_text(_json.dumps(meta))
        return d

    ft = caption_run("finetune", [1.2, 0.9, 1.0, 0.8, 1.1, 0.7], [0.3, 0.2, 0.5, 0.1, 0.6, 0.2])
    pt = caption_run("prompt", [1.0, 1.0, 0.9, 0.8, 1.0, 0.6], [0.6, 0.2, 0.7, 0.4, 0.5, 0.3])
    rep = build([ft, pt], None, n_boot=300)
    r = rep.summary[rep.summary["method"] == "prompt"].iloc[0]
    assert r["metric"] == "cider" and r["robust"] == pytest.approx(2.7 / 6) and r["clean"] == pytest.approx(5.3 / 6)
    assert r["success_rate"] == pytest.approx(1.0)
    g = rep.gaps.iloc[0]
    assert g["test"] == "bootstrap" and (g["b"], g["c"]) == (4, 1)  # examples scored higher / lower; a tie
    # the test is the one the bootstrap interval inverts: they agree on significance
    assert (g["gap_lo"] > 0 or g["gap_hi"] < 0) == (g["p"] < 0.05)
    assert g["p_adj"] == g["p"]  # one comparison: nothing to adjust
    assert "bootstrap test" in rep.findings[0] and "more CIDEr than finetuning" in rep.findings[0]


def test_verdict_counts_the_significant_cells_per_task_and_over_all_tasks():
    import pandas as pd

    from robust_pt.report.tables import verdict_frame

    rows = [  # task, method, gap, significant, rel_drop_gap, rel_drop_significant
        ("vqa", "prompt", 0.03, True, 0.005, False),  # more robust; relative drop not significant
        ("vqa", "prompt", -0.03, True, -0.02, True),  # less robust; relative drop larger
        ("vqa", "prompt", 0.00, False, 0.02, True),  # within noise; relative drop smaller
        ("vqa", "lora", -0.03, False, float("nan"), False),  # a CI off 0 but not significant after adjustment
        ("ve", "prompt", -0.04, True, -0.01, False),  # less robust
    ]
    gaps = pd.DataFrame(rows, columns=["task", "method", "gap", "significant", "rel_drop_gap", "rel_drop_significant"])
    v = verdict_frame(gaps).set_index(["task", "method"])
    assert v.loc[("vqa", "prompt")].tolist() == [3, 1, 1, 1, 1]
    assert v.loc[("vqa", "lora")].tolist() == [1, 0, 0, 0, 0]
    assert v.loc[("ve", "prompt")].tolist() == [1, 0, 1, 0, 0]
    assert v.loc[("all tasks", "prompt")].tolist() == [4, 1, 2, 1, 1]
    assert v.loc[("all tasks", "lora")].tolist() == [1, 0, 0, 0, 0]
    assert verdict_frame(gaps[gaps["task"] == "vqa"])["task"].unique().tolist() == ["vqa"]  # one task: no total
    assert verdict_frame(gaps.iloc[:0]).empty
