"""Registered tasks: kinds, named tasks and dataset formats are looked up, never matched by name;
recipes accept every registered task a victim can judge, real dataset formats included."""

from __future__ import annotations

import pytest
import yaml

from robust_pt.errors import ConfigError, TaskError
from robust_pt.recipe import load_recipe, recorded_task
from robust_pt.tasks import Task, formats, kinds, load_task, named

from .._cli import assert_one_line_error, invoke
from ..test_datasets import write_vqav2


def _recipe(tmp_path, tasks, **changes) -> str:
    r = {
        "name": "reg",
        "base": "builtin:base-small",
        "tasks": tasks,
        "tuning": [{"method": "none"}],
        "attacks": [{"attack": "fgsm", "eps": ["2/255"]}],
        "examples": 4,
        **changes,
    }
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(r))
    return str(p)


def test_every_format_and_named_task_declares_a_registered_kind():
    for name in formats.names():
        assert kinds.get(formats.lookup(name).kind)
    for name in named.names():
        assert kinds.get(named.lookup(name).kind)
    assert formats.FORMATS == ("vqav2", "snli-ve", "refcoco", "refcoco+", "refcocog", "coco-captions", "imagefolder")
    # what the report calls the instruction text comes from the registration, not the name
    ve = load_task("shapes-ve", limit=2, size=32)
    assert kinds.declarations(ve)["text_label"] == "Hypothesis"
    assert kinds.declarations(ve)["verdict"] == "binary"
    cap = load_task("shapes-caption", limit=2, size=32)
    assert (kinds.declarations(cap)["verdict"], kinds.declarations(cap)["candidates"]) == ("graded", None)


def test_a_recipe_accepts_a_real_dataset_format(tmp_path):
    root = write_vqav2(tmp_path / "vqa data")
    task = f"vqav2:{root}"
    r = load_recipe(_recipe(tmp_path, ["shapes-vqa", task], split="val"))
    assert r.tasks == ("shapes-vqa", task)
    dirs = [run.name for run in r.runs()]
    assert dirs[0] == "shapes-vqa_base_fgsm"  # named tasks' run directories as before
    assert dirs[1] == "vqav2-vqa-data_base_fgsm" and "/" not in dirs[1] and ":" not in dirs[1]
    assert recorded_task(task) == "vqav2" and recorded_task("shapes-vqa") == "shapes-vqa"


def test_a_recipe_on_a_real_dataset_runs_and_a_second_run_keeps_it(tmp_path):
    from robust_pt.recipe import run_recipe

    root = write_vqav2(tmp_path / "vqa")
    recipe = _recipe(tmp_path, [f"vqav2:{root}"], split="val", batch_size=4)
    out = run_recipe(recipe, out=tmp_path / "out", log=lambda *_: None)
    run = out / "runs" / "vqav2-vqa_base_fgsm"
    assert (run / "run.json").exists() and (out / "report.md").exists()
    logged = []
    run_recipe(recipe, out=tmp_path / "out", log=logged.append)
    assert any("1 runs complete" in line and "kept as they are" in line for line in logged)


def test_a_recipe_refuses_a_missing_dataset_and_an_unknown_format_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"recipe r\.yaml: vqav2: .* does not exist"):
        load_recipe(_recipe(tmp_path, [f"vqav2:{tmp_path / 'nothing'}"], split="val"))
    with pytest.raises(ConfigError, match="unknown dataset format 'vqa3'"):
        load_recipe(_recipe(tmp_path, [f"vqa3:{tmp_path}"]))


def test_a_task_registered_by_name_is_accepted_by_recipes(tmp_path, monkeypatch):
    shapes = named.lookup("shapes-vqa")
    toy = named.NamedTask("toy-vqa", "closed", {"test": 8}, lambda split, n, seed, size: _renamed(shapes, n, size))
    monkeypatch.setitem(named._tasks, "toy-vqa", toy)
    assert load_task("toy-vqa", limit=3, size=32).name == "toy-vqa"
    assert load_recipe(_recipe(tmp_path, ["toy-vqa"])).tasks == ("toy-vqa",)


def _renamed(source, n: int, size: int) -> Task:
    t = source.build("test", n, 0, size)
    return Task(
        name="toy-vqa",
        kind=t.kind,
        split="test",
        metric=t.metric,
        answers=t.answers,
        image_size=size,
        _examples=list(t),
    )


def test_an_unknown_or_unattackable_task_is_one_line_from_robust_pt_run(tmp_path):
    for bad in ("shapes-vqa3", "shapes-pretrain"):
        result = invoke("run", _recipe(tmp_path, [bad]), "--out", tmp_path / "out")
        assert_one_line_error(result, f"unknown task {bad!r}", "shapes-vqa", "vqav2:DIR")
    with pytest.raises(TaskError, match="unknown task kind 'nope'"):
        kinds.get("nope")
