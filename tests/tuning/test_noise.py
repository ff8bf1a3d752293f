"""Gaussian data augmentation (`--noise-sigma`, robust_pt/tuning/noise.py): the base classifier randomized
smoothing certifies, trained on x + N(0, sigma^2).

What is checked: a step trains on the batch's images plus noise of the given sigma, drawn from (seed, step)
so a repeated training sees the same noise; the sigma is in the checkpoint's identity and meta and in its
runs' model_meta, where the report names the variant; recipes take it; Hugging Face bases train with it;
bad values, and noise together with adversarial tuning, are one line.
"""

from __future__ import annotations

import json

import pytest
import torch

from robust_pt.errors import ConfigError
from robust_pt.tuning import noise
from robust_pt.tuning.config import TrainConfig, TuningConfig
from robust_pt.tuning.train import tune
from tests._cli import assert_one_line_error, invoke

SHORT = dict(steps=3, batch_size=8, train_size=64, eval_size=16, threads=1)
QUIET = dict(log=lambda *_: None)


def _images_seen(monkeypatch) -> list[torch.Tensor]:
    """Every image batch the model embeds while training (the built-in model's embed)."""
    from robust_pt.models.ofa import MiniOFA as OFA

    seen: list[torch.Tensor] = []
    embed = OFA.embed

    def spy(self, images, texts, *a, **k):
        if torch.is_grad_enabled() and self.training:
            seen.append(images.detach().clone())
        return embed(self, images, texts, *a, **k)

    monkeypatch.setattr(OFA, "embed", spy)
    return seen


def test_training_sees_the_images_plus_noise_of_its_sigma(tmp_path, monkeypatch):
    seen = _images_seen(monkeypatch)
    meta = tune(
        "builtin:base-small", "shapes-vqa", TuningConfig("bitfit"), TrainConfig(**SHORT), tmp_path / "a",
        noise_sigma=0.25, **QUIET,
    )  # fmt: skip
    noisy = list(seen)
    seen.clear()
    tune("builtin:base-small", "shapes-vqa", TuningConfig("bitfit"), TrainConfig(**SHORT), tmp_path / "b", **QUIET)
    clean = list(seen)
    assert len(noisy) == len(clean) == SHORT["steps"]
    for x, x0 in zip(noisy, clean):  # the same batches (same seed), plus noise
        d = (x - x0).flatten()
        assert abs(float(d.std()) - 0.25) < 0.01 and abs(float(d.mean())) < 0.01
    assert float((noisy[0] - clean[0] - (noisy[1] - clean[1])).abs().max()) > 0.1  # fresh noise at every step
    assert meta["noise_sigma"] == 0.25 and meta["identity"]["noise_sigma"] == 0.25
    assert "noise_sigma" not in json.loads((tmp_path / "b" / "meta.json").read_text())
    seen.clear()
    tune(
        "builtin:base-small", "shapes-vqa", TuningConfig("bitfit"), TrainConfig(**SHORT), tmp_path / "c",
        noise_sigma=0.25, **QUIET,
    )  # fmt: skip
    assert all(torch.equal(a, b) for a, b in zip(seen, noisy))  # the same noise again: seeded per (seed, step)


def test_a_noise_tuned_checkpoint_is_its_own_variant(tmp_path):
    from robust_pt.report.load import load_run

    out = tmp_path / "m"
    r = invoke("train", "--base", "builtin:base-small", "--task", "shapes-vqa", "--method", "bitfit", "--out", out,
               "--steps", 2, "--batch-size", 4, "--train-size", 16, "--eval-size", 4, "--threads", 1,
               "--noise-sigma", "0.5")  # fmt: skip
    assert r.exit_code == 0, r.output
    run_dir = tmp_path / "run"
    r = invoke("attack", "--model", out, "--attack", "pgd", "--eps", "8/255", "--steps", 2, "--limit", 4,
               "--out", run_dir)  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads((run_dir / "run.json").read_text())["model_meta"]["noise_sigma"] == 0.5
    assert load_run(run_dir).variant == "noise 0.5"


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--noise-sigma", "0"], "--noise-sigma must be a number > 0"),
        (["--noise-sigma", "-0.25"], "--noise-sigma must be a number > 0"),
        (["--noise-sigma", "0.25", "--adversarial", "pgd", "--adv-eps", "4/255"], "cannot be combined"),
    ],
)
def test_bad_noise_settings_are_one_line(tmp_path, args, needle):
    r = invoke("train", "--base", "builtin:base-small", "--task", "shapes-vqa", "--out", tmp_path / "x", *args)
    assert_one_line_error(r, needle)
    assert not (tmp_path / "x" / "meta.json").exists()


def test_check_sigma():
    assert noise.check_sigma(None) is None and noise.check_sigma("0.5") == 0.5
    for bad in (0, -1, "x", float("nan"), True):
        with pytest.raises(ConfigError, match="must be a number > 0"):
            noise.check_sigma(bad)


def test_the_recipe_key(tmp_path):
    from robust_pt.recipe import load_recipe

    def recipe(value: str) -> str:
        p = tmp_path / "r.yaml"
        p.write_text(
            f"name: r\ntasks: [shapes-vqa]\ntuning:\n  - {{method: prompt, steps: 5, noise_sigma: {value}}}\n"
            "attacks:\n  - {attack: smoothing, eps: [0, 0.25]}\n"
        )
        return str(p)

    assert load_recipe(recipe("0.25")).tuning[0].noise_sigma == 0.25
    with pytest.raises(ConfigError, match="noise_sigma must be a number > 0"):
        load_recipe(recipe("0"))


@pytest.fixture(scope="module")
def vilt(tmp_path_factory):
    from robust_pt.tasks.shapes_tasks import PRETRAIN_ANSWERS
    from robust_pt.testing.hf_tiny import save_tiny

    return save_tiny("vilt", tmp_path_factory.mktemp("noise-hf") / "vilt", answers=PRETRAIN_ANSWERS)


def test_a_hugging_face_base_trains_on_noise(vilt, tmp_path, monkeypatch):
    from robust_pt.tuning import hf_train

    sigmas = []
    noisy = noise.noisy

    def spy(images, sigma, seed, step):
        sigmas.append(sigma)
        return noisy(images, sigma, seed, step)

    monkeypatch.setattr(noise, "noisy", spy)
    out = tmp_path / "lora"
    cfg = hf_train.HFTrainConfig(
        method="lora", steps=2, batch_size=4, train_size=16, eval_size=4, threads=1, device="cpu", noise_sigma=0.25
    )
    meta = hf_train.train_hf(vilt, "shapes-vqa", cfg, out)
    assert sigmas == [0.25, 0.25]
    assert meta["noise_sigma"] == 0.25 and cfg.identity()["noise_sigma"] == 0.25
    with pytest.raises(ConfigError, match="must be a number > 0"):
        hf_train.HFTrainConfig(method="lora", noise_sigma=0)
