"""Tuning methods come from one registry (robust_pt/tuning/registry.py).

Every registered method trains a step on a tiny model and its checkpoint round-trips; a toy
method registered here, in the test file alone, shows up in the CLI's options, in recipe
validation, in training and loading and in the reports' names, order and colours; unknown
methods and options are refused with one line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field

import pytest
import torch
import yaml
from safetensors.torch import load_file
from torch import nn

import robust_pt
from robust_pt.errors import ConfigError
from robust_pt.models.ofa import build
from robust_pt.tasks.vocab import WORDS, bin_tokens
from robust_pt.tuning import checkpoint as ckpt
from robust_pt.tuning import registry
from robust_pt.tuning.config import TuningConfig
from robust_pt.tuning.methods import apply_method, freeze, parameter_counts
from tests._cli import assert_one_line_error, invoke

VOCAB = list(WORDS) + bin_tokens()
BUILTIN = [m.name for m in registry.builtin_methods()]
HF = [m.name for m in registry.hf_methods()]
OFA = [m.name for m in registry.builtin_methods() if "mini-ofa" in m.architectures]
# the Hugging Face methods a ViLT takes (the CLIP prompt learners: tests/test_clip_learners_hf.py)
VILT = [m.name for m in registry.hf_methods() if m.hf.needs != "class_prompts"]
FAST = ["--steps", 1, "--batch-size", 4, "--train-size", 8, "--eval-size", 4, "--threads", 1]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("reg-base") / "base"
    ckpt.save(build("tiny", vocab=VOCAB), d, {"method": "pretrain", "name": "base-tiny", "task": None})
    return d


def _batch(n=4):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, 48, 48, generator=g), ["what color is the circle?"] * n, ["red"] * n


def _logits(model):
    x, t, _ = _batch(2)
    with torch.no_grad():
        return model.eval().candidate_logits(x, t, ["red", "blue", "two"])


# ----------------------------------------------------------------------------- every registered method


def test_registry_lists_the_methods_in_report_order():
    assert BUILTIN == ["finetune", "prompt", "adapter", "bitfit", "lora", "apt", "coop", "vpt", "maple", "linear-probe"]
    assert HF == ["finetune", "prompt", "lora", "ia3", "apt", "coop", "vpt", "maple", "linear-probe"]
    assert VILT == ["finetune", "prompt", "lora", "ia3", "apt"]
    assert registry.report_order() == BUILTIN
    assert OFA == ["finetune", "prompt", "adapter", "bitfit", "lora", "apt"]
    assert registry.get("prompt").prompt_like and registry.get("apt").prompt_like
    assert not registry.get("lora").prompt_like
    assert not registry.get(registry.REFERENCE).delta and all(registry.get(m).delta for m in BUILTIN[1:])


@pytest.mark.parametrize("method", OFA)
def test_every_builtin_method_trains_a_step_and_round_trips(base, tmp_path, method):
    spec = registry.get(method)
    model = ckpt.load(base)
    tcfg = TuningConfig(method)
    apply_method(model, tcfg)
    assert tcfg.relevant() == spec.relevant(spec.options()) and tcfg.relevant()["method"] == method
    frac = parameter_counts(model)["trainable_fraction"]
    assert (frac == 1.0) if not spec.delta else (0 < frac < 0.5)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    x, t, y = _batch()
    loss = model.sequence_loss(x, t, y).mean()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable, sorted(changed - trainable)[:3]
    meta = {"method": method, "task": "shapes-vqa", "tuning": tcfg.relevant()}
    ckpt.save(model, tmp_path / "ck", meta, base_dir=base if spec.delta else None)
    stored = set(load_file(str(tmp_path / "ck" / "model.safetensors")))
    assert stored == (trainable if spec.delta else set(model.state_dict()))
    assert torch.allclose(_logits(robust_pt.load_model(tmp_path / "ck")), _logits(model))


@pytest.fixture(scope="module")
def vilt(tmp_path_factory):
    from robust_pt.tasks.shapes_tasks import PRETRAIN_ANSWERS
    from robust_pt.testing.hf_tiny import save_tiny

    return save_tiny("vilt", tmp_path_factory.mktemp("reg-hf") / "vilt", answers=PRETRAIN_ANSWERS)


@pytest.mark.parametrize("method", VILT)
def test_every_hf_method_trains_a_step(vilt, tmp_path, method):
    from robust_pt.tuning.hf_train import HFTrainConfig, train_hf

    spec = registry.get(method)
    cfg = HFTrainConfig(method=method, steps=1, batch_size=4, train_size=8, eval_size=0, device="cpu")
    meta = train_hf(vilt, "shapes-vqa", cfg, tmp_path / method, log=lambda *_: None)
    assert meta["method"] == method and meta["lr"] == spec.hf.lr
    assert (meta["trainable_fraction"] == 1.0) == spec.hf.full
    assert set(meta["identity"]["config"]) == {
        "method",
        "steps",
        "batch_size",
        "lr",
        "warmup",
        "weight_decay",
        "seed",
        "train_size",
        "eval_size",
        *(o for o in spec.hf.options if o not in spec.hf.later),  # a later option at its default: not recorded
    }
    saved = (
        "model.safetensors"
        if spec.hf.full
        else "delta_model.safetensors"  # robust-pt's own (OnHF.attach; models/hf/delta.py)
        if spec.hf.attach is not None
        else "adapter_model.safetensors"
    )
    assert (tmp_path / method / saved).exists()


# ----------------------------------------------------------------------------- a toy method, registered here


class Gain(nn.Module):
    """y -> y * (1 + g) after an attention's output projection (MiniOFA's Attention.post hook)."""

    def __init__(self, g: float):
        super().__init__()
        self.g = nn.Parameter(torch.tensor(float(g)))

    def forward(self, x, y):
        return y * (1 + self.g)


@dataclass(frozen=True)
class ToyOptions:
    toy_gain: float = field(default=0.5, metadata={"help": "initial gain"})
    toy_layers: int = 1

    def __post_init__(self):
        if self.toy_layers <= 0:
            raise ConfigError(f"toy layers must be a positive integer, got {self.toy_layers}")


def _apply_toy(model, o: ToyOptions) -> None:
    freeze(model)
    for layer in list(model.encoder)[: o.toy_layers]:
        layer.self_attn.post = Gain(o.toy_gain)


TOY = registry.TuningMethod(
    "toy",
    "the toy method",
    ToyOptions,
    apply=_apply_toy,
    lr=1e-2,
    colour="#000000",
    help="a gain after the first attention layers",
)


@pytest.fixture
def toy():
    registry.register(TOY)
    yield TOY
    registry.unregister("toy")


def test_toy_method_trains_and_loads_from_the_cli(toy, base, tmp_path):
    out = invoke("train", "--help").output
    assert "--toy-gain" in out and "--toy-layers" in out and "toy" in out
    r = invoke(
        "train",
        "--base",
        base,
        "--task",
        "shapes-vqa",
        "--method",
        "toy",
        "--toy-gain",
        0.25,
        "--prompt-length",
        4,
        "--out",
        tmp_path / "toy",
        *FAST,
    )  # another method's option: ignored
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "toy" / "meta.json").read_text())
    assert meta["tuning"] == {"method": "toy", "toy_gain": 0.25, "toy_layers": 1} and meta["lr"] == 1e-2
    assert set(load_file(str(tmp_path / "toy" / "model.safetensors"))) == {"encoder.0.self_attn.post.g"}
    m = robust_pt.load_model(tmp_path / "toy")
    assert isinstance(m.encoder[0].self_attn.post, Gain) and m.encoder[1].self_attn.post is None
    assert float(m.encoder[0].self_attn.post.g) != 0.25  # trained a step
    assert_one_line_error(
        invoke(
            "train",
            "--base",
            base,
            "--task",
            "shapes-vqa",
            "--method",
            "toy",
            "--toy-layers",
            0,
            "--out",
            tmp_path / "bad",
            *FAST,
        ),
        "toy layers must be a positive integer",
    )


def test_toy_method_in_recipes(toy, base, tmp_path):
    from robust_pt.recipe import load_recipe, tuning_keys

    def recipe(entry):
        p = tmp_path / "r.yaml"
        p.write_text(
            yaml.safe_dump(
                {
                    "name": "toyrecipe",
                    "base": str(base),
                    "tasks": ["shapes-vqa"],
                    "tuning": [entry],
                    "attacks": [{"attack": "fgsm", "eps": ["1/255"]}],
                }
            )
        )
        return p

    assert {"toy_gain", "toy_layers", "steps", "method"} <= tuning_keys("toy")
    r = load_recipe(recipe({"method": "toy", "toy_gain": 0.1, "steps": 2}))
    assert r.tuning[0].name == "toy" and r.tuning[0].tuning.relevant() == {
        "method": "toy",
        "toy_gain": 0.1,
        "toy_layers": 1,
    }
    assert r.tuning[0].train.steps == 2
    with pytest.raises(ConfigError, match=r"unknown key 'prompt_length' \(prompt_length is an option of prompt"):
        load_recipe(recipe({"method": "toy", "prompt_length": 4}))
    with pytest.raises(ConfigError, match="unknown key 'toy_gian'"):
        load_recipe(recipe({"method": "toy", "toy_gian": 4}))
    with pytest.raises(ConfigError, match="toy_gain must be a number, got 'x'"):
        load_recipe(recipe({"method": "toy", "toy_gain": "x"}))


def test_toy_method_in_reports(toy, tmp_path):
    import numpy as np

    from robust_pt.report import plots
    from robust_pt.report.load import METHOD_NAMES, method_rank
    from robust_pt.report.tables import method_name
    from tests.report.helpers import write_run

    assert METHOD_NAMES["toy"] == "the toy method" == method_name("toy") and plots.PALETTE["toy"] == "#000000"
    assert registry.report_order()[-1] == "toy" and method_rank("toy") == len(BUILTIN) and method_rank("ia3") == 99
    rng = np.random.default_rng(0)
    clean = [True] * 30
    paths = [
        write_run(tmp_path / m, f"{m}-vqa", {2 / 255: rng.random(30) < 0.6}, clean, model_cfg={"method": m})
        for m in ("toy", "prompt", "finetune")
    ]
    rep = robust_pt.report(paths, out=tmp_path / "rep", n_boot=100, figures=False)
    assert list(dict.fromkeys(rep.summary["method"])) == ["finetune", "prompt", "toy"]
    assert "the toy method" in (tmp_path / "rep" / "report.md").read_text()
    assert plots.method_order(["zeta", "toy", "finetune"]) == ["finetune", "toy", "zeta"]


def test_a_prompt_like_method_gets_factor_panels(tmp_path):
    import numpy as np

    from robust_pt.report.factors import TITLES, panels, value_label
    from robust_pt.report.load import load_runs
    from tests.report.helpers import write_run

    @dataclass(frozen=True)
    class Opts:
        toy_m: int = 8

    spec = registry.TuningMethod(
        "toyprompt",
        "toy prompts",
        Opts,
        apply=_apply_toy,
        lr=1e-2,
        prompt_like=True,
        factors=(registry.Factor("toy_m", "prompt count", label=lambda v: f"M={v}"),),
    )
    registry.register(spec)
    try:
        rng = np.random.default_rng(0)
        paths = []
        for m in (4, 16, 8):
            p = write_run(
                tmp_path / f"t{m}",
                f"toyprompt-M{m}",
                {2 / 255: rng.random(20) < 0.5},
                [True] * 20,
                model_cfg={"method": "toyprompt"},
            )
            meta = json.loads((p / "run.json").read_text())
            meta["model_meta"] = {"method": "toyprompt", "tuning": {"method": "toyprompt", "toy_m": m}}
            (p / "run.json").write_text(json.dumps(meta))
            paths.append(p)
        (panel,) = panels(load_runs(paths))
        assert panel.method == "toyprompt" and panel.factor == "toy_m" and panel.values == [4, 8, 16]
        assert TITLES["toy_m"] == "prompt count" and value_label("toy_m", 4) == "M=4"
    finally:
        registry.unregister("toyprompt")


def test_unregistered_toy_is_gone(base, tmp_path):
    assert registry.find("toy") is None and "--toy-gain" not in invoke("train", "--help").output
    assert_one_line_error(
        invoke("train", "--base", base, "--task", "shapes-vqa", "--method", "toy", "--out", tmp_path / "x", *FAST),
        "unknown tuning method 'toy'",
    )


# ----------------------------------------------------------------------------- one line for every mistake


def test_unknown_methods_and_options_are_refused_with_one_line(base, tmp_path):
    assert_one_line_error(
        invoke("train", "--base", base, "--task", "shapes-vqa", "--method", "magic", "--out", tmp_path / "x", *FAST),
        "unknown tuning method 'magic'",
        "prompt, adapter",
    )
    with pytest.raises(ConfigError, match="unknown tuning method 'qlora'; choose one of finetune, prompt"):
        TuningConfig("qlora")
    with pytest.raises(ConfigError, match="'ia3' runs on Hugging Face bases only"):
        TuningConfig("ia3")
    with pytest.raises(
        ConfigError,
        match=r"unknown option 'adapter_dim' for tuning method prompt \(adapter_dim is "
        r"an option of adapter\)",
    ):
        TuningConfig("prompt", adapter_dim=4)
    with pytest.raises(ConfigError, match="prompt_reparam must be true or false, got 1"):
        TuningConfig("prompt", prompt_reparam=1)
    with pytest.raises(ConfigError, match="lora_r must be an integer, got 2.5"):
        TuningConfig("lora", lora_r=2.5)
    from robust_pt.tuning.hf_train import HFTrainConfig

    with pytest.raises(
        ConfigError,
        match="unknown method 'bitfit' for a Hugging Face base; choose one of finetune, "
        "prompt, lora, ia3, apt, coop, vpt, maple, linear-probe .adapter and bitfit are built-in-model methods.",
    ):
        HFTrainConfig(method="bitfit")
    from robust_pt.recipe import load_recipe

    p = tmp_path / "r.yaml"
    p.write_text(
        yaml.safe_dump(
            {"base": str(base), "tasks": ["shapes-vqa"], "tuning": [{"method": "qlora"}], "attacks": ["fgsm"]}
        )
    )
    with pytest.raises(ConfigError, match=r"tuning\[0\]: unknown tuning method 'qlora'.*\(or none: the untuned base\)"):
        load_recipe(p)


def test_register_refuses_bad_methods():
    with pytest.raises(ConfigError, match="already registered"):
        registry.register(registry.TuningMethod("prompt", "again", apply=_apply_toy, lr=1.0))

    @dataclass(frozen=True)
    class Steps:
        steps: int = 3

    with pytest.raises(ConfigError, match="'steps' is a training or CLI key"):
        registry.TuningMethod("x", "x", Steps, apply=_apply_toy, lr=1.0)

    @dataclass
    class Mutable:
        a: int = 1

    with pytest.raises(ConfigError, match="frozen dataclass"):
        registry.TuningMethod("x", "x", Mutable, apply=_apply_toy, lr=1.0)

    @dataclass(frozen=True)
    class FloatLength:
        prompt_length: float = 1.0

    with pytest.raises(ConfigError, match="option 'prompt_length' is float but prompt declares it int"):
        registry.register(registry.TuningMethod("x", "x", FloatLength, apply=_apply_toy, lr=1.0))
    with pytest.raises(ConfigError, match="give `apply`"):
        registry.TuningMethod("x", "x")
    assert registry.find("x") is None


def test_declaring_the_methods_loads_no_torch():
    """The CLI and the reports read the registry at start-up: method modules import torch only when applied."""
    code = (
        "import sys\n"
        "from robust_pt.tuning import registry\n"
        "registry.methods()\n"
        "from robust_pt.cli import _register, app\n"
        "_register()\n"
        "import typer.main\n"
        "typer.main.get_command(app)\n"
        "from robust_pt.report.load import METHOD_NAMES\n"
        "print(sorted(m for m in ('torch', 'peft', 'transformers') if m in sys.modules), len(METHOD_NAMES))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "[]", out.stdout
