"""Training loops: pretraining the base on the ShapesWorld mix, and tuning it per task.

Both use AdamW with linear warm-up and cosine decay, examples generated on the fly
from a seeded permutation of the split (no dataset held in memory), a fixed thread
count (two torch jobs on two cores slow each other down several-fold), and end with a
clean evaluation that is written into the checkpoint's meta.json.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..errors import TaskError
from ..models.predict import evaluate_clean, images_of, task_loss_embeds
from ..outputs import require_writable_dir
from ..runtime.locking import hold
from ..runtime.progress import progress_bar
from ..tasks.kinds import refusal
from ..tasks.shapes_tasks import DOWNSTREAM  # noqa: F401  (re-exported: the tasks a pretrained base is scored on)
from ..tasks.shapes_tasks import PRETRAIN_MIX as PRETRAIN_TASK
from . import checkpoint as ckpt
from .config import PRETRAIN_LR, TrainConfig, TuningConfig, with_classes
from .methods import apply_method, check_architecture, parameter_counts


def _schedule(opt, steps: int, warmup: float):
    w = max(1, int(steps * warmup))

    def f(step: int) -> float:
        if step < w:
            return (step + 1) / w
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - w) / max(1, steps - w))))

    return torch.optim.lr_scheduler.LambdaLR(opt, f)


def optimise(loss, opt, sched, params, losses: list, advance) -> None:
    """One optimiser step on `loss` (gradients clipped at norm 1), the schedule advanced, the loss recorded."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    sched.step()
    losses.append(float(loss.detach()))
    advance(1, loss=f"{np.mean(losses[-50:]):.3f}")


def _objective(model, task, batch):
    """What a training step minimises on embeddings: the answer text's token loss, or, for a model that
    scores rather than writes its answers (a dual encoder), the cross-entropy over the task's candidates."""
    if getattr(model, "trains_on_answer_text", True):
        targets = [ex.target for ex in batch]
        return lambda e: model.sequence_loss_from_embeds(e, targets).mean()
    return lambda e: task_loss_embeds(model, task, e, batch).mean()


def _fit(
    model,
    task,
    tc: TrainConfig,
    lr: float,
    label: str,
    log=print,
    log_every: int = 0,
    save_every: int = 0,
    on_checkpoint=None,
    adversarial=None,
    noise_sigma: float | None = None,
) -> list[float]:
    """Optimise the trainable parameters of `model` on `task` (on adversarial inputs with `adversarial`, an
    AdversarialConfig; on noisy ones with `noise_sigma`, tuning/noise.py); returns the loss curve."""
    from .adversarial import InnerAttack, adversarial_loss
    from .noise import noisy

    torch.manual_seed(tc.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    inner = InnerAttack(adversarial, model, task, tc.seed) if adversarial is not None else None
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=tc.weight_decay)
    sched = _schedule(opt, tc.steps, tc.warmup)
    rng = np.random.default_rng(tc.seed)
    n = len(task)
    order = rng.permutation(n)
    pos, losses = 0, []
    model.train()
    dev = model.device
    with progress_bar(label, total=tc.steps, unit="steps") as advance:
        for step in range(tc.steps):
            if pos + tc.batch_size > n:
                order, pos = rng.permutation(n), 0
            batch = [task[int(i)] for i in order[pos : pos + tc.batch_size]]
            pos += tc.batch_size
            loss = adversarial_loss(
                model,
                task,
                inner,
                batch,
                noisy(images_of(batch, dev), noise_sigma, tc.seed, step),
                [ex.text for ex in batch],
                _objective(model, task, batch),
                step,
            )
            optimise(loss, opt, sched, params, losses, advance)
            if on_checkpoint and save_every and (step + 1) % save_every == 0 and step + 1 < tc.steps:
                on_checkpoint(step + 1)
            if log_every and (step + 1) % log_every == 0:
                log(
                    f"{label} step {step + 1}/{tc.steps} loss {np.mean(losses[-log_every:]):.4f} "
                    f"lr {sched.get_last_lr()[0]:.2e}"
                )
    model.eval()
    return losses


def pretrain(
    out: Path,
    preset: str = "small",
    tc: TrainConfig | None = None,
    overwrite: bool = False,
    eval_size: int = 300,
    log=print,
    init: str | Path | None = None,
    adversarial=None,
) -> dict:
    """Pretrain a MiniOFA on the multi-task ShapesWorld mix and save it as a base checkpoint.

    init: continue from this pretrained base (its preset) instead of a fresh model; adversarial: an
    AdversarialConfig, pretraining on adversarial inputs (the robust base, builtin:base-small-robust)."""
    from ..tasks import load_task

    require_writable_dir(out, "checkpoint directory")  # before the model is built or trained
    if adversarial is not None:
        from .adversarial import check_task

        check_task(adversarial, load_task(PRETRAIN_TASK, split="train", limit=1))  # TRADES, library attacks: no
    tc = tc or TrainConfig(steps=12000, batch_size=64)
    torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)
    model, preset, start = _pretrain_start(preset, init)
    arch = {k: v for k, v in model.cfg.to_dict().items() if k != "vocab"}  # a preset's architecture can change
    identity = {"kind": "pretrain", "preset": preset, "model": arch, "train": asdict(tc), **start}
    if adversarial is not None:
        identity["adversarial"] = adversarial.record()
    if ckpt.check_out_dir(out, identity, overwrite):
        log(f"reusing {out} (same pretraining config)")
        return ckpt.load(out).meta
    size = model.image_size
    task = load_task(PRETRAIN_TASK, split="train", seed=tc.seed, limit=None, size=size)
    name = out.name if init is not None else f"base-{preset}"
    t0 = time.time()

    def snapshot(step: int) -> None:  # a usable (partial) base while a long pretraining runs
        model.meta = {"method": "pretrain", "name": name, "partial_step": step, "identity": None}
        ckpt.save(model, out.parent / f"{out.name}.step{step}", model.meta)
        model.train()

    losses = _fit(
        model,
        task,
        tc,
        tc.lr or PRETRAIN_LR,
        f"pretrain {preset}",
        log,
        log_every=250,
        save_every=500,
        on_checkpoint=snapshot,
        adversarial=adversarial,
    )
    metrics = {
        t: evaluate_clean(model, load_task(t, split="val", limit=eval_size, seed=tc.seed, size=size))
        for t in DOWNSTREAM
    }
    meta = {
        "method": "pretrain",
        "name": name,
        "preset": preset,
        "task": None,
        "identity": identity,
        "train": asdict(tc),
        **({"adversarial": identity["adversarial"]} if adversarial is not None else {}),
        **({"init": str(init)} if init is not None else {}),
        "seed": tc.seed,
        "version": __version__,
        "clean_metrics": metrics,
        "final_loss": float(np.mean(losses[-100:])),
        "train_seconds": round(time.time() - t0, 1),
        **parameter_counts(model),
    }
    model.meta = meta
    ckpt.save(model, out, meta)
    return meta


def _pretrain_start(preset: str, init) -> tuple:
    """(model, preset, identity part): a fresh MiniOFA of `preset`, or the pretrained base `init` continued."""
    from ..models.ofa import build
    from ..tasks.vocab import WORDS, bin_tokens

    if init is None:
        return build(preset, vocab=list(WORDS) + bin_tokens()), preset, {}
    d = ckpt.checkpoint_dir(init)
    model = ckpt.load(d)
    if model.meta.get("method") != "pretrain":
        raise TaskError(f"--init {init} is a {model.meta.get('method')} checkpoint; continue from a pretrained base")
    preset = model.meta.get("preset") or preset
    model.meta = {}
    for p in model.parameters():  # loaded frozen, as for evaluation: pretraining trains every weight
        p.requires_grad_(True)
    return model, preset, {"init_sha256": ckpt.sha256_file(d / ckpt.WEIGHTS)}


def tune(
    base: str | Path,
    task_name: str,
    tcfg: TuningConfig,
    tc: TrainConfig,
    out: Path,
    overwrite: bool = False,
    log=print,
    replace_stale: bool = False,
    adversarial=None,
    noise_sigma: float | None = None,
) -> dict:
    """Tune a base checkpoint on a downstream task with one method; save and evaluate it.

    replace_stale: `out` is a cache entry; one made from another base or config is retrained.
    adversarial: an AdversarialConfig (tuning/adversarial.py): tune on the engine's attacks.
    noise_sigma: tune on x + N(0, sigma^2) (tuning/noise.py), for randomized smoothing."""
    from ..tasks import load_task
    from ..tasks.named import training_mix
    from .adversarial import check_task
    from .noise import check_sigma

    noise_sigma = check_sigma(noise_sigma, adversarial)

    require_writable_dir(out, "checkpoint directory")  # before the base is read or trained
    torch.set_num_threads(tc.threads)
    base_dir = ckpt.checkpoint_dir(base)
    if training_mix(task_name):
        raise TaskError(f"{task_name} is a pretraining mix; tune on one of {', '.join(DOWNSTREAM)}")
    load_task(task_name, split="test", limit=1)  # an unknown task fails before the base is read
    model = ckpt.load(base_dir)  # validates the base before any work
    size = model.image_size
    train_task = load_task(task_name, split="train", seed=tc.seed, limit=tc.train_size, size=size)
    why = refusal(model, train_task)
    if why is not None:
        raise TaskError(why)
    check_architecture(tcfg.spec, model)
    tcfg.spec.check_task(train_task)
    tcfg = with_classes(tcfg, train_task.answers)  # a head sized by the task's classes records them (linear probe)
    check_task(adversarial, train_task)
    identity = {
        "kind": "tune",
        "base_sha256": ckpt.sha256_file(base_dir / ckpt.WEIGHTS),
        "task": task_name,
        "tuning": tcfg.relevant(),
        "train": asdict(tc),
        **({"adversarial": adversarial.record()} if adversarial is not None else {}),
        **({"noise_sigma": noise_sigma} if noise_sigma else {}),
    }
    # one builder per checkpoint directory: a second (another recipe sharing this zoo entry)
    # waits, then finds the finished checkpoint and reuses it; it never reads a half-written one
    with hold(out, "checkpoint directory", wait=True, on_wait=log):
        return _tune_locked(
            model, (base, base_dir), task_name, train_task, tcfg, tc, out, identity, overwrite, log, replace_stale,
            adversarial,
        )  # fmt: skip


def _tune_locked(
    model,
    base: tuple,
    task_name: str,
    train_task,
    tcfg: TuningConfig,
    tc: TrainConfig,
    out: Path,
    identity: dict,
    overwrite: bool,
    log,
    replace_stale: bool,
    adversarial,
) -> dict:
    from ..tasks import load_task

    base, base_dir = base  # as given (builtin:NAME or a path) and its directory
    size = model.image_size
    if ckpt.check_out_dir(out, identity, overwrite, replace_stale):
        log(f"reusing {out} (same base, task, method and schedule)")
        return ckpt.load(out).meta
    if replace_stale and ckpt.is_checkpoint(out):
        log(f"retraining {out}: it was made from another base or config")
    torch.manual_seed(tc.seed)
    apply_method(model, tcfg)
    counts = parameter_counts(model)
    t0 = time.time()
    lr = tc.lr or tcfg.spec.lr
    from .noise import label as noise_label

    sigma = identity.get("noise_sigma")  # Gaussian data augmentation (tuning/noise.py)
    how = adversarial.label() if adversarial else noise_label(sigma)
    label = f"{tcfg.method}{' ' + how if how else ''} {task_name}"
    losses = _fit(model, train_task, tc, lr, label, log, adversarial=adversarial, noise_sigma=sigma)
    test = load_task(task_name, split="test", seed=tc.seed, limit=tc.eval_size, size=size)
    metrics = evaluate_clean(model, test)
    meta = {
        "method": tcfg.method,
        "name": f"{tcfg.method}-{task_name}",
        "task": task_name,
        "kind": test.kind,
        "answers": test.answers,
        "tuning": tcfg.relevant(),
        **({"adversarial": identity["adversarial"]} if adversarial is not None else {}),
        **({"noise_sigma": sigma} if sigma else {}),
        "tuned_from": str(base),  # as given (builtin:NAME or a path); "base" is the delta's verified base
        **({"base_adversarial": base_adv} if (base_adv := model.meta.get("adversarial")) else {}),  # the base's
        "identity": identity,
        "train": asdict(tc),
        "lr": lr,
        "seed": tc.seed,
        "version": __version__,
        "clean_metrics": metrics,
        "eval_split": "test",
        "eval_size": len(test),
        "final_loss": float(np.mean(losses[-100:])),
        "train_seconds": round(time.time() - t0, 1),
        **counts,
    }
    model.meta = meta
    ckpt.save(model, out, meta, base_dir=base_dir if tcfg.spec.delta else None)
    return meta


__all__ = ["pretrain", "tune", "task_loss_embeds"]
