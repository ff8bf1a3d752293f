"""Checkpoints: round trips, tuned-only tensors on a verified base, and every bad input
as one clear error (and exit code 2 from the CLI)."""

import ast
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import robust_pt
from robust_pt.cli import _register, app
from robust_pt.errors import CheckpointError, ConfigError, TaskError
from robust_pt.models.ofa import build
from robust_pt.tasks.vocab import WORDS, bin_tokens
from robust_pt.tuning import checkpoint as ckpt
from robust_pt.tuning.config import TrainConfig, TuningConfig
from robust_pt.tuning.train import tune

FAST = TrainConfig(steps=2, batch_size=4, train_size=16, eval_size=8, threads=1)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("base") / "base"
    m = build("tiny", vocab=list(WORDS) + bin_tokens())
    ckpt.save(m, d, {"method": "pretrain", "name": "base-tiny", "task": None})
    return d


@pytest.fixture(scope="module")
def prompt_ckpt(base, tmp_path_factory):
    out = tmp_path_factory.mktemp("pt") / "pt"
    tune(base, "shapes-vqa", TuningConfig(method="prompt", prompt_length=4), FAST, out, log=lambda *_: None)
    return out


def _logits(model):
    from robust_pt.tasks import load_task, stack_images

    exs = list(load_task("shapes-vqa", limit=4, size=48))
    return model.candidate_logits(stack_images(exs), [e.text for e in exs], ["red", "yes", "two"])


def test_roundtrip_and_tuned_checkpoint_stores_only_tuned_tensors(base, prompt_ckpt):
    meta = json.loads((prompt_ckpt / "meta.json").read_text())
    assert meta["method"] == "prompt" and meta["task"] == "shapes-vqa" and meta["answers"]
    assert "accuracy" in meta["clean_metrics"] and meta["base"]["sha256"] == ckpt.sha256_file(
        base / "model.safetensors"
    )
    assert 0 < meta["trainable_fraction"] < 0.05
    stored = load_file(str(prompt_ckpt / "model.safetensors"))
    assert stored and all(k.startswith("prompt.") for k in stored)
    m1, m2 = robust_pt.load_model(prompt_ckpt), robust_pt.load_model(str(prompt_ckpt))
    assert torch.equal(_logits(m1), _logits(m2))
    assert not torch.equal(_logits(m1), _logits(robust_pt.load_model(base)))


def test_finetuned_checkpoint_stores_everything(base, tmp_path):
    out = tmp_path / "ft"
    tune(base, "shapes-ve", TuningConfig(method="finetune"), FAST, out, log=lambda *_: None)
    stored = load_file(str(out / "model.safetensors"))
    m = robust_pt.load_model(out)
    assert set(stored) == set(m.state_dict()) and m.meta["task"] == "shapes-ve"


@pytest.mark.parametrize("method", ["adapter", "bitfit", "lora"])
def test_baseline_methods_roundtrip(base, tmp_path, method):
    out = tmp_path / method
    tune(base, "shapes-vqa", TuningConfig(method=method), FAST, out, log=lambda *_: None)
    m = robust_pt.load_model(out)
    assert m.meta["method"] == method and torch.isfinite(_logits(m)).all()


def test_missing_dir(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        robust_pt.load_model(tmp_path / "nope")


def test_corrupt_and_truncated_weights(base, tmp_path):
    import shutil

    for how in ("truncate", "garbage"):
        d = tmp_path / how
        shutil.copytree(base, d)
        w = d / "model.safetensors"
        data = w.read_bytes()
        w.write_bytes(data[: len(data) // 2] if how == "truncate" else b"\x00garbage" * 10)
        with pytest.raises(CheckpointError, match="corrupt or truncated"):
            robust_pt.load_model(d)


def test_changed_base_is_refused(base, prompt_ckpt, tmp_path):
    import shutil

    b2, p2 = tmp_path / "base", tmp_path / "pt"
    shutil.copytree(base, b2)
    shutil.copytree(prompt_ckpt, p2)
    meta = json.loads((p2 / "meta.json").read_text())
    meta["base"]["path"] = str(b2)
    (p2 / "meta.json").write_text(json.dumps(meta))
    robust_pt.load_model(p2)  # same bytes: fine
    m = build("tiny", vocab=list(WORDS) + bin_tokens())
    ckpt.save(m, b2, {"method": "pretrain"})  # different weights
    with pytest.raises(CheckpointError, match="sha256"):
        robust_pt.load_model(p2)


def test_out_dir_holding_another_checkpoint(base, prompt_ckpt):
    with pytest.raises(CheckpointError, match="--overwrite"):
        tune(base, "shapes-vqa", TuningConfig(method="bitfit"), FAST, prompt_ckpt, log=lambda *_: None)
    # the same config is reused, not retrained
    meta = tune(
        base, "shapes-vqa", TuningConfig(method="prompt", prompt_length=4), FAST, prompt_ckpt, log=lambda *_: None
    )
    assert meta["method"] == "prompt"


def test_unknown_task_and_method(base, tmp_path):
    with pytest.raises(TaskError, match="unknown task"):
        tune(base, "shapes-vqa2", TuningConfig(method="prompt"), FAST, tmp_path / "x", log=lambda *_: None)
    with pytest.raises(ConfigError):
        TuningConfig(method="prefix")


def _weights_only(node: ast.Call) -> bool:
    return any(k.arg == "weights_only" and getattr(k.value, "value", None) is True for k in node.keywords)


def _unpickling_sites(tree: ast.AST) -> list[str]:
    """Code (not strings or docs) that imports pickle or calls torch.load / *.load on pickle; torch.load with
    weights_only=True (tensors and plain containers only: CoOp's files) is allowed."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            found += [n for n in names if n.split(".")[0] in ("pickle", "dill", "cloudpickle", "joblib")]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if (
                isinstance(owner, ast.Name)
                and owner.id in ("torch", "pickle", "np", "numpy")
                and node.func.attr in ("load", "loads")
            ):
                if owner.id in ("np", "numpy") and not any(
                    k.arg == "allow_pickle" and getattr(k.value, "value", False) is True for k in node.keywords
                ):
                    continue
                if owner.id == "torch" and node.func.attr == "load" and _weights_only(node):
                    continue
                found.append(f"{owner.id}.{node.func.attr} (line {node.lineno})")
    return found


def test_no_pickle_loading_anywhere():
    src = Path(robust_pt.__file__).parent
    for f in src.rglob("*.py"):
        assert not _unpickling_sites(ast.parse(f.read_text())), f


def test_unpickling_detector_catches_real_calls():
    assert _unpickling_sites(ast.parse("import pickle\npickle.load(f)"))
    assert _unpickling_sites(ast.parse("import torch\ntorch.load('x.pt')"))
    assert _unpickling_sites(ast.parse("import torch\ntorch.load('x.pt', weights_only=False)"))
    assert not _unpickling_sites(ast.parse("import torch\ntorch.load('x.pt', weights_only=True)"))
    assert not _unpickling_sites(ast.parse("msg = 'use pickle.load once'"))


runner = CliRunner()
_register()


def _cli(*args):
    res = runner.invoke(app, list(args))
    return res.exit_code, res.output  # click 8.2+: stdout and stderr interleaved


@pytest.mark.parametrize(
    "args,needle",
    [
        (["eval", "--model", "/no/such/ckpt"], "does not exist"),
        (["train", "--base", "/no/such/base", "--task", "shapes-vqa", "--out", "/tmp/x"], "does not exist"),
        (["train", "--base", "BASE", "--task", "shapes-nope", "--out", "OUT"], "unknown task"),
        (
            ["train", "--base", "BASE", "--task", "shapes-vqa", "--method", "magic", "--out", "OUT"],
            "unknown tuning method",
        ),
        (["train", "--base", "BASE", "--task", "shapes-vqa", "--prompt-length", "0", "--out", "OUT"], "prompt length"),
        (["train", "--base", "BASE", "--task", "shapes-vqa", "--method", "bitfit", "--out", "PT"], "--overwrite"),
    ],
)
def test_cli_bad_input_exit_2_one_line(base, prompt_ckpt, tmp_path, args, needle):
    args = [
        str(base) if a == "BASE" else str(tmp_path / "o") if a == "OUT" else str(prompt_ckpt) if a == "PT" else a
        for a in args
    ]
    before = (prompt_ckpt / "model.safetensors").read_bytes()
    code, out = _cli(*args, "--steps", "1") if args[0] == "train" else _cli(*args)
    assert code == 2, out
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0] and lines[0].startswith("error:"), out
    assert (prompt_ckpt / "model.safetensors").read_bytes() == before  # nothing already written is lost


def test_cli_corrupt_checkpoint_exit_2(base, tmp_path):
    import shutil

    d = tmp_path / "c"
    shutil.copytree(base, d)
    (d / "model.safetensors").write_bytes(b"nope")
    code, out = _cli("eval", "--model", str(d), "--task", "shapes-vqa")
    assert code == 2 and "corrupt" in out
