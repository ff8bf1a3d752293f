"""Recipes: validated whole before any work, one clear line per mistake; a tiny recipe runs
end to end, and an interrupted run finishes with the same report as an uninterrupted one."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from robust_pt.cli import _register, app
from robust_pt.errors import AttackError, CheckpointError, ConfigError
from robust_pt.models.ofa import build
from robust_pt.recipe import load_recipe, run_recipe
from robust_pt.tasks.vocab import WORDS, bin_tokens
from robust_pt.tuning import checkpoint as ckpt


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("rbase") / "base"
    ckpt.save(build("tiny", vocab=list(WORDS) + bin_tokens()), d, {"method": "pretrain", "task": None})
    return d


def _recipe(tmp_path, base_dir, **changes):
    r = {"name": "tinyrecipe", "base": str(base_dir), "tasks": ["shapes-vqa"], "zoo": str(tmp_path / "zoo"),
         "tuning": [{"method": "finetune", "steps": 2, "batch_size": 4, "train_size": 16, "eval_size": 8},
                    {"method": "prompt", "prompt_length": 2, "steps": 2, "batch_size": 4, "train_size": 16,
                     "eval_size": 8}],
         "attacks": [{"attack": "fgsm", "eps": ["1/255", "8/255"]}, {"attack": "emb-fgsm", "eps": [0.1]}],
         "examples": 12, "batch_size": 4}
    r.update(changes)
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(r))
    return p


@pytest.mark.parametrize("change,error,needle", [
    ({"budget": 3}, ConfigError, "unknown key 'budget'"),
    ({"attacks": [{"attack": "pgdd"}]}, AttackError, "pgdd"),
    ({"tasks": ["shapes-vqa3"]}, ConfigError, "unknown task"),
    ({"attacks": [{"attack": "pgd", "eps": ["8/255", "4/255"]}]}, ConfigError, "not increasing"),
    ({"base": "/no/such/base"}, CheckpointError, "missing"),
    ({"tuning": [{"method": "prompt", "lenght": 3}]}, ConfigError, "unknown key 'lenght'"),
])
def test_bad_recipes_fail_before_any_work(tmp_path, base, change, error, needle):
    p = _recipe(tmp_path, base, **change)
    with pytest.raises(error, match=needle):
        load_recipe(p)
    _register()
    res = CliRunner().invoke(app, ["run", str(p), "--out", str(tmp_path / "rep")])
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], res.output
    assert not (tmp_path / "zoo").exists() and not (tmp_path / "rep").exists()


def _summary(out: Path) -> list:
    rows = json.loads((out / "summary.json").read_text())["rows"]
    # every figure, not where the run directory happens to live
    return sorted(json.dumps({k: v for k, v in r.items() if k not in ("run", "path")}, sort_keys=True, default=str)
                  for r in rows)


def test_recipe_runs_and_an_interrupted_run_ends_with_the_same_report(tmp_path, base, monkeypatch):
    p = _recipe(tmp_path, base)
    full = run_recipe(p, tmp_path / "full", log=lambda *_: None)
    assert (full / "report.md").exists() and (full / "report.html").exists()
    assert len(list((full / "runs").iterdir())) == 4  # 2 tunings x 2 attacks

    # interrupt: stop the second engine run after its first batch, then run again
    import robust_pt.engine as engine

    out2 = tmp_path / "again"
    calls = {"n": 0}
    real = engine.evaluate

    def flaky(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            def boom(b):
                raise KeyboardInterrupt
            kw["on_batch"] = boom
        return real(*a, **kw)

    monkeypatch.setattr(engine, "evaluate", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(p, out2, log=lambda *_: None)
    monkeypatch.setattr(engine, "evaluate", real)
    run_recipe(p, out2, log=lambda *_: None)
    assert _summary(out2) == _summary(full)
    shutil.rmtree(tmp_path / "zoo")
