"""Benchmark: backend ours against torchattacks for APGD-CE and AutoAttack standard.

    python benchmarks/autoattack.py [--n 64] [--eps 0.05,0.1] [--steps 100] [--targets 9]
                                    [--queries 5000] [--width 16] [--repeat R]

Measured in one run, on a small CNN trained here for about a second on sklearn's 8x8 digits
(--width: channels of its first layer; wider means more compute per pass), both backends on the
same correctly classified test images, at each eps: wall time of torchattacks divided by ours
(target: >= 1; ours stops attacking an example once it is misclassified and skips the last
iteration's unused gradient, the rest is the same work) and the robust accuracy of both (they
differ only by random starts). With --repeat R: medians of R alternating timings.
"""

from __future__ import annotations

import json
import statistics
import time

import torch
from _common import add_repeat, add_seed_json, add_threads  # benchmarks/_common.py, beside this script


def parse_args(argv=None):
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--eps", default="0.05,0.1")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--targets", type=int, default=9)
    ap.add_argument("--queries", type=int, default=5000)
    ap.add_argument("--width", type=int, default=16)
    add_threads(ap)
    add_repeat(ap)
    add_seed_json(ap)
    return ap.parse_args(argv)


def digits_cnn(width: int, n: int):
    """(classifier, n test images it classifies correctly, their labels)."""
    from sklearn.datasets import load_digits
    from torch import nn

    d = load_digits()
    X = torch.tensor(d.images / 16.0, dtype=torch.float32)[:, None]
    Y = torch.tensor(d.target)
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(2 * width * 16, 10),
    )
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(8):
        perm = torch.randperm(1500, generator=g)
        for i in range(0, 1500, 64):
            b = perm[i : i + 64]
            loss = nn.functional.cross_entropy(net(X[b]), Y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        ok = net(X[1500:]).argmax(-1) == Y[1500:]
    return net, X[1500:][ok][:n], Y[1500:][ok][:n]


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from robust_pt.attacks import build, parse_eps
    from robust_pt.attacks.image import run_image_attack
    from robust_pt.attacks.objectives import ClassifierImage
    from robust_pt.attacks.seeds import derive_seed

    net, x, y = digits_cnn(args.width, args.n)
    obj = ClassifierImage(net, y)
    presets = {
        "apgd-ce": dict(steps=args.steps),
        "autoattack": dict(steps=args.steps, target_classes=args.targets, queries=args.queries),
    }
    rows = []
    for eps in parse_eps(args.eps):
        seeds = [derive_seed(args.seed, i, eps) for i in range(len(x))]
        for name, kw in presets.items():
            times, robust = {"ours": [], "torchattacks": []}, {}
            for _ in range(args.repeat):
                for backend in times:
                    spec = build(name, backend=backend, **kw).spec
                    t = time.perf_counter()
                    r = run_image_attack(
                        spec, obj, x, eps, seeds=seeds, batch_seed=args.seed, classifier=net, n_classes=10
                    )
                    times[backend].append(time.perf_counter() - t)
                    robust[backend] = float((r.logits.argmax(-1) == y).float().mean())
            med = {k: statistics.median(v) for k, v in times.items()}
            rows.append(dict(attack=name, eps=eps, seconds=med, robust=robust, ratio=med["torchattacks"] / med["ours"]))
            print(
                f"{name:10s} eps {eps:.4g}: torchattacks {med['torchattacks']:.2f}s / ours {med['ours']:.2f}s = "
                f"{rows[-1]['ratio']:.2f}x; robust accuracy ours {robust['ours']:.3f}, "
                f"torchattacks {robust['torchattacks']:.3f}",
                flush=True,
            )
    out = {"n": len(x), "threads": args.threads, "rows": rows}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return out


if __name__ == "__main__":
    main()
