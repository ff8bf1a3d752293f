"""APT on the built-in model (robust_pt/tuning/apt.py, layers.ApproximatePrompt): the computation and
its initialisation by hand, a frozen backbone, gradients to the pixels, delta checkpoints on a
verified base, and bad options as one line."""

import pytest
import torch
from safetensors.torch import load_file

from robust_pt.errors import CheckpointError, ConfigError
from robust_pt.models.ofa import build
from robust_pt.tasks.vocab import WORDS, bin_tokens
from robust_pt.tuning import checkpoint as ckpt
from robust_pt.tuning.config import TrainConfig, TuningConfig
from robust_pt.tuning.layers import ApproximatePrompt
from robust_pt.tuning.methods import apply_method, parameter_counts
from robust_pt.tuning.train import tune
from tests._cli import assert_one_line_error, invoke

VOCAB = list(WORDS) + bin_tokens()
FAST = TrainConfig(steps=3, batch_size=4, train_size=16, eval_size=8, threads=1)


def _model(seed=0):
    torch.manual_seed(seed)
    return build("tiny", vocab=VOCAB)


def _batch(n=6):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, 48, 48, generator=g), ["how many circles are there?"] * n, ["2"] * n


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = tmp_path_factory.mktemp("apt-base") / "base"
    ckpt.save(_model(), d, {"method": "pretrain", "name": "base-tiny", "task": None})
    return d


@pytest.fixture(scope="module")
def apt_ckpt(base, tmp_path_factory):
    out = tmp_path_factory.mktemp("apt") / "apt"
    tune(base, "shapes-vqa", TuningConfig(method="apt", apt_prompts=6), FAST, out, log=lambda *_: None)
    return out


def test_the_initial_output_is_the_documented_formula_by_hand():
    torch.manual_seed(3)
    m = ApproximatePrompt(d=8, prompts=5, rank=2, dropout=0.5).eval()  # eval: no dropout
    assert torch.equal(m.up.weight, torch.zeros(8, 2)) and torch.equal(m.scale, torch.zeros(1))
    assert torch.equal(m.keys(), m.prompts)  # up = 0, so K = P at the start
    big = ApproximatePrompt(d=256, prompts=400, rank=16, dropout=0.0)  # 102,400 and 4,096 draws: bands of > 9 SE
    assert (
        abs(float(big.prompts.detach().std()) - 0.02) < 0.001 and abs(float(big.down.weight.detach().std()) - 1) < 0.1
    )
    h, x = torch.randn(2, 3, 8), torch.randn(2, 3, 8)
    P = m.prompts.detach()
    want = torch.empty(2, 3, 8)
    for b in range(2):
        for n in range(3):
            scores = [max(0.0, float(h[b, n] @ P[j])) for j in range(5)]  # ReLU(h K^T), no softmax, no scale
            diffused = sum(s * P[j] for j, s in enumerate(scores))  # E = A P
            want[b, n] = x[b, n] + max(scores) * diffused  # (x + w E) * exp(0)
    assert torch.allclose(m(h, x), want, atol=1e-6)


def test_the_weight_w_carries_no_gradient_and_s_scales_the_output():
    torch.manual_seed(0)
    m = ApproximatePrompt(d=8, prompts=4, rank=2, dropout=0.0)
    with torch.no_grad():
        m.up.weight.normal_()
        m.scale.fill_(0.5)
    h, x = torch.randn(1, 2, 8), torch.randn(1, 2, 8)
    a = torch.relu(h @ m.keys().t())
    e = a @ m.prompts
    w = a.amax(-1, keepdim=True)
    assert torch.allclose(m(h, x), (x + w * e) * torch.exp(torch.tensor(0.5)), atol=1e-6)
    # gradient of the output w.r.t. P: as if w were a constant
    m(h, x).sum().backward()
    P = m.prompts.detach().clone().requires_grad_(True)
    K = P + m.up(m.down(P))
    a2 = torch.relu(h @ K.t())
    ((x + w.detach() * (a2 @ P)) * torch.exp(m.scale.detach())).sum().backward()
    assert torch.allclose(m.prompts.grad, P.grad, atol=1e-5)


@pytest.mark.parametrize("depth,enc,dec", [("encoder", True, False), ("decoder", False, True), ("both", True, True)])
def test_apt_sits_in_every_self_attention_of_its_depth_and_counts_its_parameters(depth, enc, dec):
    m = _model()
    total = parameter_counts(m)["total_params"]
    apply_method(m, TuningConfig(method="apt", apt_prompts=7, apt_rank=3, apt_depth=depth))
    for layer in m.encoder:
        assert (layer.self_attn.post is not None) == enc
    for layer in m.decoder:
        assert (layer.self_attn.post is not None) == dec and layer.cross_attn.post is None
    n_layers = len(m.encoder) * enc + len(m.decoder) * dec
    d = m.cfg.d_model
    per_layer = 7 * d + d * 3 + 3 * d + 1  # P, down, up, s
    counts = parameter_counts(m)
    assert counts["trainable_params"] == n_layers * per_layer
    assert counts["total_params"] == total + n_layers * per_layer
    assert all(".post." in n for n, p in m.named_parameters() if p.requires_grad)


def test_training_changes_only_apt_tensors_and_the_backbone_stays_bit_identical():
    m = _model()
    apply_method(m, TuningConfig(method="apt", apt_prompts=6))
    backbone = {n: p.detach().clone() for n, p in m.named_parameters() if ".post." not in n}
    apt0 = {n: p.detach().clone() for n, p in m.named_parameters() if ".post." in n}
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=0.05)
    x, t, y = _batch()
    m.train()
    for _ in range(3):
        loss = m.sequence_loss(x, t, y).mean()
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is None for n, p in m.named_parameters() if n in backbone)
        opt.step()
    for n, p in m.named_parameters():
        if n in backbone:
            assert torch.equal(p, backbone[n]), n
    changed = [n for n, p in m.named_parameters() if n in apt0 and not torch.equal(p, apt0[n])]
    assert any(n.endswith("prompts") for n in changed) and any(n.endswith("scale") for n in changed)


def test_gradients_reach_the_pixels_through_the_apt_layers():
    m = _model()
    apply_method(m, TuningConfig(method="apt", apt_prompts=6))
    with torch.no_grad():  # a trained-looking APT: its term is not negligible
        for layer in list(m.encoder) + list(m.decoder):
            layer.self_attn.post.prompts.normal_(0, 0.5)
    m.eval()
    x, t, y = _batch(2)

    def pixel_grad():
        img = x.clone().requires_grad_(True)
        m.sequence_loss(img, t, y).sum().backward()
        return img.grad

    with_apt = pixel_grad()
    posts = [layer.self_attn.post for layer in list(m.encoder) + list(m.decoder)]
    for layer in list(m.encoder) + list(m.decoder):
        layer.self_attn.post = None
    without = pixel_grad()
    assert with_apt.abs().sum() > 0 and not torch.allclose(with_apt, without)
    assert all(p.prompts.grad is not None and p.prompts.grad.abs().sum() > 0 for p in posts)


def test_the_checkpoint_keeps_only_apt_tensors_and_round_trips_to_identical_logits(base, apt_ckpt):
    saved = load_file(str(apt_ckpt / ckpt.WEIGHTS))
    assert saved and all(".self_attn.post." in k for k in saved)
    meta = ckpt.read_meta(apt_ckpt)
    assert meta["base"]["sha256"] == ckpt.sha256_file(base / ckpt.WEIGHTS)
    assert meta["tuning"] == {"method": "apt", "apt_prompts": 6, "apt_depth": "both", "apt_rank": 4, "apt_dropout": 0.1}
    a, b = ckpt.load(apt_ckpt), ckpt.load(apt_ckpt)
    plain = ckpt.load(base)
    for n, p in plain.named_parameters():  # every backbone tensor as in the base
        assert torch.equal(p, dict(a.named_parameters())[n]), n
    x, t, _ = _batch(3)
    cands = ["0", "1", "2", "3"]
    with torch.no_grad():
        la = a.candidate_logits(x, t, cands)
        assert torch.equal(la, b.candidate_logits(x, t, cands))
        assert not torch.allclose(la, plain.candidate_logits(x, t, cands))  # APT changes the model


def test_an_apt_checkpoint_that_lacks_one_of_its_tensors_is_refused(apt_ckpt, tmp_path):
    import shutil

    from safetensors.torch import save_file

    broken = tmp_path / "apt"
    shutil.copytree(apt_ckpt, broken)
    tensors = load_file(str(broken / ckpt.WEIGHTS))
    save_file({k: v for k, v in tensors.items() if k != "decoder.1.self_attn.post.scale"}, str(broken / ckpt.WEIGHTS))
    with pytest.raises(CheckpointError, match="lacks decoder.1.self_attn.post.scale"):
        ckpt.load(broken)


def test_an_apt_checkpoint_on_a_changed_base_is_refused(base, apt_ckpt, tmp_path):
    import shutil

    moved_base = tmp_path / "base"
    shutil.copytree(base, moved_base)
    moved = tmp_path / "apt"
    shutil.copytree(apt_ckpt, moved)
    meta = ckpt.read_meta(moved)
    meta["base"]["path"] = str(moved_base)
    (moved / ckpt.META).write_text(__import__("json").dumps(meta))
    other = _model(seed=1)
    ckpt.save(other, moved_base, {"method": "pretrain", "name": "base-tiny", "task": None})
    with pytest.raises(CheckpointError, match="tuned on"):
        ckpt.load(moved)


@pytest.mark.parametrize(
    "options,match",
    [
        ({"apt_prompts": 0}, "apt prompts must be a positive integer"),
        ({"apt_prompts": -3}, "apt prompts must be a positive integer"),
        ({"apt_rank": 0}, "apt rank must be a positive integer"),
        ({"apt_depth": "middle"}, "unknown APT depth"),
        ({"apt_dropout": 1.0}, "dropout must be in"),
    ],
)
def test_bad_apt_options_are_one_line_errors(options, match):
    with pytest.raises(ConfigError, match=match):
        TuningConfig(method="apt", **options)


@pytest.mark.parametrize("flag,value", [("--apt-prompts", 0), ("--apt-rank", 0), ("--apt-prompts", -1)])
def test_bad_apt_options_from_the_cli_exit_2_and_write_nothing(base, tmp_path, flag, value):
    out = tmp_path / "out"
    r = invoke("train", "--base", base, "--task", "shapes-vqa", "--method", "apt", flag, value, "--out", out)
    assert_one_line_error(r, "must be a positive integer")
    assert not out.exists()
