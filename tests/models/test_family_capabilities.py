"""What each Hugging Face family declares, pinned: the peft target modules of every family (the lists
and the modules they reach in a tiny build) are exactly those of the adapters trained before the
families declared their capabilities (tests/models/peft_targets.json, computed at 50a409f; SigLIP's
when its family was added), so a saved adapter and a re-run train the same modules."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

PINNED = json.loads((Path(__file__).with_name("peft_targets.json")).read_text())


def _tiny(name: str):
    from robust_pt.testing.hf_tiny import ARCHS, build_tiny
    from robust_pt.testing.tiny_vlm import build_tiny_vlm

    return (build_tiny if name in ARCHS else build_tiny_vlm)(name)[0]


def _reached(config, net) -> list:
    """[count, digest] of the module names peft's `config` injects into in `net`."""
    from peft.tuners.tuners_utils import check_target_module_exists

    names = sorted(n for n, _ in net.named_modules() if n and check_target_module_exists(config, n))
    return [len(names), hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]]


def test_every_family_is_pinned():
    from robust_pt.models import loading

    assert sorted(f.name for f in loading.hf_families()) == sorted(PINNED)


@pytest.mark.parametrize("name", sorted(PINNED))
def test_peft_targets_are_unchanged(name):
    from peft import IA3Config, LoraConfig

    from robust_pt.models import loading
    from robust_pt.models.hf.delta import context

    family = next(f for f in loading.hf_families() if f.name == name)
    net = _tiny(name)
    t = context(family.architecture, net).targets
    want = PINNED[name]
    assert {k: list(v) for k, v in t.items()} == {k: want[k] for k in ("lora", "ia3", "ia3_feedforward")}
    assert _reached(LoraConfig(target_modules=list(t["lora"])), net) == want["lora_modules"]
    ia3 = IA3Config(target_modules=list(t["ia3"]), feedforward_modules=list(t["ia3_feedforward"]))
    assert _reached(ia3, net) == want["ia3_modules"]


def test_what_each_family_supports():
    from robust_pt.models import loading

    got = {
        f.name: (f.label_head, f.prompt_tuning and f.prompt_tuning.task_type, f.attention_site, f.task_kinds)
        for f in loading.hf_families()
    }
    every = ("closed", "ground", "caption")
    site = loading.AttentionSite("ViltAttention", "classifier")
    assert got.pop("vilt") == (True, "SEQ_CLS", site, ("closed",))
    assert got.pop("blip") == (False, None, None, every)
    towers = (("image", "vision_model"), ("text", "text_model"))  # APT on one tower or both (tuning/apt.py)
    for name, attention in (("clip", "CLIPAttention"), ("siglip", "SiglipAttention")):
        site = loading.AttentionSite(attention, towers=towers)
        assert got.pop(name) == (False, None, site, ("closed", "classify"))
    assert set(got.values()) == {(False, "CAUSAL_LM", None, every)}  # the generative ones
    for f in loading.hf_families():  # the class takes its architecture and kinds from its family
        assert (f.model_class.architecture, f.model_class.task_kinds) == (f.architecture, f.task_kinds)


def test_tuning_asks_the_family_not_the_name(monkeypatch):
    """A family that declares the attention site gets APT and one that declares prompt tuning gets prompt,
    whatever its name; the same class without them is refused in one line, naming the families that can."""
    from robust_pt.errors import ConfigError
    from robust_pt.models import loading
    from robust_pt.tuning.hf_train import check_method

    monkeypatch.setattr(loading, "_FAMILIES", dict(loading._FAMILIES))
    vilt = loading.hf_family("ViltForQuestionAnswering")
    kw = dict(model=vilt.model, peft_targets=vilt.peft_targets, config_size="image_size", size_divisor=True)
    loading.register(loading.HFFamily("plain", "PlainVilt", **kw))
    loading.register(
        loading.HFFamily(
            "able",
            "AbleVilt",
            **kw,
            prompt_tuning=vilt.prompt_tuning,
            attention_site=vilt.attention_site,
        )
    )
    for method in ("apt", "prompt", "lora", "ia3", "finetune"):
        check_method(method, "AbleVilt", "base")
        if method in ("lora", "ia3", "finetune"):
            check_method(method, "PlainVilt", "base")
    with pytest.raises(
        ConfigError,
        match=r"apt supports ViltForQuestionAnswering, CLIPModel, SiglipModel, AbleVilt among .*not PlainVilt",
    ):
        check_method("apt", "PlainVilt", "base")
    with pytest.raises(ConfigError, match=r"prompt supports ViltForQuestionAnswering, Llava.*AbleVilt .*no prompt"):
        check_method("prompt", "PlainVilt", "base")
