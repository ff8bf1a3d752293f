"""Benchmark: a 3 x 3 transfer matrix with crafted-input reuse against crafting per (source, target) pair.

    python benchmarks/transfer.py [--n 128] [--steps 10] [--eps 4/255,8/255] [--repeat R]

Three sources and three targets of one architecture (the committed base, builtin:base-small,
and two copies of it with their weights moved a little, so that nothing here needs a trained
zoo; crafting costs the same whatever the weights learned). Each side runs the nine
(source, target) transfer runs of PGD-k on shapes-vqa:

(a) reuse: `evaluate(target, surrogate=source, crafted=DIR)` with one fresh DIR shared by the
    nine runs: each source's inputs are crafted at its first target and judged on the rest
    (3 craftings + 9 judgements);
(b) per pair: the same nine runs with `crafted=None`: every run crafts its own (9 craftings).

Prints both wall times (with --repeat R: medians of R alternating timings), their ratio
(expected near 3: crafting dominates and (a) does a third of it) and the crafting passes each
side counted; the records of both sides are checked to be identical. --json writes them too.
"""

from __future__ import annotations

import copy
import json
import statistics
import sys
import tempfile
import time

import torch
from _common import add_repeat, add_seed_json, add_threads  # benchmarks/_common.py, beside this script


def parse_args(argv=None):
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=128, help="examples")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--eps", default="4/255,8/255")
    ap.add_argument("--batch-size", type=int, default=64)
    add_threads(ap)
    add_repeat(ap)
    add_seed_json(ap)
    return ap.parse_args(argv)


def models(seed: int) -> list:
    """The base and two copies with their weights moved by 2% of each tensor's spread."""
    from robust_pt import load_model

    base = load_model("builtin:base-small")
    out = [base]
    for k in (1, 2):
        m = copy.deepcopy(base)
        g = torch.Generator().manual_seed(seed + k)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.02 * p.detach().std().clamp_min(1e-3))
        out.append(m)
    return out


def matrix(ms: list, task, args, reuse: bool) -> tuple[float, int, list]:
    """Wall time of the nine runs, the crafting passes counted, and the records (for the equality check)."""
    import robust_pt as rpt

    kw = dict(attack="pgd", eps=args.eps, steps=args.steps, seed=args.seed, batch_size=args.batch_size)
    crafted, records = 0, []
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        for s in ms:
            for t in ms:
                run = rpt.evaluate(t, task, surrogate=s, crafted=d if reuse else None, progress=False, **kw)
                crafted += run.stats.get("crafted", 0)
                records.append(run.records.sort_values(["eps", "id"]).reset_index(drop=True))
        return time.perf_counter() - t0, crafted, records


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from robust_pt import load_task

    ms = models(args.seed)
    task = load_task("shapes-vqa", split="test", limit=args.n, seed=0, size=ms[0].image_size)
    times = {"reuse": [], "per_pair": []}
    passes: dict = {}
    first: dict = {}
    for r in range(args.repeat):
        for side in ("reuse", "per_pair") if r % 2 == 0 else ("per_pair", "reuse"):
            wall, crafted, recs = matrix(ms, task, args, side == "reuse")
            times[side].append(wall)
            passes[side] = crafted
            first.setdefault(side, recs)
    same = all(a.equals(b) for a, b in zip(first["reuse"], first["per_pair"]))
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {
        "n": args.n,
        "steps": args.steps,
        "eps": args.eps,
        "repeat": args.repeat,
        "threads": args.threads,
        "reuse_seconds": med["reuse"],
        "per_pair_seconds": med["per_pair"],
        "ratio": med["per_pair"] / med["reuse"],
        "crafting_passes": passes,
        "records_identical": same,
    }
    print(f"3 x 3 transfer matrix, PGD-{args.steps}, {args.n} shapes-vqa examples, eps {args.eps}")
    print(f"  reuse     {med['reuse']:7.1f} s  ({passes['reuse']} batch x eps craftings)")
    print(f"  per pair  {med['per_pair']:7.1f} s  ({passes['per_pair']} batch x eps craftings)")
    print(f"  ratio per pair / reuse: {out['ratio']:.2f}x (medians of {args.repeat}); records identical: {same}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
