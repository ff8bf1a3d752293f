"""The built-in miniature CLIP: class names written into templates, the hole that survives embedding attacks,
every learner that tunes it, and what it refuses. Untrained or briefly trained tiny models: no assertion
depends on how well a model learned."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import robust_pt
from robust_pt.errors import ConfigError, TaskError
from robust_pt.models.base import Embeds
from robust_pt.models.miniclip import build, slots
from robust_pt.models.predict import images_of
from robust_pt.tasks import load_task
from robust_pt.tasks.vocab import WORDS
from robust_pt.tuning import checkpoint as ckpt
from robust_pt.tuning import registry
from robust_pt.tuning.config import TuningConfig
from robust_pt.tuning.methods import apply_method, parameter_counts

CLIP_METHODS = [m.name for m in registry.builtin_methods() if "mini-clip" in m.architectures]


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    return build("tiny", vocab=WORDS).eval()


@pytest.fixture(scope="module")
def clip_base(tmp_path_factory):
    """A tiny CLIP base saved as a checkpoint (untrained: only shapes and plumbing are tested)."""
    torch.manual_seed(0)
    model = build("tiny", vocab=WORDS)
    out = tmp_path_factory.mktemp("clip") / "base"
    model.meta = {"method": "pretrain", "name": "clip-tiny"}
    ckpt.save(model, out, model.meta)
    return out


def _words(model, seq, keep):
    """The vocabulary words nearest to each kept vector of a composed sequence."""
    table = model.embed_tokens.weight
    return [model.tok.itos[int(((table - v) ** 2).sum(1).argmin())] for v in seq[keep]]


@pytest.mark.parametrize(
    "template, filled",
    [
        ("a picture of a {}", "a picture of a red circle"),
        ("a {} picture", "a red circle picture"),
        ("{} in a picture", "red circle <unk> a picture"),
        ("a picture of", "a picture of red circle"),  # no slot: the name goes at the end
    ],
)
def test_the_class_name_goes_into_the_template_hole(clip, template, filled):
    with torch.no_grad():
        e = clip.embed(torch.rand(1, 3, 48, 48), [template])
        seq, keep, eos = clip.compose(e.text, e.text_mask, ["red circle"])
    assert _words(clip, seq[0], keep[0]) == filled.split() + ["<eos>"]
    assert int(eos[0]) == len(filled.split())


def test_the_hole_is_found_from_the_mask_alone():
    mask = torch.tensor([[True, False, True, False], [True, True, False, False], [True, True, True, True]])
    slot, length, hole = slots(mask)
    assert slot.tolist() == [1, 2, 4] and length.tolist() == [3, 2, 4] and hole.tolist() == [True, False, False]


def test_the_hole_survives_a_rebuilt_embeds_and_its_vector_is_never_read(clip):
    x = torch.rand(3, 3, 48, 48)
    with torch.no_grad():
        e = clip.embed(x, ["a {} picture"] * 3)
        ref = clip.candidate_logits_from_embeds(e, ["red circle", "blue square"])
        junk = e.text.clone()
        junk[:, 1] = 5.0  # the hole's position
        again = clip.candidate_logits_from_embeds(Embeds(e.image, junk, e.text_mask), ["red circle", "blue square"])
    assert torch.allclose(ref, again)


def test_one_shared_template_is_encoded_once_with_the_same_logits(clip):
    """Rows that are one template without gradient are encoded once; with gradient (a text attack), per row."""
    x = torch.rand(4, 3, 48, 48)
    e = clip.embed(x, ["a picture of a {}"] * 4)
    names = load_task("shapes-objects", split="val", limit=1, size=48).answers
    with torch.no_grad():
        shared = clip.candidate_logits_from_embeds(e, names)
    text = e.text.detach().clone().requires_grad_(True)
    per_row = clip.candidate_logits_from_embeds(e.with_(text=text), names)
    assert torch.allclose(shared, per_row, atol=1e-5)
    per_row[:, 0].sum().backward()
    assert all(float(text.grad[i].abs().sum()) > 0 for i in range(4))  # every row's own gradient


@pytest.mark.parametrize("method", CLIP_METHODS)
def test_every_clip_learner_trains_a_step_and_round_trips(clip_base, tmp_path, method):
    spec = registry.get(method)
    model = ckpt.load(clip_base)
    task = load_task("shapes-objects-base", split="train", limit=8, size=48)
    own = {"probe_classes": "|".join(task.answers)} if spec.task_classes is not None else {}  # a linear probe's
    tcfg = TuningConfig(method, **own)
    apply_method(model, tcfg)
    counts = parameter_counts(model)
    assert 0 < counts["trainable_fraction"] < (0.8 if method == "finetune" else 0.5)
    batch = [task[i] for i in range(8)]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    model.train()
    logits = model.candidate_logits(images_of(batch), [ex.text for ex in batch], task.answers)
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor([ex.label for ex in batch]))
    loss.backward()
    torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2).step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable, sorted(changed - trainable)[:3]
    if method == "finetune":  # the image tower only: the text tower still reads new class names
        assert not any(n.startswith(("text_", "embed_tokens")) for n in trainable)
    model.eval()
    meta = {"method": method, "task": "shapes-objects-base", "tuning": tcfg.relevant()}
    ckpt.save(model, tmp_path / "ck", meta, base_dir=clip_base if spec.delta else None)
    stored = set(load_file(str(tmp_path / "ck" / "model.safetensors")))
    assert stored == (trainable if spec.delta else set(model.state_dict()))
    loaded = robust_pt.load_model(tmp_path / "ck")
    x, texts = images_of(batch), [ex.text for ex in batch]
    with torch.no_grad():
        assert torch.allclose(
            loaded.candidate_logits(x, texts, task.answers), model.candidate_logits(x, texts, task.answers)
        )


@pytest.mark.parametrize("position", ["end", "middle", "front"])
def test_coop_context_puts_the_class_where_asked(clip, position):
    from robust_pt.tuning.clip_prompts import Context
    from robust_pt.tuning.clip_prompts import _words as context_start

    ctx = Context(context_start(clip, "a picture of a", 4), position)
    text, mask = ctx.context(1)
    seq, keep, _ = clip.compose(text, mask, ["red circle"])
    expect = {
        "end": "a picture of a red circle",
        "middle": "a picture red circle of a",
        "front": "red circle a picture of a",
    }[position]
    assert _words(clip, seq[0], keep[0]) == expect.split() + ["<eos>"]


def test_learners_refuse_the_architecture_they_cannot_tune(clip_base, tiny_vqa_dir):
    with pytest.raises(ConfigError, match="tuning method coop tunes mini-clip bases, not this mini-ofa base"):
        apply_method(ckpt.load(tiny_vqa_dir), TuningConfig("coop"))
    with pytest.raises(ConfigError, match="tuning method prompt tunes mini-ofa bases, not this mini-clip base"):
        apply_method(ckpt.load(clip_base), TuningConfig("prompt"))
    with pytest.raises(ConfigError, match="APT depth 'encoder': a mini-clip base has image, text or both"):
        apply_method(ckpt.load(clip_base), TuningConfig("apt", apt_depth="encoder"))


def test_a_dual_encoder_scores_but_does_not_write(clip):
    with pytest.raises(TaskError, match="does not generate"):
        clip.generate(torch.rand(1, 3, 48, 48), ["a {}"])
