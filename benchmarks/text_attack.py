"""Benchmark: our text-attack runner against TextAttack's own Attacker with a plain wrapper.

    python benchmarks/text_attack.py [--model CKPT] [--n 200] [--attack deepwordbug]

Measured in one run, on one model (default: the demo prompt-tuned VQA checkpoint,
<cache>/zoo/prompt-shapes-vqa), the same TextAttack attack (the preset's recipe, word
budget and query budget) on the same n examples, two ways:

(a) ours: `robust_pt.evaluate(model, task, attack=...)` (clean pass, only correct
    examples attacked, the VL wrapper: image features once per example, each distinct
    token sequence scored once, large batches);
(b) baseline: `textattack.Attacker(attack, dataset).attack_dataset()` with a plain
    ModelWrapper that runs the whole model (image included) on every query, in
    TextAttack's default batches of 32. Its dataset hook sets each example's image and
    clears TextAttack's query cache, which is keyed by text alone (the same question
    with another image would otherwise reuse the previous image's answer).

Prints both wall times (with --repeat R: medians of R alternating timings), their ratio
(target: ours >= 3x faster) and both success rates
(successful / attacked; target: within 2 points; random character choices are seeded
per example in ours and once per run in TextAttack, so they differ a little). --json
writes the figures too. TextAttack is imported (and timed) before either run.
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
    ap = model_parser(__doc__, n=200)
    ap.add_argument("--attack", default="deepwordbug", help="text attack preset")
    ap.add_argument("--eps", default=None, help="word budget (default: the preset's)")
    ap.add_argument("--batch-size", type=int, default=32, help="engine batch (the resume unit)")
    add_threads(ap)
    add_repeat(ap)
    add_seed_json(ap)
    return ap.parse_args(argv)


def baseline(model, task, spec, fraction: float, seed: int) -> dict:
    """TextAttack's Attacker over the same attack with a plain (recompute-everything) wrapper."""
    import textattack
    from textattack.attack_results import FailedAttackResult, SkippedAttackResult, SuccessfulAttackResult

    from robust_pt.attacks.text.recipes import _quiet, build_attack
    from robust_pt.attacks.vl_wrapper import PlainVLWrapper, VLScorer, WordBudget

    wrapper = PlainVLWrapper(model, task.answers)
    budget = WordBudget(fraction)  # n_words unset: the text's own word count (swaps keep it)
    attack = build_attack(
        spec.text_recipe,
        wrapper,
        budget,
        spec,
        batch_size=32,  # TextAttack's default batch
        unk_token=VLScorer(model, task.answers).unk_token(),
    )  # the same attack as ours
    examples = [task[i] for i in range(len(task))]

    class ImageDataset(textattack.datasets.Dataset):
        def __getitem__(self, i):
            wrapper.image = torch.from_numpy(examples[i].image).float().to(next(model.parameters()).device)
            attack.clear_cache()
            return super().__getitem__(i)

    data = ImageDataset([(ex.text, int(ex.label)) for ex in examples])
    args = textattack.AttackArgs(
        num_examples=len(examples), random_seed=seed, silent=True, disable_stdout=True, query_budget=spec.queries
    )
    t = time.perf_counter()
    with _quiet():
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            results = textattack.Attacker(attack, data, args).attack_dataset()
    wall = time.perf_counter() - t
    ok = sum(isinstance(r, SuccessfulAttackResult) for r in results)
    failed = sum(isinstance(r, FailedAttackResult) for r in results)
    skipped = sum(isinstance(r, SkippedAttackResult) for r in results)
    return {
        "wall_s": wall,
        "attacked": ok + failed,
        "succeeded": ok,
        "skipped": skipped,
        "success_rate": ok / (ok + failed) if ok + failed else float("nan"),
        "queries": wrapper.queries,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    import robust_pt as rpt
    from robust_pt.attacks import build
    from robust_pt.attacks.text.recipes import load_textattack
    from robust_pt.errors import RobustPTError

    try:
        model = rpt.load_model(args.model)
        name = args.task or model.trained_task
        if not name:
            raise RobustPTError(f"{args.model} was not tuned on a task; pass --task")
        task = rpt.load_task(name, split="test", limit=args.n, seed=0, size=model.image_size)
        from robust_pt.tasks.base import Task

        # generated once, outside both timings
        task = Task(
            name=task.name,
            kind=task.kind,
            split=task.split,
            metric=task.metric,
            answers=task.answers,
            image_size=task.image_size,
            seed=task.seed,
            _examples=[task[i] for i in range(len(task))],
        )
        atk = build(args.attack)
        if atk.kind != "text":
            raise RobustPTError(f"{args.attack} is not a text attack")
        fraction = atk.eps_grid(args.eps)[0]
        t = time.perf_counter()
        load_textattack()
        import_s = time.perf_counter() - t

        ours_times, base_times = [], []
        for _ in range(max(1, args.repeat)):
            t = time.perf_counter()
            run = rpt.evaluate(
                model,
                task,
                attack=atk,
                eps=fraction,
                seed=args.seed,
                batch_size=args.batch_size,
                progress=False,
                samples=0,
            )
            ours_times.append(time.perf_counter() - t)
            base = baseline(model, task, atk.spec, fraction, args.seed)
            base_times.append(base["wall_s"])
    except RobustPTError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    ours_wall = statistics.median(ours_times)
    base["wall_s"] = statistics.median(base_times)
    row = run.summary.iloc[0]
    ours = {
        "wall_s": ours_wall,
        "attacked": int(row["n_attacked"]),
        "succeeded": int(row["n_broken"]),
        "success_rate": float(row["success_rate"]),
        "queries": int(run.stats.get("text_queries", 0)),
        "model_rows": int(run.stats.get("text_model_rows", 0)),
    }

    ratio = base["wall_s"] / ours_wall if ours_wall > 0 else float("nan")
    gap = 100 * abs(ours["success_rate"] - base["success_rate"])
    print(
        f"{args.attack} on {Path(args.model).name} ({task.name}, n={len(task)}, word budget {fraction:g}, "
        f"query budget {atk.spec.queries}, {args.threads} thread(s); textattack import {import_s:.1f} s; "
        f"median of {len(ours_times)} timing(s))"
    )
    print(f"{'':>22} {'wall s':>8} {'attacked':>9} {'succeeded':>10} {'success':>8} {'queries':>8}")
    for label, r in (("ours (robust-pt)", ours), ("TextAttack Attacker", base)):
        print(
            f"{label:>22} {r['wall_s']:8.2f} {r['attacked']:9d} {r['succeeded']:10d} "
            f"{100 * r['success_rate']:7.1f}% {r['queries']:8d}"
        )
    print(f"speed-up (TextAttack wall / ours): {ratio:.2f}x (target >= 3x)")
    print(f"success-rate gap: {gap:.1f} points (target <= 2)")
    print(f"our model rows: {ours['model_rows']} for {ours['queries']} queried texts")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "model": args.model,
                    "task": task.name,
                    "n": len(task),
                    "attack": args.attack,
                    "word_budget": fraction,
                    "ours": ours,
                    "textattack": base,
                    "speedup": ratio,
                    "success_gap_points": gap,
                    "ours_times_s": ours_times,
                    "textattack_times_s": base_times,
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
