"""Natural image corruptions (robust_pt/attacks/corruptions.py): the 19 ImageNet-C corruptions at
severities 1-5 as presets of kind `corruption`, deterministic per (seed, example, severity), every
clean-correct example at every severity, on VL models and plain classifiers; bad input as one line."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

import robust_pt as rpt
from robust_pt.attacks import build
from robust_pt.attacks.corruptions import CORRUPTIONS, corrupt
from robust_pt.errors import AttackError
from tests._cli import assert_one_line_error, invoke

RANDOM = {"gaussian_noise", "shot_noise", "impulse_noise", "glass_blur", "motion_blur", "snow", "frost", "fog",
          "elastic_transform", "speckle_noise", "spatter"}  # fmt: skip


@pytest.fixture(scope="module")
def image():
    from robust_pt.tasks import load_task

    return load_task("shapes-vqa", split="test", limit=1, seed=0, size=48)[0].image


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_each_corruption_changes_the_image_at_severity_1_and_5_and_is_deterministic(image, name):
    for severity in (1, 5):
        a, b = corrupt(image, name, severity, seed=7), corrupt(image, name, severity, seed=7)
        assert a.shape == image.shape and a.dtype == np.float32 and a.min() >= 0 and a.max() <= 1
        assert np.array_equal(a, b), (name, severity)  # same (seed, example, severity): same image
        assert np.abs(a - image).mean() > 1 / 255, (name, severity)  # measured: at least 0.006
        if name in RANDOM:
            assert not np.array_equal(a, corrupt(image, name, severity, seed=8)), (name, severity)


def test_every_preset_names_its_corruption_with_severities_1_to_5():
    for name in CORRUPTIONS:
        atk = build(name.replace("_", "-"))
        assert atk.spec.kind == "corruption" and atk.spec.method == name and atk.eps_grid() == [1, 2, 3, 4, 5]


@pytest.fixture(scope="module")
def fog_run(tiny_vqa, vqa_task, tmp_path_factory):
    out = tmp_path_factory.mktemp("fog") / "run"
    run = rpt.evaluate(tiny_vqa, vqa_task, attack="fog", eps=[1, 3, 5], out=out, seed=1, progress=False)
    return out, run


def test_a_corruption_run_judges_every_clean_correct_example_at_every_severity(fog_run, tiny_vqa, vqa_task, tmp_path):
    out, run = fog_run
    r = run.records
    assert len(r) == 48 * 3 and sorted(set(r["eps"])) == [1.0, 3.0, 5.0]
    cc = r["clean_correct"].astype(bool)
    assert r.loc[cc, "attacked"].all() and not r.loc[~cc, "attacked"].any()  # not nested: each severity alone
    assert not r.loc[~cc, "correct"].astype(bool).any()  # wrong on the clean image counts as wrong
    robust = run.summary.set_index("eps")["robust"]
    assert robust[5.0] < run.summary["clean"].iloc[0]  # fog at 5 moves predictions (tiny model: by far)
    assert list((out / "samples").glob("*.png"))
    again = rpt.evaluate(
        tiny_vqa, vqa_task, attack="fog", eps=[1, 3, 5], out=tmp_path / "again", seed=1, progress=False
    )
    cols = ["id", "eps", "correct", "pred", "linf", "l2"]
    assert again.records[cols].equals(r[cols])  # a second, independent run: the same corrupted images


def test_a_corruption_runs_on_a_plain_image_classifier(tiny_cnn_class):
    torch.manual_seed(0)
    model = tiny_cnn_class().eval()
    x = torch.rand(24, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x).argmax(-1)
    run = rpt.evaluate(model, (x, y), attack="gaussian-noise", eps=[1, 5], progress=False)
    assert len(run.records) == 48 and run.summary["clean"].iloc[0] == 1.0
    assert run.summary.set_index("eps")["robust"][5.0] < 1.0  # heavy noise moves some predictions


def test_images_the_library_cannot_take_are_refused_before_any_work(tiny_cnn, tmp_path):
    model, x, y = tiny_cnn  # 16x16 images
    with pytest.raises(AttackError, match="at least 32x32 pixels"):
        rpt.evaluate(model, (x, y), attack="fog", out=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_bad_corruption_input_is_one_line(tiny_vqa_dir, tmp_path, monkeypatch):
    r = invoke(
        "attack", "--model", tiny_vqa_dir, "--attack", "fog", "--eps", "6", "--limit", 4, "--out", tmp_path / "a"
    )
    assert_one_line_error(r, "severities, integers from 1 to 5")
    r = invoke("attack", "--model", tiny_vqa_dir, "--attack", "char-swap", "--eps", "0", "--out", tmp_path / "e")
    assert_one_line_error(r, "severities, integers from 1 to 5", "got 0")
    r = invoke("attack", "--model", tiny_vqa_dir, "--attack", "keyboard", "--eps", "7", "--out", tmp_path / "f")
    assert_one_line_error(r, "severities, integers from 1 to 5")
    r = invoke(
        "attack", "--model", tiny_vqa_dir, "--attack", "fog", "--eps", "2.5", "--limit", 4, "--out", tmp_path / "b"
    )
    assert_one_line_error(r, "severities, integers from 1 to 5")
    bad = tmp_path / "fogg.yaml"
    bad.write_text("name: fogg\nkind: corruption\nmethod: fogg\neps_unit: severity\neps: [1]\n")
    r = invoke("attack", "--model", tiny_vqa_dir, "--attack", bad, "--limit", 4, "--out", tmp_path / "c")
    assert_one_line_error(r, "method fogg does not exist for corruption attacks", "gaussian_noise")
    with pytest.raises(AttackError, match="unknown corruption 'fogg'"):
        corrupt(np.zeros((3, 32, 32), np.float32), "fogg", 1, 0)
    with pytest.raises(AttackError, match="at least 32x32"):
        corrupt(np.zeros((3, 16, 16), np.float32), "fog", 1, 0)
    for name in [m for m in sys.modules if m == "imagecorruptions" or m.startswith("imagecorruptions.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "imagecorruptions", None)  # the optional extra is not installed
    r = invoke("attack", "--model", tiny_vqa_dir, "--attack", "fog", "--limit", 4, "--out", tmp_path / "d")
    assert_one_line_error(r, "optional extra `corruptions`", "imagecorruptions-imaug")
    assert not (tmp_path / "d" / "records.jsonl").exists()
    for d in ("a", "b", "c", "e", "f"):
        assert not (tmp_path / d).exists()


def test_corruption_presets_load_without_torch_or_the_extra():
    import json
    import subprocess

    code = (
        "import json, sys\nimport robust_pt.attacks as a\na.build('fog').eps_grid([1, 3])\n"
        "print(json.dumps([m for m in ('torch', 'imagecorruptions') if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


# ----------------------------------------------------------------------------- text corruptions


@pytest.mark.parametrize(
    "name", ["char-swap", "char-delete", "char-insert", "keyboard", "homoglyph", "word-drop", "word-order"]
)
def test_each_text_corruption_changes_the_question_deterministically_and_leaves_global_random_alone(name):
    import random

    from robust_pt.attacks.text.corruptions import corrupt_text, words_to_corrupt

    q = "how many red circles are there in the image?"
    corrupt_text(q, name, 1, seed=0)  # the first call imports TextAttack (whose import draws on its own)
    state = (random.getstate(), np.random.get_state()[1].copy())
    for severity in (1, 5):
        a, n = corrupt_text(q, name, severity, seed=11)
        assert (a, n) == corrupt_text(q, name, severity, seed=11) and a != q, (name, severity)
        per_step = 2 if name == "word-order" else 1  # a swap moves two words
        assert 1 <= n <= per_step * words_to_corrupt(9, severity), (name, severity, n)
    assert corrupt_text(q, name, 5, seed=11)[1] > corrupt_text(q, name, 1, seed=11)[1]
    assert random.getstate() == state[0] and np.array_equal(np.random.get_state()[1], state[1])
    assert words_to_corrupt(9, 1) == 1 and words_to_corrupt(9, 5) == 5 and words_to_corrupt(3, 1) == 1
    assert [words_to_corrupt(5, s) for s in (1, 2, 3, 4, 5)] == [1, 1, 2, 2, 3]  # half up, not to even


def test_word_order_counts_the_words_that_moved():
    from robust_pt.attacks.text.corruptions import corrupt_text

    for seed in range(200):
        for q in ("how many circles are there?", "is there a red square left of the blue circle?"):
            for severity in (1, 3, 5):
                out, n = corrupt_text(q, "word-order", severity, seed)
                assert n == sum(a != b for a, b in zip(q.split(), out.split())) and n >= 2, (q, severity, seed)


def test_corrupting_an_image_leaves_numpy_global_generator_as_it_was(image):
    np.random.seed(123)
    want = np.random.random(3)
    np.random.seed(123)
    corrupt(image, "gaussian_noise", 3, seed=5)
    assert np.array_equal(np.random.random(3), want)


def test_a_text_corruption_run_keeps_the_image_and_records_the_corrupted_question(tiny_vqa, vqa_task, tmp_path):
    run = rpt.evaluate(tiny_vqa, vqa_task, attack="word-drop", eps=[1, 5], out=tmp_path / "run", seed=2, progress=False)
    r = run.records
    assert len(r) == 48 * 2
    cc = r["clean_correct"].astype(bool)
    assert r.loc[cc, "attacked"].all()
    texts = {ex.id: ex.text for ex in (vqa_task[i] for i in range(len(vqa_task)))}
    for _, row in r[cc].iterrows():
        assert len(row["adv_text"].split()) < len(texts[row["id"]].split())  # words were dropped
    assert (r.loc[cc, "words_changed"] == r.loc[cc, "max_words"]).all()  # word-drop removes exactly its share
    again = rpt.evaluate(tiny_vqa, vqa_task, attack="word-drop", eps=[1, 5], out=tmp_path / "b", seed=2, progress=False)
    assert again.records[["id", "eps", "adv_text", "correct"]].equals(r[["id", "eps", "adv_text", "correct"]])


def test_a_text_corruption_refuses_an_image_classifier_in_one_line(tiny_cnn_class):
    model = tiny_cnn_class().eval()
    x = torch.rand(4, 3, 32, 32)
    with pytest.raises(AttackError, match="corrupts the question text of a vision-language model"):
        rpt.evaluate(model, (x, torch.zeros(4, dtype=torch.long)), attack="char-swap", progress=False)
