"""The public API says what it takes: real signatures and docstrings, and a task that follows the model's size."""

from __future__ import annotations

import inspect

import pytest

import robust_pt as rpt
from robust_pt.errors import RobustPTError


@pytest.mark.parametrize(
    "name, params",
    [
        ("load_model", {"path_or_module", "device", "precision", "base"}),
        ("load_task", {"name", "split", "limit", "seed", "size"}),
        ("evaluate", {"model", "task", "attack", "eps", "seed", "out", "batch_size", "limit"}),
        ("report", {"runs", "out", "correction", "reference"}),
    ],
)
def test_help_shows_the_real_signature_and_docstring(name, params):
    fn = getattr(rpt, name)
    sig = inspect.signature(fn)
    assert params <= set(sig.parameters), f"{name}{sig}"
    assert not any(p.kind is p.VAR_POSITIONAL for p in sig.parameters.values()), f"{name}{sig}"
    assert len(inspect.getdoc(fn) or "") > 80


def test_a_task_loaded_without_a_size_gets_the_models_size():
    model = rpt.load_model("builtin:base-small")  # 48 px
    task = rpt.load_task("shapes-vqa", split="test", limit=12)
    assert task.image_size == 64 and model.image_size == 48
    run = rpt.evaluate(model, task, attack="fgsm", eps=[2 / 255], progress=False)
    assert int(run.summary["n"].iloc[0]) == 12  # the task's 12 examples, not the split's 1,000
    same = rpt.evaluate(model, "shapes-vqa", attack="fgsm", eps=[2 / 255], limit=12, progress=False)
    assert run.records["correct"].tolist() == same.records["correct"].tolist()


def test_a_task_loaded_at_another_size_names_the_call_to_make():
    model = rpt.load_model("builtin:base-small")
    task = rpt.load_task("shapes-vqa", split="test", limit=4, size=64)
    with pytest.raises(RobustPTError, match=r"rpt\.load_task\('shapes-vqa', split='test', size=48\)"):
        rpt.evaluate(model, task, attack="fgsm", eps=[2 / 255], progress=False)


def test_a_real_dataset_loaded_without_a_size_takes_the_models_size_and_resize_mode(monkeypatch):
    from types import SimpleNamespace

    import robust_pt.tasks.formats as formats

    calls = []
    monkeypatch.setattr(formats, "load_real", lambda name, **kw: calls.append(kw) or SimpleNamespace(**kw))
    task = rpt.load_task("vqav2:/data/vqa", limit=8)
    assert calls[-1]["size"] == 64 and calls[-1]["resize"] == "squash"
    task.at_size(224, "crop")  # what evaluate() does for a crop-processor model
    assert calls[-1]["size"] == 224 and calls[-1]["resize"] == "crop"
    asked = rpt.load_task("vqav2:/data/vqa", limit=8, resize="squash")
    asked.at_size(224, "crop")
    assert calls[-1]["resize"] == "squash"  # what the user asked for wins
