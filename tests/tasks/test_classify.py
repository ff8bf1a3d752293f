"""Zero-shot classification: the ShapesWorld class sets, what the kind asks of a model, base-to-novel
evaluation, and the CLI path a user takes (train a learner on base classes, attack it on novel ones)."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from robust_pt.attacks import build
from robust_pt.attacks.image import run_image_attack
from robust_pt.attacks.objectives import ClosedImage
from robust_pt.errors import TaskError
from robust_pt.models.predict import images_of
from robust_pt.tasks import load_task
from robust_pt.tasks.classify import BASE_CLASSES, NOVEL_CLASSES, OBJECT_CLASSES, check_classes, check_template
from robust_pt.tasks.kinds import declarations
from robust_pt.tasks.vocab import COLOURS, SHAPES
from tests._cli import assert_one_line_error, invoke


def test_base_and_novel_are_disjoint_halves_sharing_every_word():
    assert set(BASE_CLASSES) | set(NOVEL_CLASSES) == set(OBJECT_CLASSES) and len(OBJECT_CLASSES) == 15
    assert not set(BASE_CLASSES) & set(NOVEL_CLASSES) and (len(BASE_CLASSES), len(NOVEL_CLASSES)) == (8, 7)
    for half in (BASE_CLASSES, NOVEL_CLASSES):
        words = {w for name in half for w in name.split()}
        assert set(COLOURS) | set(SHAPES) <= words


@pytest.mark.parametrize("name", ["shapes-objects", "shapes-objects-base", "shapes-objects-novel", "shapes-counting"])
def test_class_sets_label_what_the_scene_shows(name):
    task = load_task(name, split="val", limit=120, size=48)
    assert task.kind == "classify" and task.metric == "accuracy"
    exs = [task[i] for i in range(len(task))]
    assert all(task.answers[ex.label] == ex.target and "{}" in ex.text for ex in exs)
    counts = Counter(ex.target for ex in exs)
    assert set(counts) == set(task.answers) and max(counts.values()) <= min(counts.values()) + 2  # balanced
    again = load_task(name, split="val", limit=3, size=48)
    assert all(again[i].image.tobytes() == task[i].image.tobytes() for i in range(3))
    decl = declarations(task)
    assert decl["kind"] == "classify" and decl["candidates"] == len(task.answers) and decl["text_label"] == "Prompt"


def test_object_scenes_hold_the_one_object_their_label_names():
    task = load_task("shapes-objects-novel", split="test", limit=30, size=48)
    import numpy as np

    from robust_pt.tasks.shapes import COLOUR_RGB

    for i in range(30):
        ex = task[i]
        colour = ex.target.split()[0]
        rgb = np.array(COLOUR_RGB[colour])[:, None, None]
        assert (np.abs(ex.image - rgb).max(0) < 0.2).sum() > 20  # the named colour is painted


@pytest.mark.parametrize(
    "names, needle",
    [([], "empty"), (["red circle", ""], "empty"), (["red circle", "Red Circle"], "appears twice")],
)
def test_bad_class_lists_are_refused(names, needle):
    with pytest.raises(TaskError, match=needle):
        check_classes(names, "classnames.txt")


def test_a_template_holds_one_slot():
    assert check_template("a {}", "t") == "a {}"
    for bad in ("a picture", "{} and {}"):
        with pytest.raises(TaskError, match="exactly one"):
            check_template(bad, "t")


def test_pgd_on_the_dual_encoder_stays_in_its_ball():
    from robust_pt.models.miniclip import build as build_clip
    from robust_pt.tasks.vocab import WORDS

    torch.manual_seed(0)
    model = build_clip("tiny", vocab=WORDS).eval()
    task = load_task("shapes-objects-base", split="val", limit=6, size=48)
    exs = [task[i] for i in range(6)]
    x, y = images_of(exs), torch.tensor([ex.label for ex in exs])
    obj = ClosedImage(model, [ex.text for ex in exs], task.answers, y)
    eps = 8 / 255
    r = run_image_attack(build("pgd", steps=3).spec, obj, x, eps, seeds=list(range(6)), batch_seed=0)
    assert float(r.adv.min()) >= 0 and float(r.adv.max()) <= 1
    assert float((r.adv - x).abs().max()) <= eps + 1e-6


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """A tiny CLIP base made by the CLI (a few contrastive steps: only the plumbing is tested)."""
    out = tmp_path_factory.mktemp("clipcli") / "base"
    r = invoke("pretrain", "--arch", "clip", "--preset", "tiny", "--steps", 4, "--batch-size", 16,
               "--eval-size", 8, "--threads", 1, "--out", out)  # fmt: skip
    assert r.exit_code == 0, r.output
    meta = json.loads((out / "meta.json").read_text())
    assert meta["architecture"] == "mini-clip" and set(meta["clean_metrics"]) >= {"shapes-objects-novel"}
    return out


def test_train_on_base_classes_then_attack_novel_ones(clip_dir, tmp_path):
    """The issue's two commands: a coop learner tuned on base classes is attacked on novel classes."""
    ck, run = tmp_path / "coop", tmp_path / "run"
    r = invoke("train", "--base", clip_dir, "--task", "shapes-objects-base", "--method", "coop", "--steps", 3,
               "--batch-size", 8, "--eval-size", 16, "--threads", 1, "--out", ck)  # fmt: skip
    assert r.exit_code == 0, r.output
    meta = json.loads((ck / "meta.json").read_text())
    assert meta["method"] == "coop" and meta["answers"] == list(BASE_CLASSES) and meta["trainable_params"] == 4 * 64
    r = invoke("attack", "--model", ck, "--task", "shapes-objects-novel", "--attack", "pgd", "--eps", "4/255",
               "--limit", 8, "--out", run)  # fmt: skip
    assert r.exit_code == 0, r.output
    cfg = json.loads((run / "run.json").read_text())["config"]
    assert cfg["task"]["name"] == "shapes-objects-novel" and cfg["task"]["kind"] == "classify"
    records = [json.loads(line) for line in (run / "records.jsonl").read_text().splitlines()]
    assert len({r["id"] for r in records if "id" in r}) == 8
    assert all(r["linf"] <= 4 / 255 + 1e-6 for r in records if "linf" in r)


@pytest.mark.parametrize(
    "args, needles",
    [
        (["train", "--base", "builtin:base-small", "--task", "shapes-objects-base", "--method", "lora"],
         ["classify tasks need a dual encoder", "mini-ofa is not one"]),
        (["attack", "--model", "builtin:base-small", "--task", "shapes-counting", "--attack", "pgd"],
         ["classify tasks need a dual encoder"]),
        (["train", "--base", "CLIP", "--task", "shapes-vqa", "--method", "coop"],
         ["mini-clip cannot serve the closed task shapes-vqa"]),
        (["train", "--base", "CLIP", "--task", "shapes-objects", "--method", "prompt"],
         ["tuning method prompt tunes mini-ofa bases"]),
        (["train", "--base", "CLIP", "--task", "shapes-objects", "--method", "coop", "--coop-init", "a picture"],
         ["coop init 'a picture' has 2 words but coop context is 4"]),
        (["pretrain", "--arch", "clip", "--init", "builtin:base-small"], ["--init BASE and --adversarial go together"]),
    ],
)  # fmt: skip
def test_bad_input_is_one_line(clip_dir, tmp_path, args, needles):
    args = [clip_dir if a == "CLIP" else a for a in args]
    assert_one_line_error(invoke(*args, "--out", tmp_path / "out"), *needles)
    assert not (tmp_path / "out").exists()


def test_a_vqa_model_is_still_not_attacked_on_another_task(tiny_vqa_dir, tmp_path):
    """Open classes are the classify kind's: a VQA model on VE is refused as before."""
    r = invoke("attack", "--model", tiny_vqa_dir, "--task", "shapes-ve", "--attack", "pgd", "--out", tmp_path / "r")
    assert_one_line_error(r, "was tuned on shapes-vqa, not shapes-ve")


def test_the_kind_refuses_models_without_a_text_encoder_for_classes(tiny_vqa):
    from robust_pt.tasks.kinds import refusal

    task = load_task("shapes-objects", split="val", limit=2, size=tiny_vqa.image_size)
    assert "need a dual encoder" in refusal(tiny_vqa, task)
    with pytest.raises(TaskError, match="need a dual encoder"):
        import robust_pt

        robust_pt.evaluate(tiny_vqa, task=task, attack="fgsm", eps=[2 / 255])  # before its own task is asked


def _recipe(tmp_path, evaluate_on, tasks=("shapes-objects-base",), base=None):
    import yaml

    from robust_pt.models.miniclip import build as build_clip
    from robust_pt.tasks.vocab import WORDS
    from robust_pt.tuning import checkpoint as ckpt

    if base is None:
        base = tmp_path / "clip-base"
        ckpt.save(build_clip("tiny", vocab=WORDS), base, {"method": "pretrain", "name": "clip-tiny"})
    p = tmp_path / "clip.yaml"
    p.write_text(yaml.safe_dump({
        "base": str(base), "tasks": list(tasks), "evaluate_on": evaluate_on,
        "tuning": [{"method": "coop", "steps": 2}], "attacks": ["pgd"],
    }))  # fmt: skip
    return p


def test_a_recipe_attacks_models_tuned_on_base_classes_on_novel_ones(tmp_path):
    from robust_pt.recipe import load_recipe

    r = load_recipe(_recipe(tmp_path, {"shapes-objects-base": ["shapes-objects-base", "shapes-objects-novel"]}))
    runs = {run.name: (run.task, run.trained) for run in r.runs()}
    assert runs == {
        "shapes-objects-base_coop_pgd": ("shapes-objects-base", "shapes-objects-base"),
        "shapes-objects-novel_coop_pgd": ("shapes-objects-novel", "shapes-objects-base"),
    }
    assert r.checkpoints() == [("shapes-objects-base", r.tuning[0])]  # one model, two class sets


@pytest.mark.parametrize(
    "evaluate_on, tasks, needle",
    [
        ({"shapes-objects-base": ["shapes-vqa"]}, None, "is not a classify task with open classes"),
        ({"shapes-objects": ["shapes-objects-novel"]}, None, "is not one of the recipe's tasks"),
        ({"shapes-objects-base": ["shapes-objects-novel"]}, ("shapes-objects-base", "shapes-objects-novel"),
         "is tuned on itself"),
        ({"shapes-objects-base": []}, None, "non-empty list"),
    ],
)  # fmt: skip
def test_a_bad_evaluate_on_is_one_line(tmp_path, evaluate_on, tasks, needle):
    from robust_pt.errors import ConfigError
    from robust_pt.recipe import load_recipe

    with pytest.raises(ConfigError, match=needle):
        load_recipe(_recipe(tmp_path, evaluate_on, tasks or ("shapes-objects-base",)))


def test_a_recipe_refuses_a_learner_or_task_its_base_cannot_take(tmp_path):
    from robust_pt.errors import ConfigError
    from robust_pt.recipe import load_recipe

    with pytest.raises(ConfigError, match="tuning entry coop on shapes-objects-base .*mini-ofa.*need a dual encoder"):
        load_recipe(_recipe(tmp_path, None, base="builtin:base-small"))


def test_a_linear_probe_scores_its_own_classes_only(clip_dir, tmp_path):
    """Its head is sized by the task's classes, recorded in its options; novel classes are refused in one line."""
    import robust_pt

    ck = tmp_path / "probe"
    r = invoke("train", "--base", clip_dir, "--task", "shapes-objects-base", "--method", "linear-probe",
               "--steps", 3, "--batch-size", 8, "--eval-size", 8, "--threads", 1, "--out", ck)  # fmt: skip
    assert r.exit_code == 0, r.output
    meta = json.loads((ck / "meta.json").read_text())
    assert meta["tuning"]["probe_classes"].split("|") == list(BASE_CLASSES)
    assert meta["trainable_params"] == len(BASE_CLASSES) * (64 + 1)
    model = robust_pt.load_model(ck)
    task = load_task("shapes-objects-base", split="test", limit=4, size=48)
    x = images_of([task[i] for i in range(4)])
    with torch.no_grad():
        assert model.candidate_logits(x, [task[0].text] * 4, task.answers).shape == (4, len(BASE_CLASSES))
    r = invoke("attack", "--model", ck, "--task", "shapes-objects-novel", "--attack", "pgd", "--limit", 4,
               "--out", tmp_path / "run")  # fmt: skip
    assert_one_line_error(r, "a linear probe scores the 8 classes it was trained on")
    assert not (tmp_path / "run").exists()  # refused before the run directory is written


def test_a_recipe_knows_what_a_linear_probe_checkpoint_records(tmp_path):
    """A recipe entry of a method sized by its task's classes expects the classes the checkpoint records, so its
    finished runs are kept, not redone."""
    import yaml

    from robust_pt.recipe import load_recipe, tuning_record
    from robust_pt.tuning.train import tune

    p = _recipe(tmp_path, None)
    raw = yaml.safe_load(p.read_text())
    raw["tuning"] = [{"method": "linear-probe", "steps": 2, "batch_size": 4, "eval_size": 4}]
    p.write_text(yaml.safe_dump(raw))
    r = load_recipe(p)
    entry = r.tuning[0]
    meta = tune(r.base, "shapes-objects-base", entry.tuning, entry.train, tmp_path / "probe", log=lambda *_: None)
    assert meta["tuning"] == tuning_record(entry, "shapes-objects-base") and meta["tuning"]["probe_classes"]


def test_a_recipe_with_evaluate_on_runs_resumes_and_reports(tmp_path):
    """One tuned task, two attacked class sets: the report holds both (tasks are mixed), transfer from the
    untuned base crafts on the attacked classes, a linear probe (its own classes only) is attacked on base
    classes alone, and a second run keeps every finished run."""
    import yaml

    from robust_pt.recipe import run_recipe

    p = _recipe(tmp_path, {"shapes-objects-base": ["shapes-objects-base", "shapes-objects-novel"]})
    raw = yaml.safe_load(p.read_text())
    schedule = {"steps": 2, "batch_size": 4, "eval_size": 4}
    raw.update(examples=4, batch_size=4, zoo=str(tmp_path / "zoo"),
               tuning=[{"method": "none", "name": "base"}, {"method": "coop", **schedule},
                       {"method": "linear-probe", **schedule}],
               attacks=[{"attack": "pgd", "eps": ["2/255"], "steps": 2},
                        {"attack": "pgd", "eps": ["8/255"], "steps": 2, "surrogate": ["base"]}])  # fmt: skip
    p.write_text(yaml.safe_dump(raw))
    out = run_recipe(p, tmp_path / "report", log=lambda *_: None)
    runs = sorted(d.name for d in (out / "runs").iterdir())
    assert runs == sorted(
        f"{task}_{model}_{attack}"
        for task in ("shapes-objects-base", "shapes-objects-novel")
        for model in ("base", "coop", "linear-probe")
        for attack in ("pgd", "pgd-from-base")
        if not (model == "linear-probe" and task.endswith("novel"))
    )
    cfg = json.loads((out / "runs" / "shapes-objects-novel_coop_pgd" / "run.json").read_text())
    assert (
        cfg["config"]["task"]["name"] == "shapes-objects-novel" and cfg["model_meta"]["task"] == "shapes-objects-base"
    )
    transfer = json.loads((out / "runs" / "shapes-objects-novel_coop_pgd-from-base" / "run.json").read_text())
    assert transfer["config"]["task"]["name"] == "shapes-objects-novel" and transfer["surrogates"]
    _check_base_novel(out)
    said = []
    run_recipe(p, tmp_path / "report", log=said.append)
    assert any(f"{len(runs)} runs complete" in s for s in said), said


def test_a_surrogate_tuned_on_base_classes_crafts_on_novel_ones_and_a_probe_cannot(clip_dir, tmp_path):
    """Transfer on an open-class task: a prompt learner tuned on base classes reads novel class names, so it is
    a surrogate there; a linear probe scores its own classes only and is refused in one line."""
    for method in ("coop", "linear-probe"):
        r = invoke("train", "--base", clip_dir, "--task", "shapes-objects-base", "--method", method, "--steps", 2,
                   "--batch-size", 4, "--eval-size", 4, "--threads", 1, "--out", tmp_path / method)  # fmt: skip
        assert r.exit_code == 0, r.output
    args = ["attack", "--model", tmp_path / "coop", "--task", "shapes-objects-novel", "--attack", "pgd",
            "--eps", "8/255", "--limit", 4]  # fmt: skip
    r = invoke(*args, "--surrogate", tmp_path / "coop", "--out", tmp_path / "ok")
    assert r.exit_code == 0, r.output
    run = json.loads((tmp_path / "ok" / "run.json").read_text())
    assert run["status"] == "complete" and run["config"]["task"]["name"] == "shapes-objects-novel"
    r = invoke(*args, "--surrogate", tmp_path / "linear-probe", "--out", tmp_path / "no")
    assert_one_line_error(r, "a linear probe scores the 8 classes it was trained on")


@pytest.mark.parametrize(
    "patch, needle",
    [
        ({"tasks": ["shapes-objects-base", "shapes-counting"],
          "evaluate_on": {"shapes-objects-base": ["shapes-objects"], "shapes-counting": ["shapes-objects"]}},
         "listed under two tuned tasks"),
    ],
)  # fmt: skip
def test_evaluate_on_refuses_shared_run_names(tmp_path, patch, needle):
    import yaml

    from robust_pt.errors import ConfigError
    from robust_pt.recipe import load_recipe

    p = _recipe(tmp_path, {"shapes-objects-base": ["shapes-objects-novel"]})
    raw = yaml.safe_load(p.read_text())
    raw.update(patch)
    p.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=needle):
        load_recipe(p)


def test_a_word_attack_on_a_learned_prompt_is_refused(clip_dir, tmp_path):
    ck = tmp_path / "coop"
    r = invoke("train", "--base", clip_dir, "--task", "shapes-objects-base", "--method", "coop", "--steps", 1,
               "--batch-size", 4, "--eval-size", 4, "--threads", 1, "--out", ck)  # fmt: skip
    assert r.exit_code == 0, r.output
    r = invoke("attack", "--model", ck, "--attack", "deepwordbug", "--limit", 2, "--out", tmp_path / "run")
    assert_one_line_error(r, "reads a learned prompt instead of them")
    assert not (tmp_path / "run").exists()


def _check_base_novel(out):
    """The report pairs each model's base-class and novel-class runs (the untuned base too) with their harmonic
    mean, in base_novel.csv, summary.json and the document."""
    import pandas as pd

    from robust_pt.report.base_novel import harmonic

    bn = pd.read_csv(out / "base_novel.csv")
    summary = pd.read_csv(out / "summary.csv")
    assert set(bn["model"]) == {"clip-base", "coop-shapes-objects-base"}  # the linear probe: no novel classes
    assert set(bn["base_task"]) == {"shapes-objects-base"} and set(bn["novel_task"]) == {"shapes-objects-novel"}
    assert len(bn) == 2 * 2  # two models x two threats (pgd at 2/255, pgd from base at 8/255)
    for _, r in bn.iterrows():
        for side, task in (("base", "shapes-objects-base"), ("novel", "shapes-objects-novel")):
            row = summary[
                (summary["task"] == task) & (summary["model"] == r["model"]) & (summary["attack"] == r["attack"])
            ]
            assert row["robust"].item() == pytest.approx(r[f"{side}_robust"])
        assert r["hm_robust"] == pytest.approx(harmonic(r["base_robust"], r["novel_robust"]))
    assert json.loads((out / "summary.json").read_text())["base_novel"]
    assert "Base-to-novel classes" in (out / "report.md").read_text()


def test_the_harmonic_mean_of_base_and_novel():
    from robust_pt.report.base_novel import harmonic

    assert harmonic(1.0, 0.5) == pytest.approx(2 / 3) and harmonic(0.0, 0.0) == 0.0 and harmonic(0.8, 0.0) == 0.0
    assert harmonic(float("nan"), 0.5) != harmonic(float("nan"), 0.5)  # unknown stays unknown


def test_a_linear_probe_crafts_transfer_inputs_on_its_own_classes_only(tmp_path):
    """A transfer entry whose surrogate is a linear probe has no novel-class runs (it could not craft there), where
    the same attack from the untuned base has them for every target."""
    import yaml

    from robust_pt.recipe import load_recipe

    p = _recipe(tmp_path, {"shapes-objects-base": ["shapes-objects-base", "shapes-objects-novel"]})
    raw = yaml.safe_load(p.read_text())
    raw.update(tuning=[{"method": "none", "name": "base"}, {"method": "coop"}, {"method": "linear-probe"}],
               attacks=[{"attack": "pgd", "surrogate": ["base", "linear-probe"]}])  # fmt: skip
    p.write_text(yaml.safe_dump(raw))
    names = {run.name for run in load_recipe(p).runs()}
    assert {n for n in names if n.startswith("shapes-objects-novel")} == {
        "shapes-objects-novel_base_pgd-from-base",
        "shapes-objects-novel_coop_pgd-from-base",
    }
    assert "shapes-objects-base_coop_pgd-from-linear-probe" in names


def test_base_to_novel_pairs_each_model_with_the_task_it_was_tuned_on():
    """A model tuned on B and attacked on N pairs (B, N); one tuned on N and attacked on B pairs (N, B); untuned
    models join both; a model never attacked on the other task has no row."""
    from types import SimpleNamespace

    import pandas as pd

    from robust_pt.report.base_novel import base_novel_frame, task_pairs

    B, N = "shapes-objects-base", "shapes-objects-novel"
    runs = [SimpleNamespace(model=m, trained=tr, task=t, task_kind="classify")
            for m, tr, t in [("cB", B, B), ("cB", B, N), ("fN", N, N), ("fN", N, B), ("z", "", B), ("z", "", N),
                             ("only", B, B)]]  # fmt: skip
    assert task_pairs(runs) == {(B, N): {"cB", "z"}, (N, B): {"fN", "z"}}
    summary = pd.DataFrame([
        {"task": r.task, "model": r.model, "method": "coop", "attack": "pgd", "eps": 0.1, "kind": "image",
         "eps_label": "x", "n": 4, "clean": 1.0, "robust": 0.5 if r.task == B else 0.25} for r in runs
    ])  # fmt: skip
    bn = base_novel_frame(runs, summary)
    got = sorted(zip(bn["base_task"], bn["model"], bn["base_robust"], bn["novel_robust"]))
    assert got == [(B, "cB", 0.5, 0.25), (B, "z", 0.5, 0.25), (N, "fN", 0.25, 0.5), (N, "z", 0.25, 0.5)]
    assert bn["hm_robust"].tolist() == pytest.approx([1 / 3] * 4)
