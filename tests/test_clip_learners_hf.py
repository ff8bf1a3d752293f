"""Prompt learners on Hugging Face dual encoders (CLIP, SigLIP): zero-shot logits equal the transformers model's,
every learner trains and reloads there, and a CoOp checkpoint in the Dassl layout imports (weights-only reading,
nothing else trusted) and gives the logits computed by hand from its context."""

from __future__ import annotations

import json

import pytest
import torch

import robust_pt
from robust_pt.tasks import load_task
from tests._cli import assert_one_line_error, invoke


def _tiny(tmp_path_factory, arch):
    from robust_pt.tasks.shapes_tasks import PRETRAIN_ANSWERS
    from robust_pt.testing.hf_tiny import save_tiny

    return save_tiny(arch, tmp_path_factory.mktemp(arch) / arch, answers=PRETRAIN_ANSWERS)


@pytest.fixture(scope="module")
def hf_clip(tmp_path_factory):
    return _tiny(tmp_path_factory, "clip")


@pytest.fixture(scope="module", params=["clip", "siglip"])
def hf_dual(request, tmp_path_factory):
    return _tiny(tmp_path_factory, request.param)


def test_siglip_classifies_as_siglipmodel_does(tmp_path_factory):
    """SigLIP: no <bos>, texts padded to full length and read at the last position, attention-pooled image, a
    logit bias; the logits equal SiglipModel's logits_per_image on the written-out texts."""
    import numpy as np
    from PIL import Image
    from transformers import AutoProcessor, SiglipModel

    path = _tiny(tmp_path_factory, "siglip")
    model, net = robust_pt.load_model(path), SiglipModel.from_pretrained(str(path)).eval()
    proc = AutoProcessor.from_pretrained(str(path))
    img = Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8))
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    names = ["red circle", "blue square", "yellow"]
    for template in ("a photo of a {} here", "a photo of a {}"):
        enc = proc(images=img, text=[template.replace("{}", n) for n in names], return_tensors="pt",
                   padding="max_length", max_length=32)  # fmt: skip
        with torch.no_grad():
            ref = net(**enc).logits_per_image
            ours = model.candidate_logits(x, [template], names)
        assert torch.allclose(ours, ref, atol=1e-4), (template, ours, ref)


def _dassl(path, ctx, d, extra=None):
    """A file laid out as Dassl's save_checkpoint writes a CoOp prompt learner."""
    state = {"ctx": ctx, "token_prefix": torch.randn(15, 1, d), "token_suffix": torch.randn(15, 72, d)}
    torch.save({"state_dict": state, "epoch": 50, "optimizer": {"state": {}, "param_groups": []}, **(extra or {})},
               str(path))  # fmt: skip
    return path


def _by_hand(net, tok, x_pixels, ctx, names):
    """[bos] + context + name + "." + eos through CLIP's text transformer, read at eos; scaled cosine to the image."""
    from transformers.modeling_attn_mask_utils import _create_4d_causal_attention_mask

    tm, emb = net.text_model, net.text_model.embeddings.token_embedding
    feats = []
    for name in names:
        ids = tok(name, add_special_tokens=False)["input_ids"]
        dot = tok(".", add_special_tokens=False)["input_ids"]  # Dassl's prompts end "<class name> ."
        parts = [emb.weight[[tok.bos_token_id]], ctx, emb.weight[ids], emb.weight[dot], emb.weight[[tok.eos_token_id]]]
        seq = torch.cat(parts)[None]
        h = tm.embeddings(inputs_embeds=seq)
        causal = _create_4d_causal_attention_mask(seq.shape[:2], h.dtype, device=h.device)
        h = tm.final_layer_norm(tm.encoder(inputs_embeds=h, causal_attention_mask=causal).last_hidden_state)
        feats.append(net.text_projection(h[0, -1]))
    txt = torch.nn.functional.normalize(torch.stack(feats), dim=-1)
    img = torch.nn.functional.normalize(net.get_image_features(pixel_values=x_pixels), dim=-1)
    return net.logit_scale.exp() * img @ txt.t()


def test_a_dassl_coop_checkpoint_imports_and_gives_the_hand_computed_logits(hf_clip, tmp_path):
    from transformers import AutoTokenizer, CLIPModel

    net = CLIPModel.from_pretrained(str(hf_clip)).eval()
    tok = AutoTokenizer.from_pretrained(str(hf_clip))
    d = net.text_model.embeddings.token_embedding.weight.shape[1]
    torch.manual_seed(0)
    ctx = torch.randn(4, d) * 0.5
    out = tmp_path / "imported"
    r = invoke("import", "coop", _dassl(tmp_path / "model.pth.tar-50", ctx, d), "--base", hf_clip, "--out", out)
    assert r.exit_code == 0, r.output
    model = robust_pt.load_model(out)
    task = load_task("shapes-objects-novel", split="test", limit=3, size=model.image_size)
    x = torch.stack([torch.from_numpy(task[i].image) for i in range(3)])
    with torch.no_grad():
        ours = model.candidate_logits(x, [task[i].text for i in range(3)], task.answers)
        ref = _by_hand(net, tok, model.normalize(x), ctx, task.answers)
    assert torch.allclose(ours, ref, atol=1e-4), (ours, ref)
    assert model.meta["method"] == "coop" and json.loads((out / "robust_pt.json").read_text())["method"] == "coop"


class Payload:  # anything that is not a tensor or plain container: it would need unpickling
    pass


@pytest.mark.parametrize(
    "make, needles",
    [
        (lambda p, d: _dassl(p, torch.randn(4, d + 8), d + 8), ["context is 40 wide", "text embeddings are 32"]),
        (lambda p, d: _dassl(p, torch.randn(4, d), d, {"extra": Payload()}), ["needs unpickling", "Payload"]),
        (lambda p, d: _dassl(p, torch.randn(15, 4, d), d), ["class-specific contexts"]),
        (lambda p, d: p.write_bytes(b"not a checkpoint") and p, ["is not a torch checkpoint"]),
    ],
)
def test_a_coop_file_of_the_wrong_shape_or_needing_pickle_is_refused(hf_clip, tmp_path, make, needles):
    path = make(tmp_path / "model.pth.tar-1", 32)
    r = invoke("import", "coop", path, "--base", hf_clip, "--out", tmp_path / "out")
    assert_one_line_error(r, *needles)
    assert not (tmp_path / "out").exists()


def test_coop_trains_on_a_hugging_face_clip_and_refuses_a_vqa_task(hf_clip, tmp_path):
    out = tmp_path / "coop"
    r = invoke("train", "--base", hf_clip, "--task", "shapes-objects-base", "--method", "coop", "--steps", 3,
               "--batch-size", 8, "--eval-size", 8, "--threads", 1, "--out", out)  # fmt: skip
    assert r.exit_code == 0, r.output
    model = robust_pt.load_model(out)
    assert model.meta["method"] == "coop" and model.hf.prompter.ctx.shape[0] == 4  # "a picture of a": 4 tokens
    r = invoke("train", "--base", hf_clip, "--task", "shapes-vqa", "--method", "coop", "--out", tmp_path / "x")
    assert_one_line_error(r, "tunes for classify tasks, not the closed task shapes-vqa")


@pytest.mark.parametrize("method", ["coop", "vpt", "maple", "apt", "lora", "finetune"])
def test_the_learners_train_on_a_hugging_face_dual_encoder_and_reload(hf_dual, tmp_path, method):
    """Each trains a few steps on base classes, reloads to the same logits on novel classes, and differs from
    the untuned base there (the learned tensors are read)."""
    out = tmp_path / method
    hf_clip = hf_dual
    r = invoke("train", "--base", hf_clip, "--task", "shapes-objects-base", "--method", method, "--steps", 3,
               "--batch-size", 8, "--eval-size", 8, "--lr", 0.05, "--threads", 1, "--out", out)  # fmt: skip
    assert r.exit_code == 0, r.output
    tuned, again, base = robust_pt.load_model(out), robust_pt.load_model(out), robust_pt.load_model(hf_clip)
    task = load_task("shapes-objects-novel", split="test", limit=4, size=tuned.image_size)
    x = torch.stack([torch.from_numpy(task[i].image) for i in range(4)])
    texts = [task[i].text for i in range(4)]
    with torch.no_grad():
        a, b, c = (m.candidate_logits(x, texts, task.answers) for m in (tuned, again, base))
    assert torch.equal(a, b) and not torch.allclose(a, c, atol=1e-4)


def test_a_linear_probe_trains_on_a_hugging_face_dual_encoder_and_scores_its_own_classes(hf_dual, tmp_path):
    """Its head is sized by the task's classes (recorded in the delta's options), reloads to the same logits, and
    a run on novel classes is refused in one line."""
    out = tmp_path / "probe"
    r = invoke("train", "--base", hf_dual, "--task", "shapes-objects-base", "--method", "linear-probe", "--steps", 3,
               "--batch-size", 8, "--eval-size", 8, "--lr", 0.05, "--threads", 1, "--out", out)  # fmt: skip
    assert r.exit_code == 0, r.output
    tuned, again = robust_pt.load_model(out), robust_pt.load_model(out)
    task = load_task("shapes-objects-base", split="test", limit=4, size=tuned.image_size)
    x = torch.stack([torch.from_numpy(task[i].image) for i in range(4)])
    with torch.no_grad():
        a, b = (m.candidate_logits(x, [task[i].text for i in range(4)], task.answers) for m in (tuned, again))
    assert a.shape == (4, len(task.answers)) and torch.equal(a, b) and a.abs().sum() > 0  # trained off zero
    assert not tuned.reads_text
    r = invoke("attack", "--model", out, "--task", "shapes-objects-novel", "--attack", "pgd", "--limit", 2,
               "--out", tmp_path / "run")  # fmt: skip
    assert_one_line_error(r, "a linear probe scores the 8 classes it was trained on")


@pytest.mark.parametrize("depth, tower", [("image", "vision_model"), ("text", "text_model")])
def test_apt_on_a_hugging_face_clip_follows_the_attentions_of_the_tower_its_depth_names(hf_clip, tmp_path, depth,
                                                                                         tower):  # fmt: skip
    out = tmp_path / depth
    r = invoke("train", "--base", hf_clip, "--task", "shapes-objects-base", "--method", "apt", "--apt-depth", depth,
               "--steps", 2, "--batch-size", 8, "--eval-size", 8, "--threads", 1, "--out", out)  # fmt: skip
    assert r.exit_code == 0, r.output
    net = robust_pt.load_model(out).hf
    with_apt = [n for n, m in net.named_modules() if hasattr(m, "apt") and type(m).__name__ == "CLIPAttention"]
    assert with_apt and all(n.startswith(tower) for n in with_apt)
    layers = (net.config.vision_config if tower == "vision_model" else net.config.text_config).num_hidden_layers
    assert len(with_apt) == layers
    r = invoke("train", "--base", hf_clip, "--task", "shapes-objects-base", "--method", "apt", "--apt-depth",
               "encoder", "--steps", 2, "--out", tmp_path / "bad")  # fmt: skip
    assert_one_line_error(r, "APT depth 'encoder'", "image, text or both")


def test_a_recipe_keeps_its_finished_runs_of_a_hugging_face_linear_probe(hf_clip, tmp_path):
    """The probe's classes are filled from the task on the recipe's side as train_hf fills them, so a second
    run keeps every finished run instead of redoing them."""
    import yaml

    from robust_pt.recipe import run_recipe

    p = tmp_path / "probe.yaml"
    p.write_text(yaml.safe_dump({
        "base": str(hf_clip), "tasks": ["shapes-objects-base"], "examples": 4, "batch_size": 4,
        "zoo": str(tmp_path / "zoo"), "tuning": [{"method": "linear-probe", "steps": 2, "batch_size": 4, "eval_size": 4}],
        "attacks": [{"attack": "pgd", "eps": ["2/255"], "steps": 2}],
    }))  # fmt: skip
    run_recipe(p, tmp_path / "report", log=lambda *_: None)
    said = []
    run_recipe(p, tmp_path / "report", log=said.append)
    assert any("1 runs complete" in s for s in said), said
