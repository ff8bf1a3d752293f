"""`robust-pt attack` and `robust-pt list attacks`; every bad input is one line and exit 2."""

from __future__ import annotations

import json

import pytest

from ._cli import assert_one_line_error, invoke


def test_attack_prints_table_and_writes_run(tiny_vqa_dir, tmp_path):
    out = tmp_path / "run"
    r = invoke(
        "attack",
        "--model",
        tiny_vqa_dir,
        "--attack",
        "fgsm",
        "--eps",
        "2/255,8/255",
        "--limit",
        8,
        "--batch-size",
        4,
        "--out",
        out,
    )
    assert r.exit_code == 0, r.output
    assert "clean" in r.stdout and "robust" in r.stdout and "8/255" in r.stdout and str(out) in r.stdout
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "complete" and meta["config"]["task"]["name"] == "shapes-vqa"
    assert meta["config"]["task"]["n"] == 8 and len(meta["summary"]) == 2
    assert (out / "records.jsonl").exists() and (out / "summary.csv").exists()
    # the same command again resumes (nothing to do) and succeeds
    r2 = invoke(
        "attack",
        "--model",
        tiny_vqa_dir,
        "--attack",
        "fgsm",
        "--eps",
        "2/255,8/255",
        "--limit",
        8,
        "--batch-size",
        4,
        "--out",
        out,
    )
    assert r2.exit_code == 0, r2.output
    # a different config into the same dir is refused
    r3 = invoke(
        "attack",
        "--model",
        tiny_vqa_dir,
        "--attack",
        "fgsm",
        "--eps",
        "4/255",
        "--limit",
        8,
        "--batch-size",
        4,
        "--out",
        out,
    )
    assert_one_line_error(r3, "different config", "eps")


def test_list_attacks():
    r = invoke("list", "attacks")
    assert r.exit_code == 0
    for name in ("fgsm", "pgd", "pgd-l2", "apgd-ce", "square", "cw-l2", "autoattack", "emb-fgsm", "emb-pgd"):
        assert name in r.stdout
    assert_one_line_error(invoke("list", "bananas"), "list attacks")


@pytest.mark.parametrize(
    "args,needles",
    [
        (["--attack", "nope"], ["unknown attack 'nope'", "pgd"]),
        (["--attack", "pgd", "--eps", "0"], ["eps must be > 0"]),
        (["--attack", "pgd", "--eps", "-1/255"], ["eps must be > 0"]),
        (["--attack", "pgd", "--eps", "2"], ["larger than 1"]),
        (["--attack", "pgd", "--eps", "8/x"], ["bad eps value"]),
        (["--attack", "pgd", "--steps", "0"], ["steps must be a positive integer"]),
        (["--attack", "fgsm", "--steps", "5"], ["one-step"]),
        (["--attack", "pgd", "--task", "shapes-ve"], ["tuned on shapes-vqa, not shapes-ve"]),
        (["--attack", "pgd", "--task", "shapes-nope"], ["unknown task"]),
        (["--attack", "apgd-ce", "--backend", "foolbox"], ["no foolbox backend"]),
        (["--attack", "pgd", "--backend", "cleverhans"], ["unknown backend"]),
        (["--attack", "pgd", "--limit", "0"], ["--limit must be a positive integer"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tiny_vqa_dir, tmp_path, args, needles):
    r = invoke("attack", "--model", tiny_vqa_dir, *args, "--out", tmp_path / "run")
    assert_one_line_error(r, *needles)
    assert not (tmp_path / "run").exists()  # nothing written on bad input


def test_preset_file_with_unknown_key(tiny_vqa_dir, tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("name: mine\nmethod: pgd\nsteps: 2\nalpha_ratio: 0.5\n")
    r = invoke("attack", "--model", tiny_vqa_dir, "--attack", p, "--out", tmp_path / "run")
    assert_one_line_error(r, "unknown key 'alpha_ratio'", "allowed keys", "step_ratio")


@pytest.mark.parametrize(
    "line, needles",
    [
        ("steps: ten", ["steps must be an integer", "mine.yaml", "'ten'"]),
        ("steps: 2.5", ["steps must be an integer", "2.5"]),
        ("random_start: 3", ["random_start must be true or false", "3"]),
        ("kappa: 1.0", ["unknown key 'kappa'", "setting of image cw"]),
        ("restarts: 0", ["attack mine: restarts must be a positive integer"]),
    ],
)
def test_preset_file_with_a_wrongly_typed_setting(tiny_vqa_dir, tmp_path, line, needles):
    """Settings are typed by the method's parameter dataclass (attacks/methods.py): never a silent string."""
    p = tmp_path / "mine.yaml"
    p.write_text(f"name: mine\nmethod: pgd\neps: [2/255]\n{line}\n")
    r = invoke("attack", "--model", tiny_vqa_dir, "--attack", p, "--out", tmp_path / "run")
    assert_one_line_error(r, *needles)
    assert not (tmp_path / "run").exists()


def test_missing_checkpoint(tmp_path):
    r = invoke("attack", "--model", tmp_path / "nothing", "--attack", "pgd")
    assert_one_line_error(r, "does not exist")
