"""The built-in model's contracts: candidate scoring, embeds path, generation, input checks."""

import pytest
import torch

from robust_pt.models.ofa import build
from robust_pt.tasks.vocab import WORDS, bin_tokens


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build("tiny", vocab=list(WORDS) + bin_tokens()).eval()


def _inputs(n=3, size=48):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, size, size, generator=g), [
        "what color is the circle?",
        "is there a red square?",
        "how many objects are there?",
    ][:n]


@pytest.fixture(scope="module")
def prompted():
    """A tiny model with deep prompts in encoder and decoder (prefixes enter the decoder's self-attention)."""
    from robust_pt.tuning.config import TuningConfig
    from robust_pt.tuning.methods import apply_method

    torch.manual_seed(0)
    m = build("tiny", vocab=list(WORDS) + bin_tokens())
    apply_method(m, TuningConfig(method="prompt", prompt_length=4, prompt_depth="both"))
    with torch.no_grad():
        for p in m.prompt.parameters():
            p.normal_()  # prefixes that matter
    return m.eval()


@pytest.mark.parametrize("which", ["model", "prompted"])
def test_single_token_fast_path_equals_general_scoring(which, request):
    model = request.getfixturevalue(which)
    x, texts = _inputs()
    cands = ["red", "blue", "yes", "four"]
    fast = model.candidate_logits(x, texts, cands)
    # the general path: summed log-likelihood of "w <eos>" from full teacher forcing
    e = model.embed(x, texts)
    slow = torch.stack([-model.token_nll_from_embeds(e, [c] * len(texts))[0] for c in cands], 1)
    assert torch.allclose(fast, slow, atol=1e-5)
    multi = model.candidate_logits(x, texts, cands + ["red circle"])  # forces the general path
    assert torch.allclose(multi[:, :4], fast, atol=1e-5)


def test_embeds_path_matches_image_path_and_is_differentiable(model):
    x, texts = _inputs()
    x.requires_grad_(True)
    a = model.candidate_logits(x, texts, ["red", "no"])
    e = model.embed(x, texts)
    b = model.candidate_logits_from_embeds(e, ["red", "no"])
    assert torch.allclose(a, b)
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_generation_greedy_and_beam_return_text(model):
    x, texts = _inputs(2)
    greedy = model.generate(x, texts, max_len=5)
    beam = model.generate(x, texts, max_len=5, beam=3)
    assert len(greedy) == len(beam) == 2 and all(isinstance(s, str) for s in greedy + beam)


def test_beam_one_path_is_greedy(model):
    x, texts = _inputs(2)
    e = model.embed(x, texts)
    assert model._beam(*model.encode(e), max_len=4, beam=1) == model.generate_from_embeds(e, max_len=4)


def test_per_example_loss_and_wrong_size(model):
    x, texts = _inputs()
    loss = model.sequence_loss(x, texts, ["red", "<bin_1> <bin_2> <bin_3> <bin_4>", "a small red circle"])
    assert loss.shape == (3,) and torch.all(loss > 0)
    with pytest.raises(ValueError, match="48x48"):
        model.embed(torch.rand(1, 3, 64, 64), ["what?"])


def test_unknown_words_become_unk(model):
    ids = model.tok.encode("what colr is the circle?")
    assert model.tok.unk_id in ids and model.tok.decode(model.tok.encode("a red circle")) == "a red circle"


def test_image_positions_sincos_and_learned_checkpoints(tmp_path):
    """`small` reads LayerNorm'd stem features + fixed 2-D sin-cos positions; checkpoints made
    before (config.json without image_pos) still load as "learned", with the same outputs."""
    import json

    from robust_pt.errors import ConfigError
    from robust_pt.models.ofa import PRESETS, sincos_2d
    from robust_pt.tuning import checkpoint as ckpt

    assert PRESETS["small"]["image_pos"] == "sincos"
    pos = sincos_2d(6, 64)
    assert pos.shape == (36, 64) and pos.abs().max() <= 1
    assert len({tuple(r) for r in pos.round(decimals=5).tolist()}) == 36  # every grid cell its own code
    x, texts = _inputs()
    for kind in ("sincos", "learned"):
        torch.manual_seed(0)
        m = build("tiny", vocab=list(WORDS) + bin_tokens(), image_pos=kind).eval()
        assert ("image_ln.weight" in m.state_dict()) == (kind == "sincos")
        assert not any(k.startswith("image_pos_fixed") for k in m.state_dict())  # rebuilt, never stored
        d = tmp_path / kind
        ckpt.save(m, d, {"method": "pretrain", "task": None})
        if kind == "learned":  # as written before the field existed
            cfg = json.loads((d / "config.json").read_text())
            cfg.pop("image_pos")
            (d / "config.json").write_text(json.dumps(cfg))
        back = ckpt.load(d)
        assert back.cfg.image_pos == kind
        with torch.no_grad():
            cands = ["red", "yes"]
            assert torch.equal(back.candidate_logits(x, texts, cands), m.candidate_logits(x, texts, cands))
    with pytest.raises(ConfigError, match="unknown image_pos 'rope'"):
        build("tiny", vocab=["a"], image_pos="rope")
