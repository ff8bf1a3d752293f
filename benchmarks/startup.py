"""Startup costs that used to be timed inside tests: `import robust_pt` and example generation.

    python benchmarks/startup.py [--repeat 5]

Prints the median over fresh processes of `import robust_pt` (target: under 2 s) and of
`import robust_pt, robust_pt.attacks, robust_pt.attacks.presets` (neither may load
textattack or torchattacks; tests/test_setup.py checks which modules load), and the median
time to generate one ShapesWorld example by random access (target: about 1 ms, 20 ms at
most). Timings live here, not in tests: test machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import _common  # noqa: F401  (the repository on sys.path)

IMPORTS = {
    "import robust_pt": "import robust_pt",
    "import robust_pt + attacks": "import robust_pt, robust_pt.attacks, robust_pt.attacks.presets",
}


def import_seconds(stmt: str) -> float:
    code = f"import time; t = time.perf_counter(); {stmt}; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def generation_seconds(n: int = 200) -> float:
    from robust_pt.tasks import load_task

    t = load_task("shapes-vqa", split="train", num_examples=10**6)
    start = time.perf_counter()
    for i in range(n):
        t[i * 4999]
    return (time.perf_counter() - start) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="fresh processes / rounds per measurement (medians)")
    args = ap.parse_args()
    out = {}
    for name, stmt in IMPORTS.items():
        out[name] = statistics.median(import_seconds(stmt) for _ in range(args.repeat))
        print(f"{name}: median {out[name]:.2f} s over {args.repeat} fresh processes (target < 2 s)")
    gen = statistics.median(generation_seconds() for _ in range(args.repeat))
    out["generate one example"] = gen
    print(f"generate one ShapesWorld example: median {gen * 1000:.2f} ms (target about 1 ms, at most 20 ms)")
    print(json.dumps({k: round(v, 5) for k, v in out.items()}))


if __name__ == "__main__":
    main()
