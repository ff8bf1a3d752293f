"""GPU check: the engine's CUDA path end to end, in under 5 minutes, printing examples/s.

    bash benchmarks/cuda_check.sh [--n 512] [--json out.json]     # the wrapper checks for a GPU first

What it runs, each on shapes-vqa with `--device cuda` (tests and CI never have a GPU, so this
is the only place the CUDA path runs):

1. PGD-10 at 2/255 and 8/255 on the committed base (builtin:base-small), `--batch-size auto`
   (the probe picks the batch), and the same 64 examples on the CPU: clean accuracy must agree
   and the robust accuracies within a few examples (float32 on both; kernels differ);
2. emb-fgsm on the base, `--batch-size auto`;
3. PGD-10 on the demo's prompt-tuned checkpoint, if `make demo` built it here;
4. PGD on one GPU through torchrun (nccl process group, rank 0 of 1): the run completes and its
   records equal the single-process run's;
5. PGD-10 at 4/255 on the committed tiny LLaVA (robust_pt/assets/tiny-llava, a captioner: the
   reference captions' token loss, CIDEr of greedy captions) in bf16 autocast and in fp32: both
   complete, adversarial images in the ball, robust CIDEr within 15% of each other.

Prints one line per step (wall seconds, examples/s, clean and robust accuracy) and the checks'
verdicts; exit status 1 if a check fails. --json writes the figures.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (the repository on sys.path)


def parse_args(argv=None):
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=512, help="examples per GPU run")
    ap.add_argument("--json", default=None, help="write the figures here")
    ap.add_argument("--keep", action="store_true", help="keep the run directories (printed) instead of deleting them")
    ap.add_argument(
        "--device", default="cuda", help="cuda; cpu is a dry run of the script itself (tiny n, no bf16, gloo)"
    )
    return ap.parse_args(argv)


def timed(label: str, rows: list, **kw):
    """evaluate(**kw), timed; one row of figures appended to `rows`; returns the Run."""
    import torch

    from robust_pt.engine import evaluate

    if str(kw.get("device", "")).startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    run = evaluate(progress=False, samples=0, **kw)
    if str(kw.get("device", "")).startswith("cuda"):
        torch.cuda.synchronize()
    wall = time.perf_counter() - t
    s = run.summary
    n = int(s.iloc[0]["n"])
    row = {
        "step": label,
        "wall_s": round(wall, 2),
        "examples_per_s": round(n * len(s) / wall, 1),  # example x eps per second
        "n": n,
        "batch_size": json.loads((Path(kw["out"]) / "run.json").read_text())["config"]["batch_size"]
        if kw.get("out")
        else kw.get("batch_size"),
        "clean": round(float(s.iloc[0]["clean"]), 4),
        "robust": [round(float(r), 4) for r in s["robust"]],
    }
    rows.append(row)
    print(
        f"{label:<34} {row['wall_s']:>7.1f} s  {row['examples_per_s']:>8.1f} ex/s  batch {row['batch_size']}  "
        f"clean {row['clean']:.3f}  robust {row['robust']}",
        flush=True,
    )
    return run


def check(name: str, ok: bool, detail: str, verdicts: list) -> None:
    verdicts.append({"check": name, "ok": bool(ok), "detail": detail})
    print(f"  {'ok  ' if ok else 'FAIL'} {name}: {detail}", flush=True)


def torchrun_records(n: int, out: Path, device: str) -> tuple[float, list]:
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", "-m", "robust_pt", "attack",
        "--model", "builtin:base-small", "--attack", "pgd", "--task", "shapes-vqa", "--eps", "8/255",
        "--steps", "10", "--limit", str(n), "--batch-size", "64", "--device", device, "--out", str(out),
    ]  # fmt: skip
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "4"})
    wall = time.perf_counter() - t
    recs = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    return wall, sorted((r["id"], r["eps"], r["correct"]) for r in recs if "index" in r)


def main(argv=None) -> int:
    import torch

    from robust_pt.testing.tiny_vlm import TINY_LLAVA
    from robust_pt.tuning.zoo import entry_dir

    args = parse_args(argv)
    dev = args.device
    if dev.startswith("cuda") and not torch.cuda.is_available():
        print("cuda_check: torch sees no CUDA device; nothing to check")
        return 3
    where = torch.cuda.get_device_name(0) if dev.startswith("cuda") else "CPU (dry run)"
    print(f"cuda_check on {where}, torch {torch.__version__}", flush=True)
    rows, verdicts = [], []
    small = min(256, args.n)
    tmp = Path(tempfile.mkdtemp(prefix="rpt-cuda-"))
    pgd = dict(attack="pgd", steps=10, task="shapes-vqa")
    gpu = timed("pgd base (auto batch)", rows, model="builtin:base-small", eps=[2 / 255, 8 / 255],
                limit=args.n, batch_size="auto", device=dev, out=tmp / "pgd", **pgd)  # fmt: skip
    cpu = timed("pgd base, 64 on CPU", rows, model="builtin:base-small", eps=[2 / 255, 8 / 255], limit=min(64, args.n),
                batch_size=64, device="cpu", out=tmp / "pgd-cpu", **pgd)  # fmt: skip
    ids = set(cpu.records["id"])
    g64 = gpu.records[gpu.records["id"].isin(ids)]
    same_clean = g64.groupby("id")["clean_correct"].first() == cpu.records.groupby("id")["clean_correct"].first()
    diff = abs(int(g64["correct"].sum()) - int(cpu.records["correct"].sum()))
    check("cuda = cpu", bool(same_clean.all()) and diff <= 4,
          f"clean agree on {int(same_clean.sum())}/{len(same_clean)}, robust counts differ by {diff}", verdicts)  # fmt: skip
    timed("emb-fgsm base (auto batch)", rows, model="builtin:base-small", attack="emb-fgsm", task="shapes-vqa",
          limit=args.n, batch_size="auto", device=dev, out=tmp / "emb")  # fmt: skip
    demo = entry_dir("shapes-vqa", "prompt")
    if (demo / "meta.json").exists() and dev.startswith("cuda"):
        timed("pgd demo prompt checkpoint", rows, model=str(demo), eps=[2 / 255, 8 / 255], limit=args.n,
              batch_size="auto", device=dev, out=tmp / "demo", **pgd)  # fmt: skip
    else:
        print(f"  (no demo checkpoint at {demo}: `make demo` builds it; step skipped)")
    one = timed("pgd base, single process", rows, model="builtin:base-small", eps=[8 / 255], limit=small,
                batch_size=64, device=dev, out=tmp / "single", **pgd)  # fmt: skip
    wall, recs = torchrun_records(small, tmp / "torchrun", dev)
    rows.append({"step": "pgd base, torchrun nccl x1", "wall_s": round(wall, 2), "n": small})
    print(f"{'pgd base, torchrun nccl x1':<34} {wall:>7.1f} s (with process start-up)", flush=True)
    mine = sorted((r["id"], r["eps"], bool(r["correct"])) for _, r in one.records.iterrows())
    check("torchrun = single process", [tuple(x[:2]) + (bool(x[2]),) for x in recs] == mine,
          "records equal", verdicts)  # fmt: skip
    runs = {}
    for prec in ("bf16", "fp32") if dev.startswith("cuda") else ("fp32", "auto"):
        runs[prec] = timed(f"pgd tiny LLaVA captions {prec}", rows, model=str(TINY_LLAVA), attack="pgd", steps=10,
                           task="shapes-caption", eps=[4 / 255], limit=min(64, args.n), batch_size="auto",
                           device=dev, precision=prec, out=tmp / f"llava-{prec}")  # fmt: skip
    inside = all(float(r["linf"].max()) <= 4 / 255 + 1e-6 for r in (x.records for x in runs.values()))
    a, b = (runs[p].summary.iloc[0]["robust"] for p in runs)
    gap = abs(float(a) - float(b)) / max(float(a), float(b), 1e-9)
    check("tiny LLaVA bf16 ~ fp32", inside and gap <= 0.15,
          f"in the ball: {inside}; robust CIDEr differ by {gap:.1%}", verdicts)  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "checks": verdicts}, indent=1))
    if args.keep:
        print(f"run directories: {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if all(v["ok"] for v in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
