"""`robust-pt train --base HF_DIR --method lora|prompt|ia3|finetune` (robust_pt/tuning/hf_train.py).

The tuned directories are in the standard formats (plain transformers / peft load them
and compute the same logits as robust-pt) and `robust-pt attack` attacks them with pgd
and deepwordbug on the task they were tuned on. Tiny models, a few steps each.
"""

from __future__ import annotations

import json

import pytest
import torch

from robust_pt.tasks.shapes_tasks import PRETRAIN_ANSWERS
from tests.test_cli_attack import assert_one_line_error, invoke

FAST = ["--steps", 3, "--batch-size", 8, "--train-size", 32, "--eval-size", 8, "--threads", 1, "--device", "cpu"]


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    from robust_pt.models.hf_tiny import save_tiny

    root = tmp_path_factory.mktemp("hf-bases")
    return {
        "vilt": save_tiny("vilt", root / "vilt", answers=PRETRAIN_ANSWERS),
        "vilt-small-head": save_tiny("vilt", root / "vilt-small-head", answers=["yes", "no"]),
        "blip": save_tiny("blip", root / "blip"),
        "clip": save_tiny("clip", root / "clip"),
    }


def _train(base, out, method, task="shapes-vqa", *extra):
    return invoke("train", "--base", base, "--task", task, "--method", method, "--out", out, *FAST, *extra)


def _attack_both(model_dir, tmp_path, expect_method):
    for attack, extra in (("pgd", ["--eps", "8/255", "--steps", "2"]), ("deepwordbug", ["--query-budget", "40"])):
        out = tmp_path / f"run-{attack}"
        r = invoke(
            "attack", "--model", model_dir, "--attack", attack, "--limit", 4, "--device", "cpu", "--out", out, *extra
        )  # no --task: the one it was tuned on
        assert r.exit_code == 0, (attack, r.output)
        run = json.loads((out / "run.json").read_text())
        assert run["config"]["task"]["name"] == "shapes-vqa" and run["config"]["model"]["method"] == expect_method


@pytest.mark.parametrize("method", ["lora", "prompt", "ia3"])
def test_peft_methods_save_standard_adapters(bases, tmp_path, method):
    import peft
    from transformers import AutoProcessor, ViltForQuestionAnswering

    from robust_pt.api import load_model

    out = tmp_path / method
    r = _train(bases["vilt"], out, method, "shapes-vqa", "--prompt-length", 4, "--lora-r", 4)
    assert r.exit_code == 0, r.output
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["peft_type"] == {"lora": "LORA", "prompt": "PROMPT_TUNING", "ia3": "IA3"}[method]
    assert cfg["base_model_name_or_path"] == str(bases["vilt"].resolve())
    meta = json.loads((out / "robust_pt.json").read_text())
    assert meta["method"] == method and meta["task"] == "shapes-vqa" and 0 < meta["trainable_fraction"] < 0.2
    assert "accuracy" in meta["clean_metrics"]
    # plain peft on plain transformers computes what robust-pt computes
    import numpy as np
    from PIL import Image

    img = Image.fromarray((np.random.default_rng(1).random((32, 32, 3)) * 255).astype(np.uint8))
    proc = AutoProcessor.from_pretrained(bases["vilt"])
    inputs = proc(images=img, text="what color is the circle?", return_tensors="pt")
    net = peft.PeftModel.from_pretrained(ViltForQuestionAnswering.from_pretrained(bases["vilt"]), out).eval()
    m = load_model(out, device="cpu")
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        assert torch.allclose(
            net(**inputs).logits, m.label_logits_from_embeds(m.embed(x, ["what color is the circle?"])), atol=1e-4
        )
    _attack_both(out, tmp_path, method)


def test_finetune_adds_answers_to_the_head(bases, tmp_path):
    from transformers import AutoProcessor, ViltForQuestionAnswering

    from robust_pt.tasks import VQA_ANSWERS

    out = tmp_path / "ft"
    r = _train(bases["vilt-small-head"], out, "finetune")
    assert r.exit_code == 0, r.output
    net = ViltForQuestionAnswering.from_pretrained(out)  # plain transformers
    assert set(VQA_ANSWERS) <= set(net.config.id2label.values()) and net.config.id2label[0] == "yes"
    assert AutoProcessor.from_pretrained(out).tokenizer is not None
    meta = json.loads((out / "robust_pt.json").read_text())
    assert meta["trainable_fraction"] == 1.0 and "red" in meta["answers_added_to_head"]
    _attack_both(out, tmp_path, "finetune")
    # lora keeps the head: a base without the task's answers is refused
    assert_one_line_error(
        _train(bases["vilt-small-head"], tmp_path / "x", "lora"), "id2label lacks", "--method finetune"
    )


@pytest.mark.parametrize(
    "arch,method,task",
    [("blip", "lora", "shapes-vqa"), ("clip", "ia3", "shapes-ve"), ("blip", "finetune", "shapes-caption")],
)
def test_blip_and_clip(bases, tmp_path, arch, method, task):
    out = tmp_path / f"{arch}-{method}"
    r = _train(bases[arch], out, method, task)
    assert r.exit_code == 0, r.output
    r = invoke(
        "attack",
        "--model",
        out,
        "--attack",
        "pgd",
        "--limit",
        2,
        "--eps",
        "4/255",
        "--steps",
        "1",
        "--device",
        "cpu",
        "--out",
        tmp_path / "run",
    )
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("method,lr,drop", [("finetune", 1e-3, 0.1), ("lora", 3e-2, 0.0)])
def test_training_lowers_the_loss(bases, tmp_path, method, lr, drop):
    """Loss over the first vs last 10 steps (a random base's frozen head limits what LoRA can move)."""
    from robust_pt.tuning.hf_train import HFTrainConfig, train_hf

    meta = train_hf(
        bases["vilt"],
        "shapes-vqa",
        HFTrainConfig(method=method, steps=50, batch_size=16, lr=lr, train_size=256, eval_size=0, device="cpu"),
        tmp_path / method,
        log=lambda *_: None,
    )
    assert meta["final_loss"] < meta["initial_loss"] - drop, (meta["initial_loss"], meta["final_loss"])


def test_train_on_a_real_dataset(bases, tmp_path):
    """LoRA on VQAv2 files (train and val pairs in one directory): trains on train, evaluates on val;
    the question whose answer ("2") is not in ViLT's id2label is skipped in the loss."""
    from tests.test_datasets import write_vqav2

    root = write_vqav2(tmp_path / "vqa", subtype="train2014")
    write_vqav2(root, subtype="val2014")
    out = tmp_path / "lora"
    r = invoke(
        "train",
        "--base",
        bases["vilt"],
        "--task",
        f"vqav2:{root}",
        "--method",
        "lora",
        "--out",
        out,
        "--steps",
        2,
        "--batch-size",
        4,
        "--eval-size",
        3,
        "--threads",
        1,
        "--device",
        "cpu",
    )
    assert r.exit_code == 0, r.output
    meta = json.loads((out / "robust_pt.json").read_text())
    assert meta["task"] is None and meta["task_spec"] == f"vqav2:{root}" and meta["eval_split"] == "val"
    assert set(meta["clean_metrics"]) == {"vqa-accuracy"} and meta["eval_size"] == 3
    r = invoke(
        "attack",
        "--model",
        out,
        "--task",
        f"vqav2:{root}",
        "--split",
        "val",
        "--attack",
        "pgd",
        "--limit",
        2,
        "--eps",
        "2/255",
        "--steps",
        "1",
        "--device",
        "cpu",
        "--out",
        tmp_path / "run",
    )
    assert r.exit_code == 0, r.output


def test_rerun_reuses_and_different_config_is_refused(bases, tmp_path):
    out = tmp_path / "lora"
    assert _train(bases["vilt"], out, "lora").exit_code == 0
    r = _train(bases["vilt"], out, "lora")
    assert r.exit_code == 0 and "reusing" in r.output
    assert_one_line_error(_train(bases["vilt"], out, "ia3"), "holds a different checkpoint", "--overwrite")
    r = _train(bases["vilt"], out, "ia3", "shapes-vqa", "--overwrite")
    assert r.exit_code == 0, r.output
    assert json.loads((out / "adapter_config.json").read_text())["peft_type"] == "IA3"


def test_bad_train_input(bases, tmp_path):
    assert_one_line_error(_train(bases["clip"], tmp_path / "a", "prompt"), "--method prompt needs a ViLT base")
    assert_one_line_error(_train(bases["vilt"], tmp_path / "b", "adapter"), "built-in-model methods")
    assert_one_line_error(
        _train(bases["clip"], tmp_path / "c", "lora", "shapes-caption"), "CLIPModel cannot serve the caption task"
    )
    assert _train(bases["vilt"], tmp_path / "lora", "lora").exit_code == 0
    assert_one_line_error(_train(tmp_path / "lora", tmp_path / "d", "lora"), "is a peft adapter")
