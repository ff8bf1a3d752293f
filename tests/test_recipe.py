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
    r = {
        "name": "tinyrecipe",
        "base": str(base_dir),
        "tasks": ["shapes-vqa"],
        "zoo": str(tmp_path / "zoo"),
        "tuning": [
            {"method": "finetune", "steps": 2, "batch_size": 4, "train_size": 16, "eval_size": 8},
            {"method": "prompt", "prompt_length": 2, "steps": 2, "batch_size": 4, "train_size": 16, "eval_size": 8},
        ],
        "attacks": [{"attack": "fgsm", "eps": ["1/255", "8/255"]}, {"attack": "emb-fgsm", "eps": [0.1]}],
        "examples": 12,
        "batch_size": 4,
    }
    r.update(changes)
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(r))
    return p


@pytest.mark.parametrize(
    "change,error,needle",
    [
        ({"budget": 3}, ConfigError, "unknown key 'budget'"),
        ({"attacks": [{"attack": "pgdd"}]}, AttackError, "pgdd"),
        ({"tasks": ["shapes-vqa3"]}, ConfigError, "unknown task"),
        ({"attacks": [{"attack": "pgd", "eps": ["8/255", "4/255"]}]}, ConfigError, "not increasing"),
        ({"base": "/no/such/base"}, CheckpointError, "missing"),
        ({"tuning": [{"method": "prompt", "lenght": 3}]}, ConfigError, "unknown key 'lenght'"),
        ({"tuning": [{"method": "none", "steps": 3}]}, ConfigError, "unknown key 'steps'"),
        (
            {"tasks": ["shapes-caption"], "attacks": [{"attack": "square"}]},
            ConfigError,
            "needs logits over candidate answers, which the caption task shapes-caption does not have",
        ),
        (
            {"attacks": [{"attack": "fgsm", "tasks": ["shapes-ve"]}]},
            ConfigError,
            "must be a non-empty list of the recipe's",
        ),
        ({"tuning": [{"method": "finetune", "tasks": "shapes-vqa"}]}, ConfigError, "must be a non-empty list of the"),
        ({"attacks": [{"attack": "pgd", "surrogate": "lora"}]}, ConfigError, "surrogate 'lora' is not a tuning entry"),
        ({"attacks": [{"attack": "deepwordbug", "surrogate": "finetune"}]}, AttackError, "queries the target itself"),
        ({"attacks": [{"attack": "emb-pgd", "surrogate": "finetune+prompt"}]}, AttackError, "one surrogate"),
        ({"attacks": [{"attack": "pgd", "surrogate": 3}]}, ConfigError, "surrogate must be a tuning entry"),
        ({"task_examples": {"shapes-ve": 3}}, ConfigError, "task_examples must map some of the recipe's tasks"),
        ({"attacks": [{"attack": "pgd", "target": "purple-elephant"}]}, AttackError, "not an answer of task"),
        ({"attacks": [{"attack": "pgd", "target": "red", "surrogate": "finetune"}]}, ConfigError, "runs white-box"),
        ({"task_examples": {"shapes-vqa": 0}}, ConfigError, "task_examples shapes-vqa"),
        # attack options are typed by the method's parameters (attacks/methods.py)
        ({"attacks": [{"attack": "pgd", "steps": "ten"}]}, ConfigError, "steps must be an integer in the overrides"),
        ({"attacks": [{"attack": "pgd", "steps": 2.5}]}, ConfigError, "of attack pgd, got 2.5"),
        ({"attacks": [{"attack": "pgd", "kappa": 1}]}, ConfigError, "unknown attack option 'kappa' for image pgd"),
        ({"attacks": [{"attack": "pgd", "query_budget": 9}]}, ConfigError, "unknown key 'query_budget'"),
    ],
)
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
    return sorted(
        json.dumps({k: v for k, v in r.items() if k not in ("run", "path")}, sort_keys=True, default=str) for r in rows
    )


def test_recipe_runs_and_an_interrupted_run_ends_with_the_same_report(tmp_path, base, monkeypatch):
    p = _recipe(tmp_path, base)
    full = run_recipe(p, tmp_path / "full", log=lambda *_: None)
    assert (full / "report.md").exists() and (full / "report.html").exists()
    assert len(list((full / "runs").iterdir())) == 4  # 2 tunings x 2 attacks

    # interrupt: stop the second engine run after its first batch, then run again
    import robust_pt.engine.run as engine

    out2 = tmp_path / "again"
    calls = {"n": 0}
    real = engine.execute

    def flaky(request, **kw):
        calls["n"] += 1
        if calls["n"] == 2:

            def boom(b):
                raise KeyboardInterrupt

            kw["on_batch"] = boom
        return real(request, **kw)

    monkeypatch.setattr(engine, "execute", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(p, out2, log=lambda *_: None)
    monkeypatch.setattr(engine, "execute", real)
    run_recipe(p, out2, log=lambda *_: None)
    assert _summary(out2) == _summary(full)
    shutil.rmtree(tmp_path / "zoo")


def test_only_adds_an_entry_without_rebuilding_the_others_and_reports_every_run(tmp_path, base):
    """A method added to a finished recipe: `--only apt` tunes and attacks apt alone (the other
    entries' checkpoints may be gone) and the report equals a full run's."""
    first = _recipe(tmp_path, base)
    out = run_recipe(first, tmp_path / "rep", log=lambda *_: None)
    shutil.rmtree(tmp_path / "zoo")  # a fresh clone: the committed runs, no checkpoints
    apt = {"method": "apt", "apt_prompts": 2, "steps": 2, "batch_size": 4, "train_size": 16, "eval_size": 8}
    grown = _recipe(tmp_path, base, tuning=yaml.safe_load(first.read_text())["tuning"] + [apt])
    lines = []
    run_recipe(grown, out, log=lines.append, only=["apt"])
    assert sorted(p.name for p in (tmp_path / "zoo").iterdir()) == ["apt-shapes-vqa"]
    assert len(list((out / "runs").iterdir())) == 6
    full = run_recipe(grown, tmp_path / "full", log=lambda *_: None)
    assert _summary(out) == _summary(full)
    _register()
    res = CliRunner().invoke(app, ["run", str(grown), "--out", str(out), "--only", "apt,ia3"])
    assert res.exit_code == 2 and "has no tuning entry 'ia3'" in res.output, res.output


def test_an_untuned_entry_attacks_the_base_itself_and_attacks_keep_to_their_tasks(tmp_path, base):
    """`method: none` (CI's dogfood recipe): the runs use the base checkpoint as it is."""
    ft = {"method": "finetune", "steps": 1, "batch_size": 4, "train_size": 8, "eval_size": 4, "tasks": ["shapes-vqa"]}
    p = _recipe(
        tmp_path,
        base,
        tuning=[{"method": "none"}, ft],
        tasks=["shapes-vqa", "shapes-caption"],
        examples=4,
        attacks=[
            {"attack": "fgsm", "eps": ["8/255"]},
            {"attack": "emb-fgsm", "eps": [0.1], "tasks": ["shapes-caption"]},
        ],
    )
    r = load_recipe(p)
    assert [(t.name, t.tuning) for t in r.tuning][0] == ("base", None)
    out = run_recipe(p, tmp_path / "rep", log=lambda *_: None)
    assert sorted(d.name for d in (tmp_path / "zoo").iterdir()) == ["finetune-shapes-vqa"]  # the base: not copied
    assert sorted(d.name for d in (out / "runs").iterdir()) == [  # each only where it was asked for
        "shapes-caption_base_emb-fgsm",
        "shapes-caption_base_fgsm",
        "shapes-vqa_base_fgsm",
        "shapes-vqa_finetune_fgsm",
    ]
    run = json.loads((out / "runs" / "shapes-vqa_base_fgsm" / "run.json").read_text())
    assert run["checkpoint"]["sha256"] == {ckpt.WEIGHTS: ckpt.sha256_file(base / ckpt.WEIGHTS)}, run["checkpoint"]


def test_runs_of_an_untuned_base_are_redone_when_the_base_is_rebuilt(tmp_path, base):
    """`method: none` entries: a run is kept only while the base's weights are the ones it attacked; a run of a
    base rebuilt since is refused in one line (as a tuned entry's run whose schedule changed), never kept."""
    own = tmp_path / "own-base"
    shutil.copytree(base, own)
    p = _recipe(tmp_path, own, tuning=[{"method": "none"}], attacks=[{"attack": "fgsm", "eps": ["8/255"]}], examples=4)
    run_recipe(p, tmp_path / "rep", log=lambda *_: None)
    kept: list = []
    run_recipe(p, tmp_path / "rep", log=kept.append)
    assert any("1 runs complete" in line for line in kept), kept
    torch.manual_seed(1)  # the base rebuilt in place: other weights, same name
    ckpt.save(build("tiny", vocab=list(WORDS) + bin_tokens()), own, {"method": "pretrain", "task": None})
    from robust_pt.errors import RunDirError

    redone: list = []
    with pytest.raises(RunDirError, match="different config"):  # not kept, and not overwritten: delete it to redo
        run_recipe(p, tmp_path / "rep", log=redone.append)
    assert not any("runs complete" in line for line in redone), redone


def test_an_attack_entry_runs_on_the_tuning_entries_it_names(tmp_path, base):
    """`tuning: [prompt]` on an attack entry: an expensive attack on a few models only."""
    attacks = [{"attack": "fgsm", "eps": ["8/255"]}, {"attack": "emb-fgsm", "eps": [0.1], "tuning": ["prompt"]}]
    r = load_recipe(_recipe(tmp_path, base, attacks=attacks))
    assert sorted(run.name for run in r.runs()) == [
        "shapes-vqa_finetune_fgsm",
        "shapes-vqa_prompt_emb-fgsm",
        "shapes-vqa_prompt_fgsm",
    ]
    for bad, needle in (([], "non-empty list"), (["lora"], "'lora' is not a tuning entry"), ("prompt", "list")):
        attacks[1]["tuning"] = bad
        with pytest.raises(ConfigError, match=needle):
            load_recipe(_recipe(tmp_path, base, attacks=attacks))


def test_an_adversarial_entry_trains_on_the_engine_attack_and_the_report_names_its_variant(tmp_path, base):
    """`adversarial:` in a tuning entry: its checkpoint, its runs' model_meta and the report all say how it was
    tuned; a second run keeps every run (the settings are part of what "made as the recipe says" means)."""
    sched = {"steps": 2, "batch_size": 4, "train_size": 16, "eval_size": 8}
    tuning = [
        {"method": "finetune", **sched},
        {
            "method": "finetune",
            "name": "finetune-adv",
            **sched,
            "adversarial": {"attack": "pgd", "eps": "4/255", "steps": 1},
        },
    ]
    p = _recipe(tmp_path, base, tuning=tuning, attacks=[{"attack": "fgsm", "eps": ["8/255"]}], examples=8)
    logs: list = []
    out = run_recipe(p, tmp_path / "rep", log=logs.append)
    meta = json.loads((tmp_path / "zoo" / "finetune-adv-shapes-vqa" / "meta.json").read_text())
    assert meta["adversarial"]["steps"] == 1 and meta["identity"]["adversarial"] == meta["adversarial"]
    run = json.loads((out / "runs" / "shapes-vqa_finetune-adv_fgsm" / "run.json").read_text())
    assert run["model_meta"]["adversarial"] == meta["adversarial"]
    import pandas as pd

    summary = pd.read_csv(out / "summary.csv")
    assert sorted(summary["variant"].fillna("")) == ["", "adversarial 4/255"]
    run_recipe(p, tmp_path / "rep", log=(again := []).append)
    assert any("2 runs complete" in line for line in again), again


def test_a_transfer_entry_runs_one_source_per_run_and_crafts_each_source_once(tmp_path, base):
    """`surrogate: [finetune, prompt, finetune+prompt]`: a run per (source, target); the crafted inputs of a
    source are made at its first target and reused by the other (the stats count the crafting passes)."""
    pgd = {"attack": "pgd", "eps": ["8/255"], "steps": 2, "surrogate": ["finetune", "prompt", "finetune+prompt"]}
    p = _recipe(tmp_path, base, attacks=[pgd], examples=20, task_examples={"shapes-vqa": 8})
    out = run_recipe(p, tmp_path / "rep", log=lambda *_: None)
    names = sorted(d.name for d in (out / "runs").iterdir())
    assert names == sorted(
        f"shapes-vqa_{t}_pgd-from-{s}"
        for t in ("finetune", "prompt")
        for s in ("finetune", "prompt", "finetune+prompt")
    )
    files = list((out / "crafted").rglob("*.safetensors"))
    for s in ("finetune", "prompt", "finetune+prompt"):
        metas = [
            json.loads((out / "runs" / f"shapes-vqa_{t}_pgd-from-{s}" / "run.json").read_text())
            for t in ("finetune", "prompt")
        ]
        assert [x["label"] for x in metas[0]["config"]["surrogates"]] == s.split("+")
        # a (batch, eps) is crafted when a target first needs it (it has examples to attack), then reused
        crafted = [m["stats"].get("crafted", 0) for m in metas]
        assert sum(crafted) <= 2  # never twice (tests/test_transfer.py counts the reuse on a trained model)
    assert len(files) == len({f.name + f.parent.name for f in files}) <= 3 * 2  # 8 examples in batches of 4
    assert (out / "transfer.csv").exists() and "## Transfer attacks" in (out / "report.md").read_text()
    shutil.rmtree(out / "crafted")  # a fresh clone has no crafted inputs: the runs are complete and report alike
    assert _summary(run_recipe(p, out, log=lambda *_: None)) == _summary(out)


def test_complete_runs_need_no_checkpoint_and_an_edited_entry_is_redone(tmp_path, base):
    """A fresh clone holds the committed runs but no zoo: running the recipe again rebuilds nothing and
    writes the same report; an attack entry edited since (its eps) is run again, with its checkpoints; a run
    whose checkpoint's schedule changed is not kept (the store then refuses it in place: delete it)."""
    p = _recipe(tmp_path, base)
    out = run_recipe(p, tmp_path / "rep", log=lambda *_: None)
    first = _summary(out)
    shutil.rmtree(tmp_path / "zoo")
    lines = []
    run_recipe(p, out, log=lines.append)
    assert not (tmp_path / "zoo").exists() and _summary(out) == first
    assert any("4 runs complete" in ln for ln in lines)
    edited = _recipe(
        tmp_path, base, attacks=[{"attack": "fgsm", "eps": ["8/255"]}, {"attack": "emb-fgsm", "eps": [0.1]}]
    )
    for m in ("finetune", "prompt"):  # (the store refuses a changed config in place)
        shutil.rmtree(out / "runs" / f"shapes-vqa_{m}_fgsm")
    lines = []
    run_recipe(edited, out, log=lines.append)
    assert any("2 runs complete" in ln for ln in lines)  # the emb-fgsm runs
    assert sorted(d.name for d in (tmp_path / "zoo").iterdir()) == ["finetune-shapes-vqa", "prompt-shapes-vqa"]
    longer = yaml.safe_load(edited.read_text())
    longer["tuning"][0]["steps"] = 3  # finetune's schedule changed (run.json records it): not kept as it is
    edited.write_text(yaml.safe_dump(longer))
    shutil.rmtree(tmp_path / "zoo")
    from robust_pt.errors import RunDirError

    with pytest.raises(RunDirError, match="shapes-vqa_finetune_.*different config"):
        run_recipe(edited, out, log=lambda *_: None)


def test_the_ci_smoke_baseline_covers_exactly_the_ci_smoke_recipe():
    """`make dogfood` checks recipes/ci-smoke.yaml against reports/ci-smoke-baseline.json: a
    recipe edited without re-making the baseline would fail CI with "not measured now"."""
    from robust_pt.attacks import build as build_attack
    from robust_pt.report.check import load_baseline

    root = Path(__file__).resolve().parents[1]
    r = load_recipe(root / "recipes" / "ci-smoke.yaml")
    want = {
        (task, a.attack, round(eps, 10))
        for task in r.tasks
        for a in r.attacks
        for eps in build_attack(a.attack, **dict(a.overrides)).eps_grid(None if a.eps is None else list(a.eps))
    }
    base = load_baseline(root / "reports" / "ci-smoke-baseline.json")
    got = {(m["task"], m["attack"].split("[")[0], round(float(m["eps"]), 10)) for m in base["metrics"]}  # pgd[steps=5]
    assert got == want
    assert {m["n"] for m in base["metrics"]} == {r.examples}
