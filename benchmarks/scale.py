"""Benchmark: cost grows linearly with the examples, memory stays flat, and 2 processes beat 1.

    python benchmarks/scale.py [--model CKPT] [--sizes 128,256,512,1024] [--speedup-size 256]
                               [--attack pgd] [--eps 2/255,8/255] [--steps 5] [--batch-size 32] [--repeat 3]
                               [--json FILE]

Measured in one run, on one model (default: the demo prompt-tuned VQA checkpoint,
<cache>/zoo/prompt-shapes-vqa), each figure in a fresh subprocess:

(a) for every size n: wall time of `robust_pt.evaluate` on the first n test examples
    (model already loaded, records streamed to a run directory) divided by n, and the
    process's peak resident memory (getrusage maxrss) with its growth over a warm-up
    run on one batch; each figure is the median of --repeat fresh processes, run in rounds
    over all sizes. Targets: time per example within 15% across sizes (max/min <= 1.15),
    peak memory within 10% (max/min <= 1.10). The attack's forward+backward passes per
    example are printed too: they vary with how many examples survive, which is data,
    not scaling.
(b) the speed-up of 2 processes x 1 torch thread (`evaluate(..., nproc=2)`, torch.distributed
    with gloo) over 1 process x 2 threads, both on the same n and both timed from the
    `evaluate` call with the checkpoint path (so each includes loading the model; the 2
    processes also include starting their interpreters). 1 process x 1 thread is shown
    for reference.

Prints a table and the ratios; --json writes them too.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args(argv=None):
    from robust_pt.tuning.zoo import entry_dir

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--model",
        default=str(entry_dir("shapes-vqa", "prompt")),
        help="checkpoint directory (default: <cache>/zoo/prompt-shapes-vqa)",
    )
    ap.add_argument("--task", default=None, help="built-in task (default: the one the model was tuned on)")
    ap.add_argument("--sizes", default="128,256,512,1024", help="comma-separated numbers of examples")
    ap.add_argument(
        "--speedup-size", type=int, default=256, help="examples for the 1 vs 2 processes figure (0: skip it)"
    )
    ap.add_argument("--attack", default="pgd")
    ap.add_argument("--eps", default="2/255,8/255")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the per-size runs")
    ap.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="measure every size this many times (fresh processes, "
        "interleaved) and report the medians; this machine's timings wander by 10-20%% run to run",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: one measurement
    return ap.parse_args(argv)


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _child(args) -> dict:
    """One measurement in this (fresh) process; prints its JSON on the last line."""
    mode, n = args.child.split(":")
    n = int(n)
    threads = args.threads if mode == "size" else int(mode.split("x")[1])
    os.environ["ROBUST_PT_QUIET"] = "1"
    import torch

    torch.set_num_threads(threads)
    import robust_pt as rpt
    from robust_pt.engine import evaluate

    common = dict(
        attack=args.attack,
        eps=args.eps,
        steps=args.steps,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=False,
        samples=0,
    )
    with tempfile.TemporaryDirectory() as tmp:
        if mode == "size":
            model = rpt.load_model(args.model)
            name = args.task or model.trained_task
            task = rpt.load_task(name, split="test", num_examples=n, seed=0, size=model.image_size)
            warm = rpt.load_task(name, split="test", limit=args.batch_size, seed=0, size=model.image_size)
            evaluate(model, warm, out=Path(tmp) / "warm", **common)  # imports, allocator pools, caches
            base = _maxrss_mb()
            t = time.perf_counter()
            run = evaluate(model, task, out=Path(tmp) / "run", **common)
            seconds = time.perf_counter() - t
            peak = _maxrss_mb()
            return {
                "n": len(task),
                "seconds": seconds,
                "peak_mb": peak,
                "growth_mb": peak - base,
                "grad_per_example": run.stats["grad_evals"] / len(task),
                "robust": [float(r) for r in run.summary["robust"]],
            }
        procs = int(mode.split("x")[0][1:])
        t = time.perf_counter()
        run = evaluate(
            args.model, args.task, out=Path(tmp) / "run", limit=n, nproc=procs if procs > 1 else None, **common
        )
        seconds = time.perf_counter() - t
        return {
            "n": n,
            "procs": procs,
            "threads": threads,
            "seconds": seconds,
            "loop_seconds": run.stats["wall_seconds"],  # the slowest rank's batches, no start-up
            "summary": run.summary[["eps", "clean", "robust"]].to_dict(orient="records"),
        }


def _measure(args, child: str, env_threads: int) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        child,
        "--model",
        args.model,
        "--attack",
        args.attack,
        "--eps",
        args.eps,
        "--steps",
        str(args.steps),
        "--batch-size",
        str(args.batch_size),
        "--threads",
        str(args.threads),
        "--seed",
        str(args.seed),
    ]
    if args.task:
        cmd += ["--task", args.task]
    env = {**os.environ, "OMP_NUM_THREADS": str(env_threads), "ROBUST_PT_QUIET": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(ROOT))
    if res.returncode != 0:
        sys.exit(f"error: measurement {child} failed:\n{res.stderr.strip()[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(_child(args)))
        return {}
    from robust_pt.errors import RobustPTError

    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        sys.exit(f"error: --sizes must be comma-separated integers, got {args.sizes!r}")
    if not sizes or min(sizes) <= 0:
        sys.exit("error: --sizes must be positive integers")
    if not (Path(args.model) / "meta.json").exists():
        try:
            import robust_pt as rpt

            rpt.load_model(args.model)
        except RobustPTError as err:
            sys.exit(f"error: {err} (build the demo checkpoints with `robust-pt demo`, or pass --model)")
    print(
        f"model {args.model}, {args.attack}-{args.steps} at eps {args.eps}, batch {args.batch_size}; "
        f"per-size runs: {args.threads} torch thread(s), {os.cpu_count()} CPU core(s)"
    )

    # rounds over all sizes, so that a slow spell of the machine hits every size alike
    takes = {n: [] for n in sizes}
    for _ in range(max(1, args.repeat)):
        for n in sizes:
            takes[n].append(_measure(args, f"size:{n}", args.threads))
    rows = []
    print(
        f"\n{'n':>6} {'seconds':>9} {'ms/example':>11} {'grad/example':>13} {'ms/grad':>8} {'peak MB':>9} "
        f"{'growth MB':>10}   (medians of {max(1, args.repeat)} fresh processes)"
    )
    for n in sizes:
        r = dict(takes[n][0])
        for k in ("seconds", "peak_mb", "growth_mb"):
            r[k] = statistics.median(t[k] for t in takes[n])
        r["seconds_all"] = [t["seconds"] for t in takes[n]]
        r["ms_per_example"] = 1000 * r["seconds"] / r["n"]
        # a model that gets nothing right is never attacked: no gradient passes, no ms/grad
        r["ms_per_grad"] = r["ms_per_example"] / r["grad_per_example"] if r["grad_per_example"] else None
        rows.append(r)
        ms_grad = f"{r['ms_per_grad']:8.2f}" if r["ms_per_grad"] is not None else f"{'-':>8}"
        print(
            f"{r['n']:>6} {r['seconds']:9.2f} {r['ms_per_example']:11.2f} {r['grad_per_example']:13.2f} "
            f"{ms_grad} {r['peak_mb']:9.1f} {r['growth_mb']:10.1f}"
        )
    per = [r["ms_per_example"] for r in rows]
    peaks = [r["peak_mb"] for r in rows]
    time_ratio, mem_ratio = max(per) / min(per), max(peaks) / min(peaks)
    print(f"\ntime per example: max/min = {time_ratio:.3f} (target <= 1.15)")
    print(
        f"peak memory:      max/min = {mem_ratio:.3f} (target <= 1.10); growth over a one-batch warm-up: "
        f"{min(r['growth_mb'] for r in rows):.1f} .. {max(r['growth_mb'] for r in rows):.1f} MB"
    )
    result = {
        "model": args.model,
        "attack": args.attack,
        "eps": args.eps,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "sizes": rows,
        "time_ratio": time_ratio,
        "memory_ratio": mem_ratio,
    }

    if args.speedup_size:
        n = args.speedup_size
        one2 = _measure(args, f"p1x2:{n}", 2)
        two1 = _measure(args, f"p2x1:{n}", 1)
        one1 = _measure(args, f"p1x1:{n}", 1)
        same = one2["summary"] == two1["summary"] == one1["summary"]
        speedup = one2["seconds"] / two1["seconds"]
        print(
            f"\nspeed-up at n={n}: 1 process x 2 threads {one2['seconds']:.1f} s / 2 processes x 1 thread "
            f"{two1['seconds']:.1f} s = {speedup:.2f}x (1 process x 1 thread: {one1['seconds']:.1f} s, "
            f"{one1['seconds'] / two1['seconds']:.2f}x); same clean/robust: {'yes' if same else 'NO'}"
        )
        loop = one2["loop_seconds"] / two1["loop_seconds"]
        print(
            f"  attack loop only (no start-up or model loading): {one2['loop_seconds']:.1f} s / "
            f"{two1['loop_seconds']:.1f} s = {loop:.2f}x"
        )
        result.update(
            speedup=speedup,
            speedup_loop=loop,
            speedup_n=n,
            one_proc_two_threads_s=one2["seconds"],
            two_procs_one_thread_s=two1["seconds"],
            one_proc_one_thread_s=one1["seconds"],
            same_summary=same,
        )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
