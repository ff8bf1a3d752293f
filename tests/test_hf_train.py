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
    from robust_pt.testing.hf_tiny import save_tiny

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
    assert_one_line_error(
        _train(bases["clip"], tmp_path / "a", "prompt"), "--method prompt supports ViltForQuestionAnswering, Llava"
    )
    assert_one_line_error(_train(bases["vilt"], tmp_path / "b", "adapter"), "built-in-model methods")
    assert_one_line_error(
        _train(bases["clip"], tmp_path / "c", "lora", "shapes-caption"), "CLIPModel cannot serve the caption task"
    )
    assert _train(bases["vilt"], tmp_path / "lora", "lora").exit_code == 0
    assert_one_line_error(_train(tmp_path / "lora", tmp_path / "d", "lora"), "is a peft adapter")


def test_apt_on_vilt_trains_a_delta_that_changes_predictions_and_loads_on_its_base_only(bases, tmp_path):
    """APT after every ViltLayer attention (+ the VQA head): only those tensors are saved, the base's
    weights stay as they were, the loaded model computes what a freshly attached one does, the
    predictions move, a changed base is refused, and the attacks run on it."""
    import shutil

    from safetensors.torch import load_file
    from transformers import ViltForQuestionAnswering

    from robust_pt.api import load_model
    from robust_pt.models.hf.delta import context
    from robust_pt.models.predict import images_of
    from robust_pt.tasks import load_task
    from robust_pt.tuning.apt import APTOptions, attach_hf

    out = tmp_path / "apt"
    fast = ["--steps", 30, "--batch-size", 8, "--train-size", 64, "--eval-size", 8, "--threads", 1, "--device", "cpu"]
    r = invoke("train", "--base", bases["vilt"], "--task", "shapes-vqa", "--method", "apt", "--out", out, *fast,
               "--apt-prompts", 8, "--lr", "1e-2")  # fmt: skip
    assert r.exit_code == 0, r.output
    cfg = json.loads((out / "delta_config.json").read_text())
    assert (
        cfg["method"] == "apt"
        and cfg["options"]["apt_prompts"] == 8
        and cfg["architecture"] == "ViltForQuestionAnswering"
    )
    saved = load_file(str(out / "delta_model.safetensors"))
    n_layers = ViltForQuestionAnswering.from_pretrained(bases["vilt"]).config.num_hidden_layers
    assert sum(k.endswith(".attention.apt.prompts") for k in saved) == n_layers
    assert all(".attention.apt." in k or k.startswith("classifier.") for k in saved)
    meta = json.loads((out / "robust_pt.json").read_text())
    assert meta["method"] == "apt" and 0 < meta["trainable_fraction"] < 1

    model, base = load_model(out, device="cpu"), load_model(bases["vilt"], device="cpu")
    plain = dict(base.hf.named_parameters())
    for n, p in model.hf.named_parameters():  # the backbone as in the base
        if ".apt." not in n and not n.startswith("classifier."):
            assert torch.equal(p, plain[n]), n
    net = ViltForQuestionAnswering.from_pretrained(bases["vilt"])  # attach by hand, load the tensors
    attach_hf(APTOptions(apt_prompts=8), context("ViltForQuestionAnswering", net))
    net.load_state_dict(saved, strict=False)
    net.eval()
    task = load_task("shapes-vqa", split="test", limit=16, seed=0, size=model.image_size)
    ex = [task[i] for i in range(len(task))]
    x, q = images_of(ex, "cpu"), [e.text for e in ex]
    with torch.no_grad():
        logits = model.label_logits_from_embeds(model.embed(x, q))
        assert torch.equal(logits, load_model(out, device="cpu").label_logits_from_embeds(model.embed(x, q)))
        e = model.embed(x, q)
        mask = torch.ones(len(ex), e.image.shape[1], dtype=torch.long)
        out_hand = net.vilt(inputs_embeds=e.text, attention_mask=e.text_mask.long(), image_embeds=e.image,
                            pixel_mask=mask)  # fmt: skip
        assert torch.allclose(net.classifier(out_hand.pooler_output), logits, atol=1e-5)
        before = base.label_logits_from_embeds(base.embed(x, q)).argmax(-1)
    assert int((logits.argmax(-1) != before).sum()) >= 4  # 16 of 16 moved under seeds 0, 1 and 2
    _attack_both(out, tmp_path, "apt")

    changed = tmp_path / "vilt-changed"  # one backbone weight moved
    shutil.copytree(bases["vilt"], changed)
    other = ViltForQuestionAnswering.from_pretrained(changed)
    with torch.no_grad():
        other.vilt.encoder.layer[0].layernorm_before.weight.mul_(1.01)
    other.save_pretrained(changed, safe_serialization=True)
    relabelled = tmp_path / "vilt-relabelled"  # same weights, other labels: the tuned head would mean other answers
    shutil.copytree(bases["vilt"], relabelled)
    c = json.loads((relabelled / "config.json").read_text())
    c["id2label"] = {k: c["id2label"][j] for k, j in zip(c["id2label"], list(c["id2label"])[::-1])}
    (relabelled / "config.json").write_text(json.dumps(c))
    for b in (changed, relabelled):
        r = invoke("attack", "--model", out, "--base", b, "--attack", "pgd", "--limit", 2, "--eps", "2/255",
                   "--steps", "1", "--device", "cpu", "--out", tmp_path / "refused")  # fmt: skip
        assert_one_line_error(r, "was tuned on", "use the original base")
        assert not (tmp_path / "refused").exists()
    broken = tmp_path / "apt-broken"  # a tensor short
    shutil.copytree(out, broken)
    from safetensors.torch import save_file

    save_file(
        {k: v for k, v in saved.items() if not k.endswith("0.attention.apt.scale")}, broken / "delta_model.safetensors"
    )
    with pytest.raises(Exception, match="lacks"):
        load_model(broken, device="cpu")


def test_apt_on_another_architecture_is_refused_in_one_line(bases, tmp_path):
    """BLIP declares no attention site (ViLT, CLIP and SigLIP do)."""
    out = tmp_path / "apt"
    r = _train(bases["blip"], out, "apt", "shapes-vqa")
    assert_one_line_error(r, "--method apt supports ViltForQuestionAnswering, CLIPModel, SiglipModel")
    assert not out.exists()
