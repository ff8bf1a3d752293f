"""Text attacks (TextAttack recipes on a VL model): every verdict re-scored with a freshly
loaded model, the word budget, local embeddings and masked LMs, clear errors, the CLI.

The conftest model (counting questions) hardly reads its question; `text_vqa` is a tiny
MiniOFA trained on colour / shape / existence questions, with its position and type
embeddings initialised small (std 0.02, like its token embeddings) so that words matter.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import robust_pt as rpt
from robust_pt.errors import AttackError, ConfigError
from robust_pt.tasks.base import Task

from ._cli import assert_one_line_error, invoke
from .conftest import cached_vqa_dir

TEXT_RECIPE = {
    "preset": "tiny",
    "task": "shapes-vqa",
    "qtypes": ["colour", "exist", "shape"],
    "steps": 120,
    "batch": 32,
    "lr": 3e-3,
    "seed": 0,
    "small_init": True,
    "v": 1,
}


@pytest.fixture(scope="session")
def text_vqa_dir(pytestconfig, tmp_path_factory):
    return cached_vqa_dir(pytestconfig, tmp_path_factory, "text-vqa", TEXT_RECIPE, "tiny-text-vqa")


@pytest.fixture(scope="session")
def text_vqa(text_vqa_dir):
    from robust_pt.tuning import checkpoint as ckpt

    return ckpt.load(text_vqa_dir)


def question_task(size: int, n: int, qtypes=("colour", "exist", "shape")) -> Task:
    from robust_pt.tasks import load_task

    full = load_task("shapes-vqa", split="test", limit=6 * n, seed=0, size=size)
    exs = [e for e in full if e.qtype in qtypes][:n]
    assert len(exs) == n
    return Task(
        name="shapes-vqa",
        kind=full.kind,
        split="test",
        metric=full.metric,
        answers=full.answers,
        image_size=size,
        _examples=exs,
    )


@pytest.fixture(scope="session")
def text_task(text_vqa):
    return question_task(text_vqa.image_size, 40)


def rescore(ckpt_dir: Path, task: Task, records) -> None:
    """Every attacked record re-scored from scratch: a fresh model, one example at a time."""
    from robust_pt.tuning import checkpoint as ckpt

    fresh = ckpt.load(ckpt_dir)
    by_id = {task[i].id: task[i] for i in range(len(task))}
    checked = 0
    for r in records.itertuples():
        if not r.attacked:
            continue
        ex = by_id[r.id]
        x = torch.from_numpy(ex.image)[None].float()
        with torch.no_grad():
            pred = int(fresh.candidate_logits(x, [r.adv_text], task.answers).argmax(-1))
        if r.correct:
            assert pred == ex.label, (r.id, r.adv_text)  # unsuccessful: keeps the label
        else:
            assert pred != ex.label and task.answers[pred] == r.pred, (r.id, r.adv_text)
        checked += 1
    assert checked


def check_budget(records, task: Task, fraction=None) -> None:
    """Words changed never exceed max(1, floor(budget * words)); the fraction is changed / words."""
    from textattack.shared import AttackedText

    from robust_pt.attacks.vl_wrapper import word_limit

    texts = {task[i].id: task[i].text for i in range(len(task))}
    att = records[records["attacked"].astype(bool)]
    assert len(att)
    for r in att.itertuples():
        n = len(AttackedText(texts[r.id]).words)
        assert r.max_words == word_limit(n, r.eps if fraction is None else fraction)
        assert 0 <= r.words_changed <= r.max_words
        assert math.isclose(r.words_fraction, r.words_changed / n)


# ----------------------------------------------------------------------------- end to end


def test_deepwordbug_records_rescored_and_resume(text_vqa_dir, text_task, tmp_path):
    out = tmp_path / "run"
    run = rpt.evaluate(text_vqa_dir, text_task, attack="deepwordbug", out=out, batch_size=16, progress=False)
    r, s = run.records, run.summary
    assert len(s) == 1 and s["eps"].iloc[0] == 0.25 and s["kind"].iloc[0] == "text"  # one pseudo-eps row
    row = s.iloc[0]
    # some broken (how many depends on the model trained in the run, which differs across CPU kernels:
    # no upper bound asserted)
    assert 0 < row["n_broken"] <= row["n_attacked"]
    assert row["mean_words_changed"] >= 1 and row["mean_queries"] > 0
    for col in ("adv_text", "words_changed", "words_fraction", "max_words", "queries"):
        assert col in r.columns
    assert (r.loc[r["attacked"], "queries"] > 0).all()
    assert r.loc[~r["clean_correct"], "adv_text"].isna().all()
    rescore(text_vqa_dir, text_task, r)
    check_budget(r, text_task)
    broken = r[r["attacked"] & ~r["correct"]]
    assert (broken["words_changed"] >= 1).all() and (
        broken["adv_text"] != broken["id"].map({text_task[i].id: text_task[i].text for i in range(len(text_task))})
    ).all()
    # the run directory holds the text fields and resumes to the same records
    line = json.loads((out / "records.jsonl").read_text().splitlines()[0])
    assert "adv_text" in line and "words_changed" in line
    again = rpt.evaluate(text_vqa_dir, text_task, attack="deepwordbug", out=out, batch_size=16, progress=False)
    assert again.stats["batches_run"] == 0 and again.records.equals(r)


def test_robust_model_keeps_labels_and_budget_sweep(tiny_vqa_dir, vqa_task):
    # the counting model barely reads its question: most attacks fail, and those keep the label
    run = rpt.evaluate(tiny_vqa_dir, vqa_task, attack="deepwordbug", eps=[0.2, 1.0], batch_size=24, progress=False)
    s, r = run.summary.sort_values("eps"), run.records
    assert list(s["eps"]) == [0.2, 1.0] and (np.diff(s["robust"]) <= 1e-12).all()
    rescore(tiny_vqa_dir, vqa_task, r)
    check_budget(r, vqa_task)
    full = r[(r["eps"] == 1.0) & r["attacked"]]
    assert (full["words_changed"] <= full["max_words"]).all()


def test_results_do_not_depend_on_lockstep_grouping(text_vqa, text_task):
    from robust_pt.attacks import build
    from robust_pt.attacks.text.recipes import TextRunner
    from robust_pt.models.predict import images_of

    exs = [text_task[i] for i in range(12)]
    x = images_of(exs)
    args = dict(fraction=0.5, seeds=[1000 + i for i in range(12)])
    spec = build("deepwordbug").spec
    wide = TextRunner(spec, text_vqa, text_task.answers, width=12).run_many(
        x, [e.text for e in exs], [e.label for e in exs], **args
    )
    narrow = TextRunner(spec, text_vqa, text_task.answers, width=5).run_many(
        x, [e.text for e in exs], [e.label for e in exs], **args
    )
    assert [(a.adv_text, a.queries) for a in wide] == [(b.adv_text, b.queries) for b in narrow]
    assert all(a.words_changed <= a.max_words for a in wide)


def test_scorer_matches_the_model_and_dedupes(text_vqa, text_task):
    from robust_pt.attacks.vl_wrapper import VLScorer
    from robust_pt.models.predict import images_of

    exs = [text_task[i] for i in range(3)]
    x = images_of(exs)
    texts = [[e.text, e.text.replace("the", "teh"), e.text.replace("is", "zz"), "what colour iz it?"] for e in exs]
    for path in ("word", "full"):
        scorer = VLScorer(text_vqa, text_task.answers, batch_size=5)
        scorer._path = path
        scorer.set_images(x)
        got = scorer.score([(j, texts[j]) for j in range(3)])
        for j in range(3):
            want = text_vqa.candidate_logits(x[j : j + 1].expand(4, -1, -1, -1), texts[j], text_task.answers)
            assert torch.allclose(got[j], want, atol=1e-4), path
        again = scorer.score([(1, texts[1] + ["teh teh"])])[0]
        assert torch.equal(again[:4], got[1])
        assert scorer.queries == 17 and scorer.rows <= 13


def test_lockstep_batches_rounds_and_keeps_each_job_alone():
    import random

    from robust_pt.attacks.lockstep import Lockstep

    def job(ls, k):
        def fn():
            return [ls.ask((k, step, random.random(), float(np.random.rand()))) for step in range(k)]

        return fn

    ls, sizes = Lockstep(), []

    def score(reqs):
        sizes.append(len(reqs))
        return [req for _, req in reqs]

    state = random.getstate()
    together = ls.run([job(ls, k) for k in (3, 1, 2)], [5, 6, 7], score)
    assert random.getstate() == state  # the caller's generator is untouched
    assert sizes == [3, 2, 1]  # one scoring call per round, all pending requests at once
    for k, seed, res in zip((3, 1, 2), (5, 6, 7), together):
        alone = Lockstep()
        assert alone.run([job(alone, k)], [seed], lambda reqs: [r for _, r in reqs])[0] == res

    def boom():
        ls.ask("x")
        raise ValueError("bad job")

    with pytest.raises(ValueError, match="bad job"):
        ls.run([job(ls, 3), boom, job(ls, 2)], [1, 2, 3], lambda reqs: [r for _, r in reqs])


def test_pwws_and_pruthi_offline(text_vqa_dir, text_task):
    for name in ("pwws", "pruthi"):
        run = rpt.evaluate(text_vqa_dir, text_task, attack=name, limit=16, batch_size=16, progress=False)
        rescore(text_vqa_dir, text_task, run.records)
        check_budget(run.records, text_task)


# ----------------------------------------------------------------------------- local resources

GROUPS = (
    ("red", "green", "blue", "yellow", "purple"),
    ("circle", "square", "triangle"),
    ("object", "thing", "item"),
    ("color", "colour", "hue"),
)


def write_embeddings(path: Path) -> Path:
    """A tiny counter-fitted-format file: colours near colours, shapes near shapes, ..."""
    rng = np.random.default_rng(0)
    rows = []
    for axis, group in enumerate(GROUPS):
        for w in group:
            v = 0.2 * rng.standard_normal(8)
            v[axis] += 1.0
            rows.append((w, v))
    for w in ("is", "there", "what", "apple", "quickly"):
        rows.append((w, rng.standard_normal(8)))
    path.write_text("".join(f"{w} {' '.join(f'{x:.5f}' for x in v)}\n" for w, v in rows))
    return path


def write_mlm(folder: Path) -> Path:
    """A tiny BERT masked LM (512 positions, as TextAttack expects) with an offline WordPiece tokenizer."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    from robust_pt.tasks import load_task

    texts = [e.text for e in load_task("shapes-vqa", split="train", limit=300, seed=1, size=48)]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(
        texts, trainers.WordPieceTrainer(vocab_size=200, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    )
    fast = BertTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=fast.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    BertForMaskedLM(cfg).eval().save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("name", ["textfooler", "textbugger"])
def test_embedding_attacks_with_a_local_file(name, text_vqa_dir, text_task, tmp_path):
    emb = write_embeddings(tmp_path / "vectors.txt")
    run = rpt.evaluate(
        text_vqa_dir, text_task, attack=name, embeddings=str(emb), limit=24, batch_size=24, progress=False
    )
    assert run.config["attack"]["embeddings"] == str(emb.resolve())
    rescore(text_vqa_dir, text_task, run.records)
    check_budget(run.records, text_task)
    if name == "textfooler":  # every swap is an embedding neighbour: a colour for a colour, a shape for a shape
        group = {w: k for k, g in enumerate(GROUPS) for w in g}
        texts = {text_task[i].id: text_task[i].text for i in range(len(text_task))}
        changed = run.records[run.records["words_changed"] > 0]
        assert len(changed)
        for r in changed.itertuples():
            for a, b in zip(texts[r.id].replace("?", "").split(), r.adv_text.replace("?", "").split()):
                if a != b:
                    assert group[a] == group[b], (a, b)


@pytest.mark.parametrize("name", ["bert-attack", "bae"])
def test_mlm_attacks_with_a_local_model(name, text_vqa_dir, text_task, tmp_path_factory):
    folder = tmp_path_factory.getbasetemp() / "tiny-mlm"
    if not (folder / "config.json").exists():
        write_mlm(folder)
    run = rpt.evaluate(text_vqa_dir, text_task, attack=name, mlm=str(folder), limit=8, batch_size=8, progress=False)
    assert run.summary["n_attacked"].iloc[0] > 0
    rescore(text_vqa_dir, text_task, run.records)
    check_budget(run.records, text_task)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "attack,kw,needles",
    [
        ("textfooler", {}, ["textfooler needs counter-fitted word embeddings", "--embeddings PATH"]),
        ("textbugger", {}, ["--embeddings PATH"]),
        ("bert-attack", {}, ["bert-attack needs a masked language model", "--mlm PATH"]),
        ("bae", {}, ["--mlm PATH"]),
        ("textfooler", {"embeddings": "/nonexistent/vectors.txt"}, ["does not exist"]),
        ("bae", {"mlm": "/nonexistent/mlm"}, ["not a masked-LM directory"]),
        ("deepwordbug", {"embeddings": "/x.txt"}, ["uses no word embeddings"]),
        ("deepwordbug", {"queries": 0}, ["queries must be a positive integer"]),
        ("deepwordbug", {"eps": 1.5}, ["word budget", "(0, 1]"]),
    ],
)
def test_clear_errors_before_anything_is_written(attack, kw, needles, tiny_vqa_dir, vqa_task, tmp_path):
    with pytest.raises(AttackError) as err:
        rpt.evaluate(tiny_vqa_dir, vqa_task, attack=attack, out=tmp_path / "run", progress=False, **kw)
    msg = str(err.value)
    assert "\n" not in msg and all(n in msg for n in needles), msg
    assert not (tmp_path / "run").exists()


def test_wrong_embedding_formats(tmp_path):
    from robust_pt.attacks.text.recipes import read_embeddings

    bad = {
        "json.txt": '{"red": [0.1, 0.2]}\n',
        "ragged.txt": "red 0.1 0.2 0.3\nblue 0.1 0.2\n",
        "words.txt": "red blue green\nyellow purple pink\n",
        "empty.txt": "",
    }
    for name, text in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(AttackError, match="counter-fitted format"):
            read_embeddings(tmp_path / name)
    (tmp_path / "w2v.txt").write_text("2 3\nred 0.1 0.2 0.3\nblue 0.3 0.2 0.1\n")
    words, mat = read_embeddings(tmp_path / "w2v.txt")  # a word2vec header is fine
    assert words == ["red", "blue"] and mat.shape == (2, 3)


def test_text_attack_on_image_only_model_or_generative_task(tiny_cnn, tiny_vqa):
    model, x, y = tiny_cnn
    with pytest.raises(AttackError, match="image-only classifier"):
        rpt.evaluate(model, (x, y), attack="deepwordbug", progress=False)
    ground = rpt.load_task("shapes-ground", limit=4, size=tiny_vqa.image_size)
    as_vqa = Task(
        name="shapes-vqa",
        kind=ground.kind,
        split="test",
        metric=ground.metric,
        answers=None,
        image_size=ground.image_size,
        _examples=[ground[i] for i in range(4)],
    )
    with pytest.raises(AttackError, match="closed-answer task"):
        rpt.evaluate(tiny_vqa, as_vqa, attack="deepwordbug", progress=False)


def test_preset_validation():
    from robust_pt.attacks import build

    # each method takes its own parameters (attacks/methods.py): the others are refused by name
    with pytest.raises(ConfigError, match="'max_words_fraction' for text deepwordbug .*setting of joint image-text"):
        build("deepwordbug", max_words_fraction=0.5)
    with pytest.raises(ConfigError, match="'embeddings' for image pgd .*setting of joint image-text"):
        build("pgd", embeddings="/x.txt")
    with pytest.raises(ConfigError, match="cannot be overridden"):
        build("deepwordbug", method="pwws")
    assert build("deepwordbug", queries=50).spec.queries == 50
    assert "embeddings" not in build("pgd").spec.identity  # image run ids are unchanged


# ----------------------------------------------------------------------------- CLI


def test_cli_text_attack_and_list(text_vqa_dir, tmp_path):
    r = invoke(
        "attack",
        "--model",
        text_vqa_dir,
        "--attack",
        "deepwordbug",
        "--limit",
        8,
        "--batch-size",
        8,
        "--query-budget",
        40,
        "--out",
        tmp_path / "run",
    )
    assert r.exit_code == 0, r.output
    assert "words" in r.stdout and "queries" in r.stdout
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["config"]["attack"]["queries"] == 40
    r = invoke("list", "attacks")
    for name in (
        "deepwordbug",
        "pwws",
        "textbugger",
        "textfooler",
        "bert-attack",
        "bae",
        "pruthi",
        "joint-text-image",
        "joint-image-text",
    ):
        assert name in r.stdout


def test_cli_bad_text_input(tiny_vqa_dir, tiny_cnn, tmp_path, monkeypatch):
    assert_one_line_error(
        invoke("attack", "--model", tiny_vqa_dir, "--attack", "deepwordbug", "--query-budget", 0),
        "--queries must be a positive integer",
    )
    bad = tmp_path / "vectors.txt"
    bad.write_text("red 0.1 0.2 0.3\nblue 0.1 zero 0.3\n")
    assert_one_line_error(
        invoke(
            "attack", "--model", tiny_vqa_dir, "--attack", "textfooler", "--embeddings", bad, "--out", tmp_path / "run"
        ),
        "not in the counter-fitted format",
    )
    assert_one_line_error(
        invoke("attack", "--model", tiny_vqa_dir, "--attack", "textfooler", "--out", tmp_path / "run"),
        "--embeddings PATH",
    )
    assert not (tmp_path / "run").exists()
    # an image-only classifier behind --model
    import robust_pt.models.loading

    monkeypatch.setattr(robust_pt.models.loading, "load_model", lambda path, **kw: tiny_cnn[0])
    assert_one_line_error(
        invoke("attack", "--model", tiny_vqa_dir, "--attack", "pwws", "--out", tmp_path / "run"),
        "image-only classifier",
    )


def test_import_stays_light():
    # which libraries it loads, not how long it takes (benchmarks/startup.py times it)
    code = (
        "import sys; import robust_pt, robust_pt.attacks; import robust_pt.attacks.presets; "
        "print('textattack' in sys.modules, 'torchattacks' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    ta, tk = out.stdout.split()
    assert ta == "False" and tk == "False", out.stdout
