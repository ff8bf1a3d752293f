"""What a newcomer met at the terminal: Ctrl-C, re-runs, --limit beyond the split, duplicate columns, progress."""

from __future__ import annotations

import io

import pandas as pd

from robust_pt.runtime.progress import LogProgress

from ._cli import invoke

SMALL = ["--model", "builtin:base-small", "--task", "shapes-vqa", "--attack", "fgsm", "--eps", "2/255"]


def test_ctrl_c_says_what_is_kept_and_how_to_resume(monkeypatch, tmp_path):
    import robust_pt.engine.run

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(robust_pt.engine.run, "execute", interrupted)
    r = invoke("attack", *SMALL, "--limit", 8, "--out", tmp_path / "run")
    assert r.exit_code == 130
    assert "interrupted" in r.stderr and "re-run the same command to resume" in r.stderr
    assert "Traceback" not in r.output + r.stderr


def test_a_finished_run_says_it_was_already_complete(tmp_path):
    first = invoke("attack", *SMALL, "--limit", 8, "--out", tmp_path / "run")
    assert first.exit_code == 0, first.output
    assert "already complete" not in first.stdout
    again = invoke("attack", *SMALL, "--limit", 8, "--out", tmp_path / "run")
    assert again.exit_code == 0 and "already complete" in again.stdout


def test_limit_beyond_the_split_is_said(tmp_path):
    from robust_pt.tasks import load_task

    n = len(load_task("shapes-vqa", split="test"))
    r = invoke("attack", *SMALL, "--limit", n + 500, "--out", tmp_path / "run")
    assert r.exit_code == 0, r.output
    assert f"--limit {n + 500} is more than the task's {n} examples" in r.stdout


def test_the_summary_shows_rel_only_where_it_differs_from_succ(capsys):
    from robust_pt.cli.attack import print_summary

    row = dict(
        eps_label="8/255", clean=0.8, robust=0.4, drop=0.4, n_attacked=8, mean_steps=1.0, metric="accuracy", n=10
    )
    row.update(mean_linf=0.03, mean_l2=1.0, kind="image")
    print_summary(pd.DataFrame([{**row, "rel_drop": 0.5, "success_rate": 0.5}]))
    binary = capsys.readouterr().out
    print_summary(pd.DataFrame([{**row, "rel_drop": 0.3, "success_rate": 0.5}]))
    graded = capsys.readouterr().out
    head = [ln.split() for ln in (binary, graded) for ln in [next(x for x in ln.splitlines() if "eps" in x.split())]]
    assert "rel" not in head[0] and "succ" in head[0] and "succ = rel" in binary
    assert "rel" in head[1] and "succ" in head[1]


def test_eta_is_known_after_the_first_batch_and_ignores_a_resumed_jump():
    t = [0.0]
    log = LogProgress("x", 100, float("inf"), io.StringIO(), clock=lambda: t[0])
    t[0] = 10.0
    log.advance(10)  # the first batch: 10 examples in 10 s
    assert log.eta(t[0]) == 90.0
    t2 = [0.0]
    resumed = LogProgress("x", 100, float("inf"), io.StringIO(), clock=lambda: t2[0])
    resumed.advance(50)  # resumed from an earlier sitting, at once
    t2[0] = 10.0
    resumed.advance(10)
    assert resumed.eta(t2[0]) == 40.0  # 40 left at 1 example/s, not skewed by the 50 resumed


def test_a_resumed_progress_line_counts_the_survivors_of_every_sitting(tmp_path, monkeypatch):
    import robust_pt as rpt

    monkeypatch.setenv("ROBUST_PT_QUIET", "0")
    monkeypatch.setenv("ROBUST_PT_LOG_EVERY", "0")
    out = tmp_path / "run"
    kw = dict(attack="fgsm", eps=[2 / 255], limit=16, batch_size=8, out=out, progress=False)

    def stop(b):
        raise KeyboardInterrupt

    try:
        rpt.evaluate("builtin:base-small", "shapes-vqa", on_batch=stop, **kw)
    except KeyboardInterrupt:
        pass
    whole = rpt.evaluate("builtin:base-small", "shapes-vqa", attack="fgsm", eps=[2 / 255], limit=16, batch_size=8)
    survivors = int(round(whole.summary["robust"].iloc[0] * 16))
    import contextlib

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rpt.evaluate("builtin:base-small", "shapes-vqa", **{**kw, "progress": True})
    last = [ln for ln in err.getvalue().splitlines() if "survivors=" in ln][-1]
    assert f"survivors={survivors}@2/255" in last, last


def test_sizes_nothing_measured_are_not_shown_as_zero(capsys):
    from robust_pt.cli.attack import print_summary

    row = dict(eps_label="3", clean=0.8, robust=0.4, drop=0.4, rel_drop=0.5, success_rate=0.5, n_attacked=8)
    row.update(mean_steps=1.0, metric="accuracy", n=10, kind="corruption")
    print_summary(pd.DataFrame([{**row, "mean_linf": 0.0, "mean_l2": 0.0}]))
    text = capsys.readouterr().out
    print_summary(pd.DataFrame([{**row, "mean_linf": 0.03, "mean_l2": 1.2}]))
    image = capsys.readouterr().out
    assert "linf" not in text and "0.000" not in text
    assert "linf" in image and "0.030" in image


def test_no_eta_from_a_resumed_jump_alone():
    t = [0.0]
    log = LogProgress("x", 1000, float("inf"), io.StringIO(), clock=lambda: t[0])
    log.advance(500, resumed=500)  # an earlier sitting's work, at once
    t[0] = 5.0
    assert log.eta(t[0]) is None  # not "0s": nothing of this sitting has finished yet
    t[0] = 10.0
    log.advance(100)  # 100 in 10 s
    assert log.eta(t[0]) == 40.0


def test_stored_survivors_follow_every_sweep():
    from types import SimpleNamespace

    from robust_pt.engine.loop import _stored_survivors

    e = 8 / 255
    recs = [
        {"eps": e, "clean_correct": True, "broken_at": None},  # survived
        {"eps": e, "clean_correct": True, "broken_at": 2 / 255},  # broken
        {"eps": e, "clean_correct": False, "broken_at": None},  # wrong before the attack
        {"eps": e, "clean_correct": None, "broken_at": None, "correct": None},  # graded (CIDEr): survived
        {"eps": 2 / 255, "clean_correct": True, "broken_at": None},  # another eps
        {"eps": None, "clean_correct": True},  # malformed
        {"batch": 0},  # a batch marker
    ]
    assert _stored_survivors(SimpleNamespace(records=recs), e) == 2


def test_setup_into_an_unwritable_cache_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = invoke("setup", "--cache", blocker / "cache", "--no-apt")
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--cache" in lines[0], r.stderr
