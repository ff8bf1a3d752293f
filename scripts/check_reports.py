"""Rebuild every committed report from its committed runs and compare it with what is committed.

Why: a refactor must never move a number. This rebuilds each report under reports/ into a
temporary folder with the command docs/findings.md gives for it, then compares report.md
(all but its date line) and every CSV byte for byte. Exit 1 and a unified diff when
anything differs.

    .venv/bin/python scripts/check_reports.py            # all of them (a few minutes)
    .venv/bin/python scripts/check_reports.py transfer   # one
"""

from __future__ import annotations

import difflib
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPORTS = {  # name -> (run directories, extra options)
    "prompt-factors": (["reports/prompt-factors/runs"], []),
    "ofa-pt-robustness": (["reports/ofa-pt-robustness/runs"], []),
    "corruptions": (["reports/corruptions/runs"], []),
    "transfer": (["reports/transfer/runs"], []),
    "tiny-llava": (["reports/tiny-llava/runs"], []),
    "adversarial-tuning": (["reports/adversarial-tuning/runs"], []),
    "certified": (["reports/certified/runs"], []),
    "clip-prompt-learning": (["reports/clip-prompt-learning/runs"], []),
}
DATE = re.compile(r" on \d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}")  # the date line's only moving part
TITLES = {
    "apt-vs-prompt": "robust-pt: ofa-pt-robustness, APT against deep prompt tuning",
    "against-clean": "robust-pt: adversarial-tuning, each adversarially tuned model against its clean partner",
}


def _apt_vs_prompt() -> list[str]:
    runs = sorted((ROOT / "reports/ofa-pt-robustness/runs").iterdir())
    return [str(p.relative_to(ROOT)) for p in runs if p.is_dir() and p.name.split("_")[1] in ("apt", "prompt")]


def _lines(path: Path) -> list[str]:
    text = path.read_text().splitlines(keepends=True) if path.exists() else []
    return [DATE.sub(" on DATE", line) for line in text]


def compare(committed: Path, fresh: Path) -> list[str]:
    diffs = []
    names = ["report.md"] + sorted(p.name for p in committed.glob("*.csv"))
    for name in names:
        a, b = _lines(committed / name), _lines(fresh / name)
        if a != b:
            diffs += list(difflib.unified_diff(a, b, f"committed/{name}", f"fresh/{name}", n=1))[:40]
    return diffs


def rebuild(name: str, runs: list[str], title: str, extra: list[str], out: Path) -> None:
    exe = Path(sys.executable).parent / "robust-pt"
    cmd = [str(exe), "report", *runs, "--out", str(out), "--allow-mixed", "--gallery", "0", "--title", title, *extra]
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def main(argv: list[str]) -> int:
    jobs = {k: v for k, v in REPORTS.items()}
    jobs["ofa-pt-robustness/apt-vs-prompt"] = (_apt_vs_prompt(), ["--reference", "prompt"])
    jobs["adversarial-tuning/against-clean"] = (["reports/adversarial-tuning/runs"], ["--reference", "clean"])
    wanted = argv or list(jobs)
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in wanted:
            runs, extra = jobs[name]
            leaf = name.split("/")[-1]
            out = Path(tmp) / leaf
            rebuild(name, runs, TITLES.get(leaf, f"robust-pt: {name}"), extra, out)
            diffs = compare(ROOT / "reports" / name, out)
            print(f"{name}: {'identical' if not diffs else 'DIFFERS'}")
            if diffs:
                bad += 1
                sys.stdout.writelines(diffs)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
