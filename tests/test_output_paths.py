"""Output paths are checked before the work starts (robust_pt/outputs.py): an --out under a
regular file, a directory where a file goes (or a file where a directory goes) or an unwritable
parent is one `error: ...` line with exit code 2 from every command that writes, nothing already
there is touched, and the heavy function is never reached (each is replaced by one that fails
the test if called)."""

from __future__ import annotations

import importlib
import os

import pytest

import robust_pt
from robust_pt.errors import OutputPathError, RobustPTError
from robust_pt.outputs import require_writable_dir, require_writable_file
from robust_pt.tuning.checkpoint import builtin_dir

from ._cli import assert_one_line_error, invoke

KEEP = "keep me\n"


def _never(name: str):
    def boom(*a, **kw):
        raise AssertionError(f"{name} ran although the output path is bad")

    return boom


@pytest.fixture
def blocker(tmp_path, monkeypatch):
    """A regular file that a bad output path goes through; the test runs in tmp_path."""
    monkeypatch.chdir(tmp_path)
    f = tmp_path / "x.txt"
    f.write_text(KEEP)
    return f


def _untouched(tmp_path, blocker, before: set) -> None:
    assert blocker.read_text() == KEEP
    assert {p.relative_to(tmp_path) for p in tmp_path.rglob("*")} == before  # nothing created


def _listing(tmp_path) -> set:
    return {p.relative_to(tmp_path) for p in tmp_path.rglob("*")}


def test_attack_out_under_a_file(tmp_path, blocker, monkeypatch):
    monkeypatch.setattr(importlib.import_module("robust_pt.engine.run"), "prepare", _never("the attack"))
    before = _listing(tmp_path)
    bad = blocker / "run"
    res = invoke("attack", "--model", "builtin:base-small", "--task", "shapes-vqa", "--attack", "pgd", "--out", bad)
    assert_one_line_error(res, str(bad), str(blocker), "--out")
    _untouched(tmp_path, blocker, before)


def test_attack_crafted_under_a_file(tmp_path, blocker, monkeypatch):
    monkeypatch.setattr(importlib.import_module("robust_pt.engine.run"), "prepare", _never("the attack"))
    before = _listing(tmp_path)
    res = invoke(
        "attack",
        "--model",
        "builtin:base-small",
        "--surrogate",
        "builtin:base-small",
        "--attack",
        "pgd",
        "--out",
        tmp_path / "run",
        "--crafted",
        blocker / "crafted",
    )
    assert_one_line_error(res, str(blocker / "crafted"), "--crafted")
    _untouched(tmp_path, blocker, before)


def test_evaluate_api_refuses_before_loading(tmp_path, blocker, monkeypatch):
    monkeypatch.setattr(importlib.import_module("robust_pt.engine.run"), "prepare", _never("the attack"))
    with pytest.raises(OutputPathError, match="x.txt is a file"):
        robust_pt.evaluate("builtin:base-small", "shapes-vqa", attack="pgd", out=blocker / "run")
    assert blocker.read_text() == KEEP


@pytest.mark.parametrize("where", ["under-a-file", "figures-is-a-file", "report-md-is-a-dir"])
def test_report_bad_out_keeps_the_old_report(tmp_path, blocker, monkeypatch, where):
    rep = importlib.import_module("robust_pt.report")
    monkeypatch.setattr(rep, "load_runs", _never("reading the runs"))
    out = tmp_path / "report"
    out.mkdir()
    (out / "summary.csv").write_text(KEEP)
    if where == "under-a-file":
        out = blocker / "report"
    elif where == "figures-is-a-file":
        (out / "figures").write_text(KEEP)
    else:
        (out / "report.md").mkdir()
    before = _listing(tmp_path)
    res = invoke("report", tmp_path / "runs", "--out", out)
    assert_one_line_error(res, str(out))
    _untouched(tmp_path, blocker, before)
    assert (tmp_path / "report" / "summary.csv").read_text() == KEEP


def test_report_api_refuses_before_reading_runs(tmp_path, blocker, monkeypatch):
    rep = importlib.import_module("robust_pt.report")
    monkeypatch.setattr(rep, "load_runs", _never("reading the runs"))
    with pytest.raises(OutputPathError):
        rep.build([tmp_path / "runs"], blocker / "report")


@pytest.mark.parametrize("where", ["under-a-file", "a-directory"])
def test_baseline_bad_out(tmp_path, blocker, monkeypatch, where):
    monkeypatch.setattr(importlib.import_module("robust_pt.report.check"), "make_baseline", _never("the baseline"))
    out = blocker / "baseline.json" if where == "under-a-file" else tmp_path / "basedir"
    if where == "a-directory":
        out.mkdir()
        (out / "old.json").write_text(KEEP)
    before = _listing(tmp_path)
    res = invoke("baseline", tmp_path / "runs", "--out", out)
    assert_one_line_error(res, str(out), "--out")
    _untouched(tmp_path, blocker, before)


def test_check_junit_under_a_file(tmp_path, blocker, monkeypatch):
    monkeypatch.setattr(importlib.import_module("robust_pt.report.check"), "check", _never("the check"))
    before = _listing(tmp_path)
    bad = blocker / "junit.xml"
    res = invoke("check", tmp_path / "runs", "--baseline", tmp_path / "baseline.json", "--junit", bad)
    assert_one_line_error(res, str(bad), "--junit")
    _untouched(tmp_path, blocker, before)


def test_junit_xml_refuses_a_directory(tmp_path):
    from robust_pt.report.check import CheckResult, junit_xml

    with pytest.raises(OutputPathError, match="is a directory"):
        junit_xml(CheckResult(True, [], [], [], [], 0.02), tmp_path)


@pytest.mark.parametrize("base", ["builtin:base-small", str(builtin_dir("tiny-llava"))])
def test_train_out_under_a_file(tmp_path, blocker, monkeypatch, base):
    monkeypatch.setattr(importlib.import_module("robust_pt.tuning.train"), "tune", _never("training"))
    monkeypatch.setattr(importlib.import_module("robust_pt.tuning.hf_train"), "train_hf", _never("training"))
    before = _listing(tmp_path)
    bad = blocker / "ckpt"
    res = invoke("train", "--base", base, "--task", "shapes-vqa", "--method", "lora", "--out", bad)
    assert_one_line_error(res, str(bad), "--out")
    _untouched(tmp_path, blocker, before)


def test_tune_and_pretrain_api_refuse_first(tmp_path, blocker, monkeypatch):
    from robust_pt.tuning import train
    from robust_pt.tuning.config import TrainConfig, TuningConfig

    monkeypatch.setattr(train.ckpt, "load", _never("reading the base"))
    monkeypatch.setattr(train, "_fit", _never("training"))
    with pytest.raises(OutputPathError):
        train.tune("builtin:base-small", "shapes-vqa", TuningConfig("prompt"), TrainConfig(steps=1), blocker / "c")
    with pytest.raises(OutputPathError):
        train.pretrain(blocker / "c", "tiny", TrainConfig(steps=1))


def test_pretrain_out_under_a_file(tmp_path, blocker, monkeypatch):
    monkeypatch.setattr(importlib.import_module("robust_pt.tuning.train"), "pretrain", _never("pretraining"))
    before = _listing(tmp_path)
    bad = blocker / "base"
    res = invoke("pretrain", "--out", bad, "--preset", "tiny", "--steps", "1")
    assert_one_line_error(res, str(bad), "--out")
    _untouched(tmp_path, blocker, before)


@pytest.mark.parametrize("command", ["run", "demo"])
def test_recipe_report_dir_under_a_file(tmp_path, blocker, monkeypatch, command):
    monkeypatch.setattr(importlib.import_module("robust_pt.tuning.zoo"), "build_zoo", _never("building the zoo"))
    before = _listing(tmp_path)
    bad = blocker / "report"
    args = ["run", "demo", "--out", bad] if command == "run" else ["demo", "--out", bad]
    res = invoke(*args)
    assert_one_line_error(res, str(bad))
    _untouched(tmp_path, blocker, before)


def test_recipe_zoo_under_a_file(tmp_path, blocker, monkeypatch):
    monkeypatch.setattr(importlib.import_module("robust_pt.tuning.zoo"), "build_zoo", _never("building the zoo"))
    monkeypatch.setenv("ROBUST_PT_CACHE", str(blocker))
    before = _listing(tmp_path)
    res = invoke("run", "demo", "--out", tmp_path / "report")
    assert_one_line_error(res, str(blocker), "checkpoint directory")
    _untouched(tmp_path, blocker, before)


# ----------------------------------------------------------------------------- the helpers


def test_helpers_create_nothing_and_accept_good_paths(tmp_path):
    assert require_writable_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert require_writable_file(tmp_path / "c" / "d.json") == tmp_path / "c" / "d.json"
    assert require_writable_dir(tmp_path) == tmp_path
    assert list(tmp_path.iterdir()) == []


def test_helpers_refuse_the_wrong_kind(tmp_path):
    f = tmp_path / "f"
    f.write_text(KEEP)
    with pytest.raises(OutputPathError, match="exists and is not a directory"):
        require_writable_dir(f, "run directory")
    with pytest.raises(OutputPathError, match="is a directory"):
        require_writable_file(tmp_path, "baseline file")
    with pytest.raises(OutputPathError, match="f is a file"):
        require_writable_file(f / "deep" / "x.json", "baseline file")
    assert issubclass(OutputPathError, RobustPTError)


def test_helpers_refuse_an_unwritable_parent(tmp_path, monkeypatch):
    # root may write anywhere, so the permission bits alone cannot show it here: os.access says no
    monkeypatch.setattr(os, "access", lambda p, mode: False)
    with pytest.raises(OutputPathError, match="is not writable; choose another --out or fix its permissions"):
        require_writable_dir(tmp_path / "new")
    with pytest.raises(OutputPathError, match="is not writable"):
        require_writable_file(tmp_path / "new.json")
    with pytest.raises(OutputPathError, match="is not writable"):
        require_writable_dir(tmp_path)


def test_checkpoints_and_runs_are_written_with_the_usual_mode(tmp_path):
    """Files written through a temporary file and an atomic replace get 666 less the umask, as open() gives,
    not mkstemp's 600 (a checkpoint made by root was unreadable to other users)."""
    import os
    import stat

    import robust_pt
    from robust_pt.models.miniclip import build as build_clip
    from robust_pt.tasks.vocab import WORDS
    from robust_pt.tuning import checkpoint as ckpt

    old = os.umask(0o022)
    try:
        ckpt.save(build_clip("tiny", vocab=WORDS), tmp_path / "ck", {"method": "pretrain", "name": "clip-tiny"})
        model = robust_pt.load_model(tmp_path / "ck")
        robust_pt.evaluate(model, task="shapes-objects", attack="fgsm", eps=[2 / 255], limit=2, out=tmp_path / "run")
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "ck").iterdir()] + [tmp_path / "run" / n for n in ("run.json", "records.jsonl")]
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == {p.name: 0o644 for p in files}
