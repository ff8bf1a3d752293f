"""Hugging Face models and peft adapters behind the VLModel interface (robust_pt/models/hf*.py).

A module-wide zoo, built once: tiny ViLT, BLIP and CLIP models built from configs (BLIP's
vision initializer_range 0.02), saved with save_pretrained together with processors whose
tokenizers are built offline, and a LoRA and a prompt-tuning adapter on the ViLT saved by
peft. Checked: detection and loading; the wrappers compute what transformers / peft
compute from the processor's inputs (so the processor's normalisation really runs inside
the model); `robust-pt attack` with pgd and deepwordbug on every one of them and on real
dataset formats; eps is an L-inf ball in [0, 1] pixel space for every model type (and
every image backend); embedding attacks; bad input is one line and exit 2.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from robust_pt.api import load_model
from robust_pt.tasks import load_task
from robust_pt.tasks.base import Task
from robust_pt.tasks.shapes_tasks import PRETRAIN_ANSWERS
from tests.test_cli_attack import assert_one_line_error, invoke
from tests.test_datasets import write_karpathy, write_snli_ve, write_vqav2

MODELS = ("vilt", "blip", "clip", "vilt-lora", "vilt-prompt")
QUESTIONS = ["what color is the circle?", "how many objects are there?", "is there a red square?"]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """name -> directory of the tiny models and adapters."""
    import peft
    from transformers import ViltForQuestionAnswering

    from robust_pt.testing.hf_tiny import save_tiny

    root = tmp_path_factory.mktemp("hf-zoo")
    dirs = {a: save_tiny(a, root / a, answers=PRETRAIN_ANSWERS) for a in ("vilt", "blip", "clip")}
    torch.manual_seed(0)
    for name, cfg in (
        ("vilt-lora", peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], init_lora_weights=False)),
        (
            "vilt-prompt",
            peft.PromptTuningConfig(
                task_type="SEQ_CLS",
                num_virtual_tokens=4,
                token_dim=32,
                num_transformer_submodules=1,
                num_attention_heads=2,
                num_layers=2,
            ),
        ),
    ):
        base = ViltForQuestionAnswering.from_pretrained(str(dirs["vilt"]))
        pm = peft.get_peft_model(base, cfg)
        pm.save_pretrained(root / name)
        dirs[name] = root / name
    return dirs


@pytest.fixture(scope="module")
def models(zoo):
    return {name: load_model(zoo[name], device="cpu") for name in MODELS}


def pil_image(seed: int = 0, size: int = 32):
    from PIL import Image

    return Image.fromarray((np.random.default_rng(seed).random((size, size, 3)) * 255).astype(np.uint8))


def pixels(img) -> torch.Tensor:
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 255


def self_labelled(model, n: int = 6) -> Task:
    """n shapes-vqa questions labelled with the model's own clean answers: every one is attacked."""
    from robust_pt.models.predict import images_of

    base = load_task("shapes-vqa", split="test", limit=n, seed=0, size=model.image_size)
    exs = list(base)
    with torch.no_grad():
        pred = model.candidate_logits(images_of(exs), [e.text for e in exs], base.answers).argmax(-1).tolist()
    exs = [dataclasses.replace(e, label=p, target=base.answers[p]) for e, p in zip(exs, pred)]
    return Task(
        name="shapes-vqa",
        kind="closed",
        split="test",
        metric="accuracy",
        answers=base.answers,
        image_size=model.image_size,
        _examples=exs,
    )


# ----------------------------------------------------------------------------- loading


def test_detects_and_loads(models):
    expect = {
        "vilt": ("ViltVQA", "ViltForQuestionAnswering", "finetune"),
        "blip": ("BlipVQA", "BlipForQuestionAnswering", "finetune"),
        "clip": ("ClipMatch", "CLIPModel", "finetune"),
        "vilt-lora": ("ViltVQA", "ViltForQuestionAnswering", "lora"),
        "vilt-prompt": ("ViltVQA", "ViltForQuestionAnswering", "prompt"),
    }
    for name, (cls, arch, method) in expect.items():
        m = models[name]
        assert (type(m).__name__, m.meta["architecture"], m.meta["method"]) == (cls, arch, method), name
        assert m.image_size == 32 and m.meta["task"] is None and not m.training
        assert not any(p.requires_grad for p in m.parameters())
    assert models["clip"].resize_mode == "crop" and models["vilt"].resize_mode == "squash"
    assert models["vilt"].meta["answers"] == PRETRAIN_ANSWERS
    assert models["vilt-lora"].meta["peft_type"] == "LORA" and models["vilt-prompt"].n_prompt_tokens == 4


def test_wrappers_compute_what_transformers_computes(zoo, models):
    """Same numbers as transformers / peft fed by the saved processor: the processor's rescale
    and normalisation run inside the wrapper, on [0, 1] pixels."""
    import peft
    from transformers import AutoProcessor, BlipForQuestionAnswering, CLIPModel, ViltForQuestionAnswering

    img, q = pil_image(), QUESTIONS[0]
    x = pixels(img)
    for name, m in models.items():
        proc = AutoProcessor.from_pretrained(zoo["vilt" if name.startswith("vilt") else name])
        inputs = proc(images=img, text=q, return_tensors="pt")
        assert torch.allclose(m.normalize(x), inputs["pixel_values"], atol=1e-5), name
        with torch.no_grad():
            if name.startswith("vilt"):
                net = ViltForQuestionAnswering.from_pretrained(str(zoo["vilt"])).eval()
                if name != "vilt":
                    net = peft.PeftModel.from_pretrained(net, str(zoo[name])).eval()
                ref = net(**inputs).logits
                ours = m.label_logits_from_embeds(m.embed(x, [q]))
            elif name == "clip":
                net = CLIPModel.from_pretrained(str(zoo["clip"])).eval()
                cands = ["red", "two", "yes"]
                enc = proc(images=img, text=[f"{q} {c}" for c in cands], return_tensors="pt", padding=True)
                ref = net(**enc).logits_per_image
                ours = m.candidate_logits(x, [q], cands)
            else:
                net = BlipForQuestionAnswering.from_pretrained(str(zoo["blip"])).eval()
                tok = proc.tokenizer
                img_states = net.vision_model(pixel_values=inputs["pixel_values"])[0]
                qs = net.text_encoder(
                    input_ids=inputs["input_ids"],
                    attention_mask=inputs["attention_mask"],
                    encoder_hidden_states=img_states,
                )[0]
                ans = (
                    [tok.convert_tokens_to_ids("[DEC]")]
                    + tok("red", add_special_tokens=False).input_ids
                    + [tok.sep_token_id]
                )
                ids = torch.tensor([ans])
                logits = net.text_decoder(
                    input_ids=ids, encoder_hidden_states=qs, encoder_attention_mask=inputs["attention_mask"]
                ).logits
                ref = torch.log_softmax(logits[0, :-1], -1).gather(-1, ids[0, 1:, None]).sum()
                ours = m.candidate_logits(x, [q], ["red"])[0, 0]
        assert torch.allclose(ours, ref, atol=1e-4), (name, ours, ref)


def test_clip_classifies_with_the_class_name_in_the_template(models, zoo):
    """Zero-shot classification on a Hugging Face CLIP: the class name goes into the template's {} (on
    embeddings, as an embedding attack sees it); the logits are CLIPModel's on the written-out texts."""
    from transformers import AutoProcessor, CLIPModel

    img = pil_image()
    x = pixels(img)
    proc = AutoProcessor.from_pretrained(zoo["clip"])
    net = CLIPModel.from_pretrained(str(zoo["clip"])).eval()
    names = ["red circle", "blue square", "yellow"]
    for template in ("a photo of a {} here", "a photo of a {}"):
        texts = [template.replace("{}", n) for n in names]
        enc = proc(images=img, text=texts, return_tensors="pt", padding=True)
        with torch.no_grad():
            ref = net(**enc).logits_per_image
            ours = models["clip"].candidate_logits(x, [template], names)
        assert torch.allclose(ours, ref, atol=1e-4), (template, ours, ref)


def test_generation_and_sequence_loss(models):
    x = torch.rand(2, 3, 32, 32)
    blip = models["blip"]
    out = blip.generate(x, QUESTIONS[:2], max_len=4)
    assert len(out) == 2 and all(isinstance(s, str) for s in out)
    assert len(blip.generate(x, QUESTIONS[:2], max_len=3, beam=2)) == 2
    loss = blip.sequence_loss(x, QUESTIONS[:2], ["red", "two"])
    assert loss.shape == (2,) and torch.isfinite(loss).all()
    assert models["vilt"].generate(x, QUESTIONS[:2])[0] in PRETRAIN_ANSWERS  # open-ended VQA: arg-max label


# ----------------------------------------------------------------------------- the CLI


@pytest.mark.parametrize("name", MODELS)
def test_cli_attack_pgd_and_deepwordbug(zoo, tmp_path, name):
    for attack, extra in (("pgd", ["--eps", "8/255", "--steps", "2"]), ("deepwordbug", ["--query-budget", "60"])):
        out = tmp_path / attack
        r = invoke(
            "attack",
            "--model",
            zoo[name],
            "--attack",
            attack,
            "--task",
            "shapes-vqa",
            "--limit",
            6,
            "--batch-size",
            6,
            "--device",
            "cpu",
            "--out",
            out,
            *extra,
        )
        assert r.exit_code == 0, (name, attack, r.output)
        run = json.loads((out / "run.json").read_text())
        assert run["status"] == "complete" and run["config"]["task"]["n"] == 6
        assert run["config"]["model"]["class"] in ("ViltVQA", "BlipVQA", "ClipMatch")
        assert run["config"]["model"]["method"] == {"vilt-lora": "lora", "vilt-prompt": "prompt"}.get(name, "finetune")
        recs = [x for x in map(json.loads, (out / "records.jsonl").read_text().splitlines()) if "index" in x]
        assert len(recs) == 6
        if attack == "deepwordbug":
            assert all("adv_text" in x for x in recs)


def test_cli_attack_real_datasets(zoo, tmp_path):
    """ViLT on VQAv2 (soft accuracy), CLIP on SNLI-VE (centre-crop resize), BLIP on COCO captions (CIDEr)."""
    vqa = write_vqav2(tmp_path / "vqa")
    ve = write_snli_ve(tmp_path / "ve")
    coco = write_karpathy(tmp_path / "coco")
    for name, task, attack, metric, n in (
        ("vilt", f"vqav2:{vqa}", "pgd", "vqa-accuracy", 3),
        ("clip", f"snli-ve:{ve}", "pgd", "accuracy", 3),
        ("blip", f"coco-captions:{coco}", "pgd", "cider", 2),  # 2 test images
        ("vilt-lora", f"vqav2:{vqa}", "deepwordbug", "vqa-accuracy", 3),
    ):
        out = tmp_path / f"run-{name}"
        r = invoke(
            "attack",
            "--model",
            zoo[name],
            "--attack",
            attack,
            "--task",
            task,
            "--split",
            "val" if "vqa" in task else "test",
            "--limit",
            3,
            "--device",
            "cpu",
            "--out",
            out,
            *(["--eps", "4/255", "--steps", "1"] if attack == "pgd" else ["--query-budget", "40"]),
        )
        assert r.exit_code == 0, (name, r.output)
        run = json.loads((out / "run.json").read_text())
        assert run["config"]["task"]["n"] == n and run["config"]["task"]["image_size"] == 32
        assert run["summary"][0]["metric"] == metric


def test_cli_bad_dataset_is_one_line(zoo, tmp_path):
    root = write_vqav2(tmp_path / "vqa", drop=(3, "question"))
    r = invoke(
        "attack",
        "--model",
        zoo["vilt"],
        "--attack",
        "fgsm",
        "--task",
        f"vqav2:{root}",
        "--split",
        "val",
        "--device",
        "cpu",
        "--out",
        tmp_path / "run",
    )
    assert_one_line_error(r, "question 3 (question_id 22) has no 'question' field")


# ----------------------------------------------------------------------------- eps


@pytest.mark.parametrize("name", MODELS)
def test_linf_distance_at_most_eps(models, name):
    """The adversarial image's L-inf distance to the clean one, in [0, 1] pixels, is at most eps."""
    from robust_pt.attacks import build
    from robust_pt.attacks.image import run_image_attack
    from robust_pt.attacks.objectives import ClosedImage
    from robust_pt.engine import evaluate
    from robust_pt.models.predict import images_of

    m = models[name]
    task = self_labelled(m)
    eps = 2 / 255
    backends = ("ours", "torchattacks", "foolbox") if name == "vilt" else ("ours",)
    for backend in backends:
        run = evaluate(
            m, task, attack="pgd", eps=[eps], steps=3, early_stop=False, backend=backend, progress=False, samples=0
        )
        rec = run.records
        assert rec["attacked"].all(), (name, backend)  # self-labelled: every example is clean-correct
        assert (rec["linf"] <= eps + 1e-6).all() and rec["linf"].max() > eps / 2, (name, backend, rec["linf"])
    # directly: the adversarial images themselves
    exs = list(task)
    x0 = images_of(exs)
    labels = torch.tensor([e.label for e in exs])
    obj = ClosedImage(m, [e.text for e in exs], task.answers, labels)
    r = run_image_attack(
        build("pgd", steps=3, early_stop=False).spec, obj, x0, eps, seeds=list(range(len(exs))), batch_seed=0
    )
    assert float((r.adv - x0).abs().max()) <= eps + 1e-6
    assert float(r.adv.min()) >= 0.0 and float(r.adv.max()) <= 1.0


@pytest.mark.parametrize("name", ["vilt", "blip", "clip", "vilt-prompt"])
def test_embedding_attack(models, name):
    from robust_pt.engine import evaluate

    m = models[name]
    e = m.embed(torch.rand(2, 3, 32, 32), QUESTIONS[:2])
    before = (e.image.clone(), e.text.clone())
    m.candidate_logits_from_embeds(e, ["red", "two"])
    assert torch.equal(e.image, before[0]) and torch.equal(e.text, before[1])  # the model never writes into Embeds
    run = evaluate(
        m, self_labelled(m, n=4), attack="emb-pgd", eps=[0.05], steps=2, early_stop=False, progress=False, samples=0
    )
    assert run.records["attacked"].all() and (run.records["linf"] <= 0.05 + 1e-5).all()


# ----------------------------------------------------------------------------- bad input


def test_unsupported_architecture(tmp_path):
    d = tmp_path / "bert"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"architectures": ["BertForMaskedLM"], "model_type": "bert"}))
    r = invoke("attack", "--model", d, "--attack", "pgd", "--task", "shapes-vqa", "--out", tmp_path / "run")
    assert_one_line_error(
        r,
        "unsupported architecture BertForMaskedLM",
        "ViltForQuestionAnswering",
        "BlipForQuestionAnswering",
        "CLIPModel",
    )
    (d / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert_one_line_error(
        invoke("attack", "--model", d, "--attack", "pgd", "--task", "shapes-vqa"), "names no architecture", "CLIPModel"
    )


def _adapter_copy(zoo, tmp_path, base_ref):
    d = tmp_path / "adapter"
    shutil.copytree(zoo["vilt-lora"], d)
    cfg = json.loads((d / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = base_ref
    (d / "adapter_config.json").write_text(json.dumps(cfg))
    return d


def test_adapter_base_missing(zoo, tmp_path):
    d = _adapter_copy(zoo, tmp_path, str(tmp_path / "moved-away"))
    r = invoke(
        "attack", "--model", d, "--attack", "pgd", "--task", "shapes-vqa", "--device", "cpu", "--out", tmp_path / "run"
    )
    assert_one_line_error(r, "base model of adapter", "moved-away", "missing", "--base")
    d2 = _adapter_copy(zoo, tmp_path / "b", "someorg/vilt-not-downloaded")
    assert_one_line_error(
        invoke("attack", "--model", d2, "--attack", "pgd", "--task", "shapes-vqa"),
        "not in the local Hugging Face cache",
    )
    # --base points it at the right one
    r = invoke(
        "attack",
        "--model",
        d,
        "--base",
        zoo["vilt"],
        "--attack",
        "pgd",
        "--task",
        "shapes-vqa",
        "--limit",
        2,
        "--eps",
        "2/255",
        "--steps",
        "1",
        "--device",
        "cpu",
        "--out",
        tmp_path / "ok",
    )
    assert r.exit_code == 0, r.output


def test_adapter_base_different(zoo, tmp_path):
    d = _adapter_copy(zoo, tmp_path, str(zoo["blip"]))
    r = invoke("attack", "--model", d, "--attack", "pgd", "--task", "shapes-vqa", "--device", "cpu")
    assert_one_line_error(r, f"does not fit base {zoo['blip']} (BlipForQuestionAnswering)", "--base")
    r = invoke(
        "attack",
        "--model",
        zoo["vilt-prompt"],
        "--base",
        zoo["clip"],
        "--attack",
        "pgd",
        "--task",
        "shapes-vqa",
        "--device",
        "cpu",
    )
    assert_one_line_error(r, "does not fit base", "CLIPModel")


def test_unsupported_adapter_and_task_kind(zoo, tmp_path):
    d = _adapter_copy(zoo, tmp_path, str(zoo["vilt"]))
    cfg = json.loads((d / "adapter_config.json").read_text())
    cfg["peft_type"] = "PREFIX_TUNING"
    (d / "adapter_config.json").write_text(json.dumps(cfg))
    assert_one_line_error(
        invoke("attack", "--model", d, "--attack", "pgd", "--task", "shapes-vqa"),
        "PREFIX_TUNING adapter",
        "supported: LoRA",
    )
    r = invoke(
        "attack",
        "--model",
        zoo["clip"],
        "--attack",
        "pgd",
        "--task",
        "shapes-caption",
        "--device",
        "cpu",
        "--out",
        tmp_path / "run",
    )
    assert_one_line_error(r, "CLIPModel cannot serve the caption task shapes-caption")
    assert not (tmp_path / "run").exists()


def test_device_flags(zoo, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert_one_line_error(
        invoke("attack", "--model", zoo["vilt"], "--attack", "pgd", "--task", "shapes-vqa", "--device", "cuda"),
        "no CUDA GPU",
        "--device cpu",
    )
    assert_one_line_error(
        invoke(
            "attack",
            "--model",
            zoo["vilt"],
            "--attack",
            "pgd",
            "--task",
            "shapes-vqa",
            "--device",
            "cpu",
            "--precision",
            "bf16",
        ),
        "needs a CUDA device",
    )
    assert_one_line_error(
        invoke("attack", "--model", zoo["vilt"], "--attack", "pgd", "--task", "shapes-vqa", "--device", "tpu"),
        "bad device 'tpu'",
    )
    assert load_model(zoo["vilt"]).device.type == "cpu"  # auto without a GPU


def test_hugging_face_and_peft_models_transfer(zoo, models):
    """Crafted on the tiny ViLT base, judged on its LoRA adapter (peft); the base as its own surrogate is
    the white-box run; the built-in model (another image size) is refused as a surrogate."""
    import robust_pt as rpt
    from robust_pt.errors import AttackError

    task = self_labelled(models["vilt"], n=8)
    kw = dict(eps=[8 / 255], steps=3, progress=False, early_stop=False)
    white = rpt.evaluate(models["vilt"], task, "pgd", **kw)
    own = rpt.evaluate(models["vilt"], task, "pgd", surrogate=zoo["vilt"], **kw)
    cols = ["id", "eps", "pred", "correct"]
    assert own.records[cols].equals(white.records[cols])
    run = rpt.evaluate(zoo["vilt-lora"], task, "pgd", surrogate=zoo["vilt"], **kw)
    assert run.config["surrogates"][0]["label"] and run.summary["surrogate"].notna().all()
    assert (run.records["linf"] <= 8 / 255 + 1e-6).all()
    with pytest.raises(AttackError, match="px images"):
        rpt.evaluate(models["vilt"], task, "pgd", surrogate="builtin:base-small", **kw)
