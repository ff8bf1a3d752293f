"""Checkpoints verify themselves (robust_pt/tuning/checkpoint.py): what robust-pt writes records the
sha256 of its own weight files, loading checks it, a checkpoint without the hashes is refused when a
weight is NaN or Inf, and a built-in checkpoint that lost its meta.json is named as such. Each bad
checkpoint is one CheckpointError, and exit code 2 with one line from the CLI."""

from __future__ import annotations

import json
import shutil
import struct

import pytest
import torch

import robust_pt
from robust_pt.errors import CheckpointError
from robust_pt.models.ofa import build
from robust_pt.tasks.vocab import WORDS, bin_tokens
from robust_pt.tuning import checkpoint as ckpt

from ._cli import assert_one_line_error, invoke

MISMATCH = "does not match the sha256 in its meta.json: the file is corrupt or was changed"


def corrupt(f, n: int = 4000) -> None:
    """Overwrite `n` bytes in the middle of a safetensors file's data with 0xFF (NaN as float32 and
    bfloat16), keeping its header valid: the file still loads."""
    raw = bytearray(f.read_bytes())
    start = 8 + struct.unpack("<Q", raw[:8])[0]
    mid = start + (len(raw) - start - n) // 2
    assert mid >= start and mid + n <= len(raw)
    raw[mid : mid + n] = b"\xff" * n
    f.write_bytes(bytes(raw))


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    d = tmp_path / "ckpt"
    ckpt.save(build("tiny", vocab=list(WORDS) + bin_tokens()), d, {"method": "finetune", "task": "shapes-vqa"})
    return d


def _drop_hash(meta_file) -> None:
    meta = json.loads(meta_file.read_text())
    del meta[ckpt.WEIGHTS_SHA]
    meta_file.write_text(json.dumps(meta, indent=1))


def test_a_saved_checkpoint_records_its_own_sha256(saved):
    meta = json.loads((saved / ckpt.META).read_text())
    assert meta[ckpt.WEIGHTS_SHA] == {ckpt.WEIGHTS: ckpt.sha256_file(saved / ckpt.WEIGHTS)}
    assert ckpt.load(saved).meta["task"] == "shapes-vqa"


def test_corrupt_weights_are_refused(saved):
    corrupt(saved / ckpt.WEIGHTS)
    from safetensors.torch import load_file

    assert any(torch.isnan(t).any() for t in load_file(str(saved / ckpt.WEIGHTS)).values())  # it would load
    with pytest.raises(CheckpointError, match=MISMATCH) as err:
        robust_pt.load_model(saved)
    assert str(err.value).startswith(f"{saved / ckpt.WEIGHTS} does not match")
    assert "re-create it (robust-pt train ...) or restore it" in str(err.value)


def test_corrupt_checkpoint_is_one_line_from_the_cli(saved, tmp_path):
    corrupt(saved / ckpt.WEIGHTS)
    run = tmp_path / "run"
    res = invoke("attack", "--model", saved, "--task", "shapes-vqa", "--attack", "pgd", "--limit", "2", "--out", run)
    assert_one_line_error(res, str(saved / ckpt.WEIGHTS), "sha256")
    assert not (run / "records.jsonl").exists()


def test_without_the_hash_nan_weights_are_refused(saved):
    _drop_hash(saved / ckpt.META)
    assert ckpt.load(saved) is not None  # an older checkpoint (no hashes) still loads
    corrupt(saved / ckpt.WEIGHTS)
    with pytest.raises(CheckpointError, match="holds non-finite weights .NaN or Inf in "):
        ckpt.load(saved)


def test_without_the_hash_inf_weights_are_refused(saved):
    from safetensors.torch import load_file, save_file

    _drop_hash(saved / ckpt.META)
    tensors = load_file(str(saved / ckpt.WEIGHTS))
    name = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[name].view(-1)[0] = float("inf")
    save_file(tensors, str(saved / ckpt.WEIGHTS), metadata={"format": ckpt.FORMAT})
    with pytest.raises(CheckpointError, match=f"non-finite weights .NaN or Inf in {name}."):
        ckpt.load(saved)


def test_a_missing_meta_json_is_named(saved, tmp_path):
    (saved / ckpt.META).unlink()
    with pytest.raises(CheckpointError, match=f"{saved} has no meta.json") as err:
        robust_pt.load_model(saved)
    assert "names no architecture" not in str(err.value)
    res = invoke("attack", "--model", saved, "--task", "shapes-vqa", "--attack", "pgd", "--out", tmp_path / "run")
    assert_one_line_error(res, "has no meta.json")
    res = invoke("train", "--base", saved, "--task", "shapes-vqa", "--out", tmp_path / "pt", "--steps", "1")
    assert_one_line_error(res, "has no meta.json")


@pytest.mark.parametrize(
    "asset,meta",
    [("base-small", ckpt.META), ("tiny-llava", "robust_pt.json"), ("tiny-llava-captions", "robust_pt.json")],
)
def test_committed_assets_carry_matching_hashes(asset, meta):
    d = ckpt.builtin_dir(asset)
    assert ckpt.verify_weights(d, json.loads((d / meta).read_text()), meta)


def test_hf_directories_record_and_check_their_hashes(tmp_path):
    from safetensors.torch import save_file

    from robust_pt.tuning.hf_train import _write

    out = tmp_path / "hf"
    _write(out, {"format": "robust-pt-hf/1"}, lambda tmp: save_file({"w": torch.ones(3)}, str(tmp / "x.safetensors")))
    meta = json.loads((out / "robust_pt.json").read_text())
    assert meta[ckpt.WEIGHTS_SHA] == {"x.safetensors": ckpt.sha256_file(out / "x.safetensors")}

    llava = tmp_path / "tiny-llava"
    shutil.copytree(ckpt.builtin_dir("tiny-llava"), llava)
    corrupt(llava / "model.safetensors")
    with pytest.raises(CheckpointError, match="does not match the sha256 in its robust_pt.json"):
        robust_pt.load_model(llava, device="cpu")
    _drop_hash(llava / "robust_pt.json")
    with pytest.raises(CheckpointError, match=f"{llava} holds non-finite weights"):
        robust_pt.load_model(llava, device="cpu")
