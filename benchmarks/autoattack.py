"""Benchmark: robust-pt's AutoAttack sweep against the reference AutoAttack, on the same images.

    python benchmarks/autoattack.py [--models digits,resnet] [--n 300] [--eps 0.025,0.05,0.1,0.2]
                                    [--repeat R] [--threads T] [--old]

Measured in one run, per model (a small CNN on sklearn's 8x8 digits, and a small ResNet on the
same digits drawn at 32x32 in colour; both trained here in seconds), on its first `n` test images:

* ours: `robust_pt.evaluate(model, (x, y), attack="autoattack", backend="ours", eps=[...])`, one
  4-eps sweep with the defaults (stored batches of 32, the attack batch probed, survivors of each
  eps attacked at the next, every draw seeded per example);
* reference: fra31's AutoAttack (`pyautoattack` 0.2.0 on PyPI packages it; installed into this
  environment when missing), version standard, `run_standard_evaluation(x, y, batch_size=n)` once per eps,
  as a user would run it;
* with --old also robust-pt's previous default (backend torchattacks, one stored batch at a time).

Both sides attack the same images; they alternate within each repeat and the medians are
compared. Prints per model the wall times, the ratio reference / ours (target: >= 1.5) and the
robust accuracy of every side at every eps (the sides' random draws differ, so the accuracies
may differ by the attacks' Monte-Carlo spread: the target is within 0.5 points).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

import torch
from _common import add_repeat, add_seed_json, add_threads  # benchmarks/_common.py, beside this script
from torch import nn

REFERENCE = "pyautoattack==0.2.0"


def parse_args(argv=None):
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="digits,resnet")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--eps", default="0.025,0.05,0.1,0.2")
    ap.add_argument("--old", action="store_true", help="also time robust-pt's previous default (torchattacks)")
    add_threads(ap)
    add_repeat(ap)
    add_seed_json(ap)
    return ap.parse_args(argv)


def reference_autoattack():
    """fra31's AutoAttack class, installed (without dependencies: it needs only torch) when missing."""
    try:
        from pyautoattack import AutoAttack
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", REFERENCE], check=True)
        from pyautoattack import AutoAttack
    return AutoAttack


# ----------------------------------------------------------------------------- the two classifiers


def _digits(size: int, colour: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """sklearn's digits in [0, 1], at `size` px, in a random colour per image when `colour`."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images / 16.0, dtype=torch.float32)[:, None]
    if size != 8:
        x = nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    if colour:
        tint = torch.rand(len(x), 3, 1, 1, generator=torch.Generator().manual_seed(1)) * 0.6 + 0.4
        x = x * tint
    return x, torch.tensor(d.target)


def _block(c_in: int, c_out: int, stride: int) -> nn.Module:
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
                nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False),
                nn.BatchNorm2d(c_out),
            )
            self.skip = nn.Conv2d(c_in, c_out, 1, stride, bias=False) if stride != 1 or c_in != c_out else nn.Identity()

        def forward(self, x):
            return torch.relu(self.a(x) + self.skip(x))

    return Block()


def _nets() -> dict:
    digits = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32 * 16, 10),
    )  # fmt: skip
    resnet = nn.Sequential(
        nn.Conv2d(3, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        _block(32, 32, 1), _block(32, 64, 2), _block(64, 128, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10),
    )  # fmt: skip
    return {"digits": (digits, 8, False, 8), "resnet": (resnet, 32, True, 4)}


def trained(name: str, n: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor, float]:
    """(the classifier, its first n test images and labels, its clean test accuracy)."""
    torch.manual_seed(0)
    net, size, colour, epochs = _nets()[name]
    x, y = _digits(size, colour)
    train, test = slice(0, 1400), slice(1400, None)
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    g = torch.Generator().manual_seed(0)
    net.train()
    for _ in range(epochs):
        for b in torch.randperm(1400, generator=g).split(64):
            loss = nn.functional.cross_entropy(net(x[train][b]), y[train][b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        acc = float((net(x[test]).argmax(-1) == y[test]).float().mean())
    return net, x[test][:n], y[test][:n], acc


# ----------------------------------------------------------------------------- the sides


def ours(net, x, y, eps: list[float], backend: str = "ours") -> list[float]:
    import robust_pt as rpt

    run = rpt.evaluate(net, (x, y), attack="autoattack", eps=eps, backend=backend, progress=False)
    s = run.summary.sort_values("eps")
    return [float(v) for v in s["robust"]]


def reference(net, x, y, eps: list[float], seed: int) -> list[float]:
    AutoAttack = reference_autoattack()
    out = []
    for e in eps:
        aa = AutoAttack(net, norm="Linf", eps=e, version="standard", seed=seed, device="cpu")
        adv, _ = aa.run_standard_evaluation(x, y, batch_size=len(x))  # (adversarial images, their labels)
        with torch.no_grad():
            out.append(float((net(adv).argmax(-1) == y).float().mean()))
    return out


def _timed(fn):
    t = time.perf_counter()
    r = fn()
    return time.perf_counter() - t, r


def bench(name: str, args, eps: list[float]) -> dict:
    net, x, y, acc = trained(name, args.n)
    sides = {"ours": lambda: ours(net, x, y, eps), "reference": lambda: reference(net, x, y, eps, args.seed)}
    if args.old:
        sides["robust-pt before (torchattacks)"] = lambda: ours(net, x, y, eps, backend="torchattacks")
    times: dict[str, list[float]] = {k: [] for k in sides}
    robust: dict[str, list[float]] = {}
    for _ in range(args.repeat):
        for k, fn in sides.items():
            t, robust[k] = _timed(fn)
            times[k].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}
    row = dict(model=name, n=len(x), clean_test_accuracy=acc, eps=eps, seconds=med, times=times, robust=robust)
    row["ratio"] = med["reference"] / med["ours"]
    print(f"{name}: {len(x)} images, clean test accuracy {acc:.3f}", flush=True)
    for k in sides:
        accs = ", ".join(f"{r:.3f}" for r in robust[k])
        print(f"  {k:32s} {med[k]:7.1f} s (median of {args.repeat})   robust accuracy {accs}", flush=True)
    print(f"  reference / ours: {row['ratio']:.2f}x", flush=True)
    return row


def main(argv=None) -> dict:
    from robust_pt.attacks import parse_eps

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    eps = parse_eps(args.eps)
    reference_autoattack()  # installed before anything is timed
    rows = [bench(m, args, eps) for m in args.models.split(",")]
    out = {"threads": args.threads, "repeat": args.repeat, "rows": rows}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return out


if __name__ == "__main__":
    main()
