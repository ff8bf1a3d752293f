"""What adversarial tuning costs: one training step on adversarial inputs against a clean one, per method.

    python benchmarks/adversarial_cost.py [--batch 64] [--repeat 5] [--threads 2] [--json out.json]

On the built-in base (builtin:base-small) and a batch of shapes-vqa training questions, each tuning method
(finetune, prompt, adapter, bitfit, lora, apt at the ofa-pt-robustness recipe's options) takes one AdamW
step on its usual loss: clean, on FGSM-RS inputs (fast adversarial training, one attack step) and on PGD-3
inputs (`robust-pt train --adversarial pgd --adv-steps 3`), all at 4/255, through the code the training
loop runs (tuning/adversarial.py: the engine's run_image_attack on the victim's objective). Expected: about
steps + 1 times a clean step (each attack step is a forward and a backward to the pixels; for parameter-
efficient methods the clean step's backward is cheaper than the attack's, which must reach the pixels
through the whole frozen backbone, so their ratio is larger). FLOPs: torch's count (benchmarks/
tuning_cost.py's counter) of one step each way. The variants alternate within each repeat; medians over
repeats; read the ratios, not single timings.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import _common  # noqa: F401  (the repository on sys.path)

METHODS = ("finetune", "prompt", "adapter", "bitfit", "lora", "apt")
OPTIONS = {"prompt": {"prompt_length": 16}, "adapter": {"adapter_dim": 32}, "apt": {"apt_prompts": 16}}
VARIANTS = (("clean", None), ("fgsm-rs", ("fgsm", None)), ("pgd-3", ("pgd", 3)))


def setup(method: str, n: int, seed: int):
    """(model with the method applied, its parameters, the batch's examples, images, texts and targets)."""
    import torch

    from robust_pt.models.predict import images_of
    from robust_pt.tasks import load_task
    from robust_pt.tuning import checkpoint as ckpt
    from robust_pt.tuning.config import TuningConfig
    from robust_pt.tuning.methods import apply_method

    torch.manual_seed(seed)
    model = ckpt.load(ckpt.checkpoint_dir("builtin:base-small"))
    apply_method(model, TuningConfig(method, **OPTIONS.get(method, {})))
    task = load_task("shapes-vqa", split="train", limit=n, seed=seed, size=model.image_size)
    batch = [task[i] for i in range(n)]
    return model, task, batch, images_of(batch), [ex.text for ex in batch], [ex.target for ex in batch]


def step_fn(model, task, batch, x, texts, targets, variant):
    """One training step of `variant` (None: clean; (attack, steps)) as tuning/train.py's loop takes it."""
    import torch

    from robust_pt.tuning.adversarial import AdversarialConfig, InnerAttack, adversarial_loss

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    inner = None
    if variant is not None:
        attack, steps = variant
        inner = InnerAttack(AdversarialConfig(attack, 4 / 255, steps=steps), model, task, seed=0)

    def step():
        model.train()
        loss = adversarial_loss(
            model, task, inner, batch, x, texts, lambda e: model.sequence_loss_from_embeds(e, targets).mean(), 0
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def flops(fn) -> int:
    from tuning_cost import counter

    with counter() as c:
        fn()
    return int(c.get_total_flops())


def measure(method: str, n: int, repeat: int, iters: int, seed: int) -> dict:
    model, task, batch, x, texts, targets = setup(method, n, seed)
    steps = {name: step_fn(model, task, batch, x, texts, targets, v) for name, v in VARIANTS}
    for fn in steps.values():
        fn()  # warm-up
    times: dict = {name: [] for name in steps}
    for _ in range(repeat):
        for name, fn in steps.items():  # alternating within each repeat
            t = time.perf_counter()
            for _ in range(iters):
                fn()
            times[name].append(1000 * (time.perf_counter() - t) / iters)
    med = {name: statistics.median(v) for name, v in times.items()}
    fl = {name: flops(fn) for name, fn in steps.items()}
    return {
        "ms": med,
        "gflops": {k: v / 1e9 for k, v in fl.items()},
        "time_ratio": {k: med[k] / med["clean"] for k in med if k != "clean"},
        "flop_ratio": {k: fl[k] / fl["clean"] for k in fl if k != "clean"},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--iters", type=int, default=2, help="steps per timing")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", nargs="*", default=list(METHODS))
    _common.add_seed_json(ap)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    out = {}
    print(f"batch {args.batch}, {args.threads} threads, medians of {args.repeat} alternating repeats")
    print(
        f"{'method':10s} {'clean ms':>9s} {'FGSM-RS':>16s} {'PGD-3':>16s} {'GFLOP clean':>12s} {'FGSM-RS':>8s} {'PGD-3':>8s}"
    )
    for method in args.methods:
        r = out[method] = measure(method, args.batch, args.repeat, args.iters, args.seed)
        t, f = r["time_ratio"], r["flop_ratio"]
        print(
            f"{method:10s} {r['ms']['clean']:9.0f} {r['ms']['fgsm-rs']:8.0f} ({t['fgsm-rs']:.2f}x) "
            f"{r['ms']['pgd-3']:8.0f} ({t['pgd-3']:.2f}x) {r['gflops']['clean']:12.1f} {f['fgsm-rs']:7.2f}x {f['pgd-3']:7.2f}x"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "results": out}, fh, indent=1)


if __name__ == "__main__":
    main()
