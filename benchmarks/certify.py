"""Benchmark: randomized smoothing's certification throughput against its floor.

    python benchmarks/certify.py [--model CKPT] [--n 32] [--sigma 0.25] [--n0 100] [--samples 1000]
                                 [--batch 128] [--repeat R] [--threads T]

Measured in one run, on one model (default: the demo prompt-tuned VQA checkpoint,
<cache>/zoo/prompt-shapes-vqa): `robust_pt.evaluate(model, task, attack="smoothing", eps=[0], ...)`
certifies its first n test examples (CERTIFY: n0 + n noisy copies of each example the model gets
right). Printed:

* throughput: noisy forward passes (example copies) per second, the run's counted passes over its
  wall time (clean pass, noise, bookkeeping and records included);
* the floor: the same passes at the best measured cost of one, a forward pass over candidate
  answers at the fastest batch size of 64, 128, 256, 512 and `--batch` (best of 5 timings each,
  measured after the runs, warm), and our wall time / the floor (target: <= 1.2).

--repeat R: medians of R timed runs.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch
from _common import add_repeat, add_seed_json, add_threads, model_parser  # benchmarks/_common.py, beside this script


def parse_args(argv=None):
    ap = model_parser(__doc__, n=32)
    ap.add_argument("--sigma", type=float, default=0.25)
    ap.add_argument("--n0", type=int, default=100)
    ap.add_argument("--samples", type=int, default=1000, help="CERTIFY's n (estimation copies per example)")
    ap.add_argument("--batch", type=int, default=128, help="noisy copies per forward pass")
    add_threads(ap)
    add_repeat(ap)
    add_seed_json(ap)
    return ap.parse_args(argv)


def forward_cost(model, task, batch: int, reps: int = 5) -> float:
    """Seconds per example copy of one forward pass over candidate answers at `batch` copies (best of reps)."""
    from robust_pt.models.predict import images_of

    exs = [task[i % len(task)] for i in range(batch)]
    x = images_of(exs)
    texts = [e.text for e in exs]
    with torch.no_grad():
        model.candidate_logits(x, texts, task.answers)  # warm-up
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            model.candidate_logits(x + 0.25 * torch.randn_like(x), texts, task.answers)
            best = min(best, time.perf_counter() - t)
    return best / batch


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    import robust_pt as rpt
    from robust_pt.errors import RobustPTError

    try:
        model = rpt.load_model(args.model)
    except RobustPTError as err:
        sys.exit(f"error: {err} (build the demo checkpoints with `robust-pt demo`, or pass --model)")
    task = rpt.load_task(args.task or model.trained_task, split="test", limit=args.n, seed=0, size=model.image_size)
    print(
        f"model {args.model}, task {task.name}, {len(task)} examples, sigma {args.sigma}, n0 {args.n0}, "
        f"n {args.samples}, {args.batch} copies per pass, {args.threads} thread(s)"
    )
    times, run = [], None
    for _ in range(max(1, args.repeat)):
        t = time.perf_counter()
        run = rpt.evaluate(
            model, task, attack="smoothing", eps=[0.0], sigma=args.sigma, n0=args.n0, n=args.samples,
            batch=args.batch, seed=args.seed, progress=False, samples=0,
        )  # fmt: skip
        times.append(time.perf_counter() - t)
    wall = statistics.median(times)
    passes = int(run.stats["fwd_evals"])
    sizes = sorted({64, 128, 256, 512, args.batch})
    costs = {b: forward_cost(model, task, b) for b in sizes}
    best = min(costs, key=costs.get)
    floor = passes * costs[best]
    certified = int(run.records["attacked"].sum())
    print(f"\ncertified {certified} of {len(task)} examples (the rest wrong on the clean image): {passes} passes")
    print(f"throughput: {passes / wall:,.0f} passes/s (wall {wall:.1f} s, median of {len(times)})")
    print(f"floor: {passes / floor:,.0f} passes/s ({costs[best] * 1e3:.3f} ms per copy at batch {best}; per batch: "
          + ", ".join(f"{b}: {c * 1e3:.3f}" for b, c in costs.items()) + " ms)")  # fmt: skip
    print(f"our wall time / floor = {wall:.1f} s / {floor:.1f} s = {wall / floor:.2f} (target <= 1.2)")
    out = {
        "model": args.model,
        "task": task.name,
        "n": len(task),
        "certified": certified,
        "passes": passes,
        "times": times,
        "wall": wall,
        "per_copy": {str(b): c for b, c in costs.items()},
        "best_batch": best,
        "floor": floor,
        "ratio": wall / floor,
        "threads": args.threads,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
