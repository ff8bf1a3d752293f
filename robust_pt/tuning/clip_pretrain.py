"""Contrastive pretraining of the built-in miniature CLIP (builtin:clip-small) on ShapesWorld pairs.

Why its own loop: a dual encoder learns from image-caption pairs by CLIP's symmetric
InfoNCE (each image against every caption of the batch, each caption against every image),
not from a task's target text. The pairs are `shapes-pairs` (tasks/classify.py): scenes of
1-4 objects from the pretraining seed stream, each with 3-5 templated captions; every step
takes one of them per scene, at random. What the base learned is scored as zero-shot
accuracy on the classification tasks (no tuning), and written into its meta.json.

The robust base (builtin:clip-small-robust) continues from the plain one TeCoA-style (Mao et
al. 2023): the image tower alone trains, on images the engine's attack (PGD) made to
mismatch their captions, against the frozen text tower's features of the batch's distinct
captions (image-to-text cross-entropy: the captions are the classes).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import __version__
from ..models.predict import evaluate_clean, images_of
from ..outputs import require_writable_dir
from ..runtime.progress import progress_bar
from . import checkpoint as ckpt
from .config import TrainConfig
from .methods import parameter_counts

PAIRS = "shapes-pairs"
ZERO_SHOT = ("shapes-objects", "shapes-objects-base", "shapes-objects-novel", "shapes-counting")
CLIP_LR = 1e-3


def contrastive_loss(model, images: torch.Tensor, texts: list[str]) -> torch.Tensor:
    """CLIP's symmetric cross-entropy over the batch's image-caption similarities."""
    img = model.image_features(model.embed_image(images))
    txt = model.caption_features(texts)
    logits = model.scale * img @ txt.t()
    labels = torch.arange(len(texts), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def adversarial_loss(model, images: torch.Tensor, texts: list[str], adversarial, seeds: list[int]) -> torch.Tensor:
    """TeCoA's loss: image-to-caption cross-entropy on images attacked (within adversarial.eps) to mismatch."""
    from ..attacks.image import run_image_attack
    from ..attacks.objectives import ClosedImage
    from .adversarial import _attacking

    names = sorted(set(texts))
    labels = torch.tensor([names.index(t) for t in texts], device=images.device)
    prompts = ["{}"] * len(texts)  # the caption is the whole text
    params = [p for p in model.parameters() if p.requires_grad]
    with _attacking(model, params):
        obj = ClosedImage(model, prompts, names, labels)
        r = run_image_attack(adversarial.spec, obj, images, adversarial.eps, seeds=seeds, batch_seed=seeds[0],
                             early_stop=False, classifier=obj.classifier, n_classes=len(names))  # fmt: skip
    return F.cross_entropy(model.candidate_logits(r.adv.detach(), prompts, names), labels)


def _fit(model, pairs, tc: TrainConfig, lr: float, log, on_checkpoint, adversarial=None) -> list[float]:
    from .train import _schedule, optimise

    torch.manual_seed(tc.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=tc.weight_decay)
    sched = _schedule(opt, tc.steps, tc.warmup)
    rng = np.random.default_rng(tc.seed)
    order, pos, losses = rng.permutation(len(pairs)), 0, []
    model.train()
    label = "pretrain clip" + (f" {adversarial.label()}" if adversarial is not None else "")
    with progress_bar(label, total=tc.steps, unit="steps") as advance:
        for step in range(tc.steps):
            if pos + tc.batch_size > len(pairs):
                order, pos = rng.permutation(len(pairs)), 0
            batch = [pairs[int(i)] for i in order[pos : pos + tc.batch_size]]
            pos += tc.batch_size
            texts = [ex.refs[int(rng.integers(len(ex.refs)))] for ex in batch]
            x = images_of(batch, model.device)
            if adversarial is None:
                loss = contrastive_loss(model, x, texts)
            else:
                seeds = [int(s) for s in rng.integers(0, 2**31, len(batch))]
                loss = adversarial_loss(model, x, texts, adversarial, seeds)
            optimise(loss, opt, sched, params, losses, advance)
            if (step + 1) % 250 == 0:
                log(f"pretrain clip step {step + 1}/{tc.steps} loss {np.mean(losses[-250:]):.4f}")
            if (step + 1) % 1000 == 0 and step + 1 < tc.steps:
                on_checkpoint(step + 1)
    model.eval()
    return losses


def zero_shot(model, eval_size: int, seed: int) -> dict:
    """Zero-shot accuracy of `model` on each ShapesWorld class set (validation split)."""
    from ..tasks import load_task

    size = model.image_size
    return {
        t: evaluate_clean(model, load_task(t, split="val", limit=eval_size, seed=seed, size=size)) for t in ZERO_SHOT
    }


def pretrain_clip(
    out: Path, preset: str = "small", tc: TrainConfig | None = None, overwrite: bool = False, eval_size: int = 300,
    log=print, init: str | Path | None = None, adversarial=None,
) -> dict:  # fmt: skip
    """Pretrain a MiniCLIP contrastively on ShapesWorld pairs and save it as a base checkpoint.

    init + adversarial (an AdversarialConfig): continue from the plain base TeCoA-style (module docstring)."""
    from ..tasks import load_task

    require_writable_dir(out, "checkpoint directory")
    tc = tc or TrainConfig(steps=6000, batch_size=128)
    torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)
    model, start = _start(preset, init, adversarial)
    arch = {k: v for k, v in model.cfg.to_dict().items() if k != "vocab"}
    identity = {"kind": "pretrain", "preset": preset, "model": arch, "train": asdict(tc), "data": PAIRS, **start}
    if ckpt.check_out_dir(out, identity, overwrite):
        log(f"reusing {out} (same pretraining config)")
        return ckpt.load(out).meta
    pairs = load_task(PAIRS, split="train", seed=tc.seed, size=model.image_size)
    name = out.name if init is not None else f"clip-{preset}"

    def snapshot(step: int) -> None:  # a usable (partial) base while a long pretraining runs
        model.meta = {"method": "pretrain", "name": name, "partial_step": step, "identity": None}
        ckpt.save(model, out.parent / f"{out.name}.step{step}", model.meta)
        model.train()

    t0 = time.time()
    losses = _fit(model, pairs, tc, tc.lr or CLIP_LR, log, snapshot, adversarial)
    meta = {
        "method": "pretrain",
        "name": name,
        "preset": preset,
        "architecture": model.architecture,
        "task": None,
        "identity": identity,
        **({"adversarial": start["adversarial"], "init": str(init)} if adversarial is not None else {}),
        "train": asdict(tc),
        "seed": tc.seed,
        "version": __version__,
        "clean_metrics": zero_shot(model, eval_size, tc.seed),
        "final_loss": float(np.mean(losses[-100:])),
        "train_seconds": round(time.time() - t0, 1),
        **parameter_counts(model),
    }
    model.meta = meta
    ckpt.save(model, out, meta)
    return meta


def _start(preset: str, init, adversarial) -> tuple:
    """(model, identity part): a fresh MiniCLIP, or the base `init` with its image tower trainable (adversarial)."""
    from ..errors import ConfigError
    from ..models.miniclip import build
    from ..tasks.vocab import WORDS
    from .methods import freeze

    if (init is None) != (adversarial is None):
        raise ConfigError(
            "--arch clip: --init BASE and --adversarial go together (the robust base continues the plain)"
        )
    if init is None:
        return build(preset, vocab=WORDS), {}
    if adversarial.loss != "ce" or adversarial.ratio != 1.0 or adversarial.spec.kind != "image":
        raise ConfigError("--arch clip --adversarial: an image attack with --adv-loss ce on every pair (TeCoA's)")
    d = ckpt.checkpoint_dir(init)
    model = ckpt.load(d)
    if getattr(model, "architecture", None) != "mini-clip" or model.meta.get("method") != "pretrain":
        raise ConfigError(f"--init {init} is not a pretrained mini-clip base (e.g. builtin:clip-small)")
    model.meta = {}
    freeze(model)
    for p in model.image_parameters():  # TeCoA: the image tower learns, the text tower stays
        p.requires_grad_(True)
    return model, {"init_sha256": ckpt.sha256_file(d / ckpt.WEIGHTS), "adversarial": adversarial.record()}
