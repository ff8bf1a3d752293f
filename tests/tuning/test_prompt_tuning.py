"""Prompt tuning is OFA-PT's: frozen backbone, prefixes in every layer of the chosen depth,
parameter counts that follow length, depth and reparameterisation."""

import pytest
import torch

from robust_pt.errors import ConfigError
from robust_pt.models import ofa
from robust_pt.models.ofa import build
from robust_pt.tasks.vocab import WORDS, bin_tokens
from robust_pt.tuning.config import TuningConfig
from robust_pt.tuning.methods import apply_method, parameter_counts

VOCAB = list(WORDS) + bin_tokens()


def _model():
    torch.manual_seed(0)
    return build("tiny", vocab=VOCAB)


def _batch(n=8):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, 48, 48, generator=g), ["what color is the circle?"] * n, ["red"] * n


def test_backbone_gets_no_gradient_and_stays_bit_identical():
    m = _model()
    apply_method(m, TuningConfig(method="prompt", prompt_length=4, prompt_reparam=True))
    backbone = {n: p.detach().clone() for n, p in m.named_parameters() if not n.startswith("prompt.")}
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=0.1)
    x, t, y = _batch()
    for _ in range(3):
        loss = m.sequence_loss(x, t, y).mean()
        opt.zero_grad()
        loss.backward()
        for n, p in m.named_parameters():
            if not n.startswith("prompt."):
                assert p.grad is None, n
        opt.step()
    for n, p in m.named_parameters():
        if n in backbone:
            assert torch.equal(p, backbone[n]), n
    assert any(not torch.equal(p, q) for p, q in zip(m.prompt.parameters(), _fresh_prompt().parameters()))


def _fresh_prompt():
    m = _model()
    apply_method(m, TuningConfig(method="prompt", prompt_length=4, prompt_reparam=True))
    return m.prompt


@pytest.mark.parametrize("depth,enc,dec", [("encoder", True, False), ("decoder", False, True), ("both", True, True)])
def test_prefixes_reach_every_layer_of_the_chosen_depth(monkeypatch, depth, enc, dec):
    m = _model()
    apply_method(m, TuningConfig(method="prompt", prompt_length=5, prompt_depth=depth))
    seen = []
    orig = ofa.Attention.forward

    def spy(self, x, kv=None, key_mask=None, causal=False, prefix=None, **kw):
        seen.append((id(self), None if prefix is None else prefix[0].shape[1]))
        return orig(self, x, kv, key_mask, causal, prefix, **kw)

    monkeypatch.setattr(ofa.Attention, "forward", spy)
    x, t, y = _batch(2)
    m.sequence_loss(x, t, y)
    got = dict(seen)
    for layer in m.encoder:
        assert got[id(layer.self_attn)] == (5 if enc else None)
    for layer in m.decoder:
        assert got[id(layer.self_attn)] == (5 if dec else None)
        assert got[id(layer.cross_attn)] is None


def test_prefix_changes_the_output_and_masks_cover_it():
    m = _model().eval()
    x, t, _ = _batch(2)
    before = m.candidate_logits(x, t, ["red", "blue"])
    apply_method(m, TuningConfig(method="prompt", prompt_length=3, prompt_dropout=0.0))
    with torch.no_grad():
        for p in m.prompt.parameters():
            p.normal_(0, 1.0)
    after = m.candidate_logits(x, t, ["red", "blue"])
    assert torch.isfinite(after).all() and not torch.allclose(before, after)


def test_trainable_counts_follow_length_depth_and_reparam():
    d, L_enc, L_dec = (
        ofa.PRESETS["tiny"]["d_model"],
        ofa.PRESETS["tiny"]["enc_layers"],
        ofa.PRESETS["tiny"]["dec_layers"],
    )

    def count(**kw):
        m = _model()
        apply_method(m, TuningConfig(method="prompt", **kw))
        return parameter_counts(m)["trainable_params"]

    for length in (4, 8, 16):
        assert count(prompt_length=length, prompt_depth="encoder") == length * L_enc * 2 * d
        assert count(prompt_length=length, prompt_depth="decoder") == length * L_dec * 2 * d
        assert count(prompt_length=length) == length * (L_enc + L_dec) * 2 * d
    mlp = lambda layers: d * 2 * d + 2 * d + 2 * d * layers * 2 * d + layers * 2 * d  # noqa: E731
    assert count(prompt_length=8, prompt_depth="encoder", prompt_reparam=True) == 8 * d + mlp(L_enc)


def test_other_methods_train_only_their_parameters():
    fracs = {}
    for method in ("finetune", "adapter", "bitfit", "lora", "prompt"):
        m = _model()
        apply_method(m, TuningConfig(method=method))
        c = parameter_counts(m)
        fracs[method] = c["trainable_fraction"]
        names = [n for n, p in m.named_parameters() if p.requires_grad]
        if method == "bitfit":
            assert names and all(n.endswith(".bias") for n in names)
        if method == "lora":
            assert names and all("lora_" in n for n in names)
        if method == "adapter":
            assert names and all(".adapter." in n for n in names)
    assert fracs["finetune"] == 1.0 and all(0 < fracs[k] < 0.5 for k in ("adapter", "bitfit", "lora", "prompt"))


def test_bad_tuning_config():
    with pytest.raises(ConfigError, match="prompt length"):
        TuningConfig(method="prompt", prompt_length=0)
    with pytest.raises(ConfigError, match="unknown tuning method"):
        TuningConfig(method="qlora")
