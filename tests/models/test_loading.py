"""The registry of model families (robust_pt/models/loading.py): every kind of reference is
recognised by exactly its family and loads through it; a directory no family recognises is
one error listing them all; a new family is one register call; the Hugging Face families'
image settings and peft targets fit the models they describe."""

from __future__ import annotations

import json

import pytest
import torch

from robust_pt.errors import CheckpointError, ConfigError
from robust_pt.models import loading
from robust_pt.models.loading import HFFamily, PeftTargets, detect, families, hf_family, register

HF = {
    "vilt": "ViltForQuestionAnswering",
    "blip": "BlipForQuestionAnswering",
    "clip": "CLIPModel",
    "siglip": "SiglipModel",
}


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """name -> a directory of every family: tiny HF models, a LoRA adapter, a built-in checkpoint."""
    import peft
    from transformers import ViltForQuestionAnswering

    from robust_pt.models.ofa import build
    from robust_pt.testing.hf_tiny import save_tiny
    from robust_pt.tuning import checkpoint as ckpt

    root = tmp_path_factory.mktemp("families")
    out = {name: save_tiny(name, root / name, answers=["yes", "no", "red"]) for name in HF}
    pm = peft.get_peft_model(
        ViltForQuestionAnswering.from_pretrained(str(out["vilt"])),
        peft.LoraConfig(r=2, target_modules=list(hf_family(HF["vilt"]).peft_targets.lora)),
    )
    pm.save_pretrained(root / "vilt-lora")
    out["peft-adapter"] = root / "vilt-lora"
    torch.manual_seed(0)
    model = build("tiny", vocab=["yes", "no"])
    ckpt.save(model, root / "ofa", {"method": "finetune", "name": "ofa"})
    out["builtin"] = root / "ofa"
    from robust_pt.models.hf.delta import context, save_delta
    from robust_pt.tuning.apt import APTOptions, attach_hf

    net = ViltForQuestionAnswering.from_pretrained(str(out["vilt"]))
    attach_hf(APTOptions(apt_prompts=3), context(HF["vilt"], net))
    trained = {n: p for n, p in net.named_parameters() if p.requires_grad}
    opts = {"apt_prompts": 3, "apt_rank": 4, "apt_dropout": 0.1}
    save_delta(trained, root / "vilt-apt", method="apt", options=opts, arch=HF["vilt"], base_dir=out["vilt"])
    out["hf-delta"] = root / "vilt-apt"
    return out


GENERATIVE = {
    "llava": "LlavaForConditionalGeneration",
    "llava-next": "LlavaNextForConditionalGeneration",
    "paligemma": "PaliGemmaForConditionalGeneration",
    "idefics3": "Idefics3ForConditionalGeneration",
    "qwen2-vl": "Qwen2VLForConditionalGeneration",
    "qwen2.5-vl": "Qwen2_5_VLForConditionalGeneration",
}


def test_families_are_registered_in_detection_order():
    assert [f.name for f in families()] == ["module", "builtin", "peft-adapter", "hf-delta", *HF, *GENERATIVE]
    assert loading.hf_architectures() == (*HF.values(), *GENERATIVE.values())
    assert [f.name for f in loading.hf_families() if f.generative] == list(GENERATIVE)


def test_each_reference_is_recognised_by_its_family(dirs):
    for name, d in dirs.items():
        assert detect(d).name == name, name
        assert detect(str(d)).name == name, name
        assert [f.name for f in families() if f.name != name and f.detect(d)] == [], name  # exactly one
    assert detect("builtin:base-small").name == "builtin"
    assert detect(torch.nn.Linear(2, 2)).name == "module"


def test_each_family_loads_its_models(dirs):
    from robust_pt.models.hf.base import HFVLModel
    from robust_pt.models.ofa import MiniOFA

    expect = {
        "vilt": "ViltVQA",
        "blip": "BlipVQA",
        "clip": "ClipMatch",
        "peft-adapter": "ViltVQA",
        "hf-delta": "ViltVQA",
    }
    for name, cls in expect.items():
        m = loading.load_model(dirs[name], device="cpu")
        assert isinstance(m, HFVLModel) and type(m).__name__ == cls, name
        family = hf_family(m.meta["architecture"])
        assert type(m) is family.model_class
    assert isinstance(loading.load_model(dirs["builtin"], device="cpu"), MiniOFA)
    lin = torch.nn.Linear(2, 2)
    assert loading.load_model(lin) is lin


def test_image_settings_come_from_the_saved_processor(dirs):
    from transformers import AutoConfig

    from robust_pt.models.hf.base import read_json

    got = {}
    for name, arch in HF.items():
        ip = read_json(dirs[name] / "preprocessor_config.json")
        s = hf_family(arch).image_settings(ip, AutoConfig.from_pretrained(str(dirs[name])))
        got[name] = (s.size, s.resize)
        m = loading.load_model(dirs[name], device="cpu")
        assert (m.image_size, m.resize_mode, m.pixel_scale) == (s.size, s.resize, s.scale), name
        assert m.pixel_mean.flatten().tolist() == pytest.approx(list(s.mean)), name
    assert got == {"vilt": (32, "squash"), "blip": (32, "squash"), "clip": (32, "crop"), "siglip": (32, "squash")}
    vilt = hf_family(HF["vilt"])
    assert vilt.input_size({"size": {"shortest_edge": 100}, "size_divisor": 32}, None) == (96, "squash")
    with pytest.raises(CheckpointError, match="non-square processor size 32x48"):
        hf_family(HF["blip"]).input_size({"size": {"height": 32, "width": 48}}, None)


def test_peft_targets_name_modules_of_the_model(dirs):
    from robust_pt.models.hf.base import load_transformers

    for name, arch in HF.items():
        net = load_transformers(dirs[name], arch)[0]
        names = [n for n, _ in net.named_modules()]
        t = hf_family(arch).peft_targets
        for target in (*t.lora, *t.ia3):
            assert any(n.endswith(target) for n in names), (name, target)
        assert set(t.ia3_feedforward) <= set(t.ia3), name


def test_an_unknown_directory_is_one_error_listing_the_families(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(CheckpointError) as err:
        detect(tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "holds no checkpoint" in msg
    for f in families():
        assert f"{f.name}: " in msg, f.name
    for arch in HF.values():
        assert arch in msg
    with pytest.raises(CheckpointError, match="does not exist"):
        detect(tmp_path / "missing")
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertForMaskedLM"]}))
    with pytest.raises(CheckpointError, match="unsupported architecture BertForMaskedLM in .*CLIPModel"):
        detect(tmp_path)


def test_a_new_family_is_one_register_call(dirs, tmp_path, monkeypatch):
    """A Hugging Face family is an HFFamily; any other layout a ModelFamily subclass."""
    monkeypatch.setattr(loading, "_FAMILIES", dict(loading._FAMILIES))
    d = tmp_path / "vilt-alias"
    d.mkdir()
    cfg = json.loads((dirs["vilt"] / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "architectures": ["MyViltForQuestionAnswering"]}))
    with pytest.raises(CheckpointError, match="unsupported architecture MyVilt"):
        detect(d)
    fam = register(
        HFFamily(
            "my-vilt",
            "MyViltForQuestionAnswering",
            "robust_pt.models.hf.vilt:ViltVQA",
            PeftTargets(lora=("query",), ia3=("key",), ia3_feedforward=()),
        )
    )
    assert detect(d) is fam and hf_family("MyViltForQuestionAnswering") is fam
    assert "MyViltForQuestionAnswering" in loading.hf_architectures()

    class Marker(loading.ModelFamily):
        name, recognised_by = "marker", "a directory holding MARKER"

        def detect(self, ref):
            return (tmp_path / "MARKER").exists() and str(ref) == str(tmp_path)

        def load(self, ref, *, device=None, precision=None, base=None):
            return torch.nn.Identity()

    register(Marker())
    (tmp_path / "MARKER").write_text("")
    assert isinstance(loading.load_model(tmp_path), torch.nn.Identity)
    with pytest.raises(ConfigError, match="new name"):
        register(Marker())
    with pytest.raises(ConfigError, match="already the vilt family's"):
        register(HFFamily("vilt2", HF["vilt"], "robust_pt.models.hf.vilt:ViltVQA", PeftTargets((), (), ())))


def test_recognising_a_reference_stays_light():
    import subprocess
    import sys

    code = (
        "import sys; from robust_pt.models import loading; loading.detect('builtin:base-small'); "
        "print([m for m in ('torch', 'transformers', 'peft') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
