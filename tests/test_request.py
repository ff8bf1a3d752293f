"""One request (robust_pt/engine/request.py): it survives JSON unchanged (what `nproc > 1` sends its
ranks), and a bad option stops with the same error from every entry point (API, CLI, recipe),
before a model, a task or an attack is loaded and before anything is written."""

from __future__ import annotations

import dataclasses
import importlib
import inspect

import pytest
import torch
import yaml

import robust_pt as rpt
from robust_pt.engine.request import EvalRequest
from robust_pt.errors import ConfigError

from ._cli import assert_one_line_error, invoke

BAD = [
    ("seed", -1, "seed must be a non-negative integer, got -1"),
    ("limit", 0, "limit must be a positive integer, got 0"),
    ("batch_size", "x", "batch size must be a positive integer or auto, got 'x'"),
    ("nproc", 0, "nproc must be a positive integer, got 0"),
    ("samples", -2, "samples must be a non-negative integer, got -2"),
]


def _never(*a, **k):
    raise AssertionError("prepared a run from a bad request")


def test_the_request_round_trips_through_json(tmp_path):
    req = EvalRequest(
        "ckpts/pt-vqa",
        "shapes-vqa",
        attack="pgd",
        eps=[1 / 255, 8 / 255],
        seed=3,
        out=tmp_path / "run",
        batch_size="auto",
        limit=16,
        split="val",
        task_seed=2,
        samples=0,
        device="cpu",
        precision="fp32",
        base="ckpts/base",
        nproc=2,
        surrogate=["ckpts/a", "ckpts/b"],
        crafted=tmp_path / "crafted",
        overrides={"steps": 3, "early_stop": False, "target": "red"},
    )
    back = EvalRequest.from_json(req.to_json())
    assert back == req and back.to_json() == req.to_json()
    assert EvalRequest.from_json(EvalRequest("m").to_json()) == EvalRequest("m")  # the defaults too


def test_a_module_cannot_cross_processes():
    with pytest.raises(ConfigError, match="model must be a checkpoint directory"):
        EvalRequest(torch.nn.Linear(2, 2)).to_json()
    with pytest.raises(ConfigError, match="surrogates as checkpoint directories"):
        EvalRequest("m", surrogate=torch.nn.Linear(2, 2)).to_json()


def test_evaluate_takes_the_requests_options():
    params = inspect.signature(rpt.evaluate).parameters
    fields = {f.name for f in dataclasses.fields(EvalRequest)} - {"overrides"}
    assert fields <= set(params) and {"progress", "on_batch", "overrides"} <= set(params)
    doc = inspect.getdoc(rpt.evaluate)
    assert all(f"{name}" in doc for name in ("batch_size", "nproc", "surrogate", "on_batch"))


@pytest.mark.parametrize("name,value,message", BAD)
def test_bad_options_from_the_api(name, value, message, tmp_path, monkeypatch):
    monkeypatch.setattr(importlib.import_module("robust_pt.engine.run"), "prepare", _never)
    with pytest.raises(ConfigError) as err:
        rpt.evaluate("builtin:base-small", "shapes-vqa", out=tmp_path / "run", **{name: value})
    assert str(err.value) == message
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name,value,message", BAD)
def test_bad_options_from_the_cli(name, value, message, tmp_path, monkeypatch):
    monkeypatch.setattr(importlib.import_module("robust_pt.engine.run"), "prepare", _never)
    flag = "--" + name.replace("_", "-")
    r = invoke("attack", "--model", "builtin:base-small", "--attack", "pgd", flag, value, "--out", tmp_path / "run")
    assert_one_line_error(
        r, ("--batch-size" + message[len("batch size") :]) if name == "batch_size" else f"--{message}"
    )
    assert not (tmp_path / "run").exists()


def test_nproc_over_limit_is_one_error(tmp_path, monkeypatch):
    monkeypatch.setattr(importlib.import_module("robust_pt.engine.run"), "prepare", _never)
    with pytest.raises(ConfigError, match=r"nproc 3 is larger than the number of examples \(2\); use nproc 2"):
        rpt.evaluate("builtin:base-small", "shapes-vqa", limit=2, nproc=3, out=tmp_path / "run")


def test_bad_options_from_a_recipe(tiny_vqa_dir, tmp_path, monkeypatch):
    """A recipe's seed reaches the attack runs as the request's: the same error, before any attack."""
    from robust_pt import recipe as rc

    r = {
        "name": "bad",
        "base": str(tiny_vqa_dir),
        "tasks": ["shapes-vqa"],
        "tuning": [{"method": "finetune", "steps": 1}],
        "examples": 8,
        "batch_size": 4,
        "seed": -1,
        "attacks": [{"attack": "fgsm", "eps": ["8/255"]}],
    }
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(r))
    monkeypatch.setattr(
        "robust_pt.tuning.zoo.build_zoo",
        lambda recipe, log, only=None: {("shapes-vqa", "finetune"): (tiny_vqa_dir, {})},
    )
    monkeypatch.setattr(importlib.import_module("robust_pt.engine.run"), "prepare", _never)
    with pytest.raises(ConfigError, match="^seed must be a non-negative integer, got -1$"):
        rc.run_recipe(rc.load_recipe(p), tmp_path / "rep", log=lambda *_: None)
    assert not (tmp_path / "rep" / "runs").exists() or not any((tmp_path / "rep" / "runs").iterdir())


def test_evaluate_builds_one_request_from_its_arguments(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(importlib.import_module("robust_pt.engine.run"), "execute", lambda req, *a: seen.append(req))
    rpt.evaluate("m", "shapes-vqa", "fgsm", [8 / 255], 2, tmp_path / "run", limit=4, steps=3, backend="ours")
    (req,) = seen
    assert (req.attack, req.eps, req.seed, req.out, req.limit) == ("fgsm", [8 / 255], 2, tmp_path / "run", 4)
    assert req.overrides == {"steps": 3, "backend": "ours"}
    with pytest.raises(TypeError, match="multiple values for argument 'attack'"):
        rpt.evaluate("m", "shapes-vqa", "fgsm", attack="pgd")
    req = EvalRequest("m", "shapes-vqa", attack="fgsm", limit=4)
    rpt.evaluate(req, progress=False)
    assert seen[-1] is req
