"""README.md works as written: every command it shows runs here or is allowlisted, its Python runs.

Why: a front page whose commands have rotted is worse than none. So this file reads the
README's fenced blocks and, in a fresh directory, in the README's order:

* runs every `robust-pt ...` line of a ```bash block verbatim through the CLI (in-process,
  typer's CliRunner) and asserts exit 0;
* executes every ```python block;
* checks that every line of a ```yaml block is a line of examples/ci/robust-pt.yml (the
  README shows an excerpt of that workflow, which must not drift from it).

A shell line that cannot run inside the suite (make, pip, a download, a venv) must be in
ALLOWED below, mapped to the test or CI step that covers it; a line that is neither run nor
allowlisted fails `test_every_command_is_run_or_allowlisted`, and an allowlist entry the
README no longer shows fails too. The README keeps its commands small (`--limit 64`, a few
tuning steps) so that all of this takes about a minute on two cores.

Checkpoints the README takes from elsewhere are made first at the same relative paths: a
tiny random ViLT (robust_pt.testing.hf_tiny.save_tiny) stands in for the downloaded
`ckpts/vilt-vqa`. Links between README.md and docs/*.md (files and #anchors) must resolve.
"""

from __future__ import annotations

import re
import shlex
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CI_EXAMPLE = ROOT / "examples" / "ci" / "robust-pt.yml"

#: shell lines the suite cannot run, as the README writes them (comments dropped), and what covers each
ALLOWED = {
    "make demo": "`robust-pt demo` (recipes/demo.yaml, 8 min 34 s): tests/test_recipe.py and the CLI tests run its "
    "parts; `make dogfood` (.ci/run) runs the same machinery on recipes/ci-smoke.yaml from scratch",
    "make test": ".ci/run (`make test`)",
    "python -m venv .venv && . .venv/bin/activate": "tests/test_wheel.py (a fresh venv; `make test-wheel` in .ci/run)",
    "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu": "make setup (the pins of "
    "constraints.txt, torch 2.13.0 CPU) and tests/test_wheel.py",
    "pip wheel --no-deps -w dist .": "tests/test_wheel.py (`pip wheel --no-deps`; `make test-wheel` in .ci/run)",
    "pip install -c constraints.txt dist/robust_pt-*.whl": "tests/test_wheel.py (the wheel with -c constraints.txt)",
    "pip install --no-deps torchattacks==3.5.1": "tests/test_wheel.py and make setup (TORCHATTACKS in the Makefile)",
    "huggingface-cli download dandelin/vilt-b32-finetuned-vqa --local-dir ckpts/vilt-vqa": "needs the internet; "
    "the `readme_dir` fixture below writes a tiny ViLT at ckpts/vilt-vqa instead",
}

FENCE = re.compile(r"^```([\w-]*)[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)


def blocks(text: str) -> list[tuple[str, str, int]]:
    """(language, body, line number of the opening fence) of every fenced block, in order."""
    return [(m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1) for m in FENCE.finditer(text)]


def shell_lines(body: str) -> list[str]:
    """The commands of a shell block, as written: continuations joined, comments and blank lines dropped."""
    out = []
    for line in body.replace("\\\n", " ").splitlines():
        line = _uncomment(line).strip()
        if line:
            out.append(re.sub(r"\s+", " ", line))
    return out


def _uncomment(line: str) -> str:
    """`line` up to a `#` that starts a shell comment (outside quotes, at the start or after a blank)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def readme_commands() -> list[str]:
    text = README.read_text()
    return [c for lang, body, _ in blocks(text) if lang in ("bash", "sh", "shell") for c in shell_lines(body)]


def runs_here(command: str) -> bool:
    return command.startswith("robust-pt ")


# --- the front page's shape ----------------------------------------------------------------------


def test_readme_is_a_front_page():
    text = README.read_text()
    lines = text.splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines; move long material to docs/"
    quick = [i for i, ln in enumerate(lines, 1) if ln.strip() == "## Quick start"]
    assert quick and quick[0] <= 150, f"the Quick start should open within the first 150 lines, is at {quick}"
    first = blocks(text)[0]
    assert first[0] == "bash" and shell_lines(first[1]) == ["make demo", "make test"], first


def test_every_command_is_run_or_allowlisted():
    unknown = [c for c in readme_commands() if not runs_here(c) and c not in ALLOWED]
    assert not unknown, (
        "README.md shows commands that this file neither runs nor allowlists (add them to ALLOWED with "
        f"the test or CI step that covers them): {unknown}"
    )


def test_every_allowlisted_command_is_still_in_the_readme():
    shown = set(readme_commands())
    stale = [c for c in ALLOWED if c not in shown]
    assert not stale, f"ALLOWED names commands README.md no longer shows: {stale}"


def test_every_block_has_a_language_this_file_checks():
    langs = {lang for lang, _, _ in blocks(README.read_text())}
    assert langs <= {"bash", "python", "yaml"}, langs


def test_yaml_blocks_are_excerpts_of_the_ci_example():
    workflow = {ln.strip() for ln in CI_EXAMPLE.read_text().splitlines()}
    for lang, body, line in blocks(README.read_text()):
        if lang == "yaml":
            drift = [ln for ln in body.splitlines() if ln.strip() and ln.strip() not in workflow]
            assert not drift, f"README.md:{line}: not in {CI_EXAMPLE.relative_to(ROOT)}: {drift}"


# --- links ---------------------------------------------------------------------------------------

LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchors(md: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file (code blocks left out; repeats numbered)."""
    text = FENCE.sub("", md.read_text())
    seen: dict[str, int] = {}
    out = set()
    for m in re.finditer(r"^#{1,6}\s+(.+?)\s*$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


@pytest.mark.parametrize("md", [README, *sorted((ROOT / "docs").glob("*.md"))], ids=lambda p: p.name)
def test_relative_links_resolve(md):
    bad = []
    for target in LINK.findall(FENCE.sub("", md.read_text())):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        dest = (md.parent / path).resolve() if path else md
        if not dest.exists():
            bad.append(f"{target} (no {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest})")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{target} (no heading #{anchor} in {dest.name})")
    assert not bad, f"{md.relative_to(ROOT)}: broken links: {bad}"


# --- the README, run -----------------------------------------------------------------------------


@pytest.fixture
def readme_dir(tmp_path, monkeypatch):
    """A fresh working directory holding what the README takes from elsewhere, at the README's paths."""
    from robust_pt.tasks import load_task
    from robust_pt.testing.hf_tiny import save_tiny

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ROBUST_PT_NO_APT", "1")  # `robust-pt setup` must never call apt-get here
    # stands in for `huggingface-cli download dandelin/vilt-b32-finetuned-vqa --local-dir ckpts/vilt-vqa`
    answers = load_task("shapes-vqa", split="test", limit=1).answers
    save_tiny("vilt", tmp_path / "ckpts" / "vilt-vqa", answers=answers)
    return tmp_path


def test_the_readme_runs_as_written(readme_dir, monkeypatch):
    import torch

    from ._cli import invoke

    # the suite runs on one torch thread (conftest.py); `robust-pt train --threads 2` (its default) would raise
    # it for the rest of the session and oversubscribe the shared cores
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    for lang, body, line in blocks(README.read_text()):
        if lang == "bash":
            for command in shell_lines(body):
                if not runs_here(command):
                    continue  # allowlisted (test_every_command_is_run_or_allowlisted)
                t0 = time.perf_counter()
                res = invoke(*shlex.split(command)[1:])
                print(f"{time.perf_counter() - t0:6.1f} s  {command}")
                assert res.exit_code == 0, f"README.md:{line}: `{command}` exited {res.exit_code}\n{res.output}"
        elif lang == "python":
            _exec_python(body, line)
    for out in ("runs/pt-pgd/records.jsonl", "reports/paper/report.md", "reports/paper/summary.tex", "robust.xml"):
        assert (readme_dir / out).is_file(), out


def _exec_python(body: str, line: int) -> None:
    exec(compile(body, f"README.md:{line}", "exec"), {"__name__": "__readme__"})


def test_the_readme_keeps_its_examples_small():
    """Commands the suite runs stay cheap: every attack has a --limit, every training run a --steps."""
    for c in readme_commands():
        words = c.split()
        if c.startswith("robust-pt attack"):
            assert "--limit" in words and int(words[words.index("--limit") + 1]) <= 64, c
        if c.startswith("robust-pt train"):
            assert "--steps" in words and int(words[words.index("--steps") + 1]) <= 20, c
        slow = ("robust-pt run", "robust-pt demo", "robust-pt pretrain")
        assert not c.startswith(slow), f"too slow for the suite: {c}"


# --- the answer table against the committed reports ------------------------------------------------

#: the table's rows: label prefix -> (committed report, attack kinds from attacks/<name>.yaml, transferred?)
ANSWER_ROWS = {
    "image, on the model itself": ("ofa-pt-robustness", {"image"}, False),
    "embedding": ("ofa-pt-robustness", {"embedding"}, False),
    "text": ("ofa-pt-robustness", {"text", "joint"}, False),
    "transferred from the public base": ("transfer", None, True),
    "natural image corruptions": ("corruptions", {"corruption"}, False),
    "natural text corruptions": ("corruptions", {"text-corruption"}, False),
    "tiny LLaVA, PGD": ("tiny-llava", {"image"}, False),
    "tiny LLaVA, emb-fgsm": ("tiny-llava", {"embedding"}, False),
    # rows of models tuned one way, against finetuning tuned the same way (the report's training variant)
    "adversarially tuned (PGD-3": ("adversarial-tuning", {"image", "embedding"}, False, "adversarial 4/255"),
    "certified by randomized smoothing": ("certified", {"certify"}, False, "noise 0.5"),
    "adversarially tuned from the robust base": (
        "adversarial-tuning",
        {"image", "embedding"},
        False,
        "adversarial 4/255, robust base",
    ),
}
METHOD_COLUMNS = {"prompt tuning": "prompt", "APT": "apt", "Adapter": "adapter", "BitFit": "bitfit", "LoRA": "lora"}
CELL = re.compile(r"^(?:\*\*)?(less|no different)[¹²³]? (\d+)/(\d+)(?:, more² (\d+))?(?:\*\*)?$")


def _answer_table() -> tuple[list[str], list[list[str]]]:
    text = README.read_text()
    section = text.split("## The answer so far", 1)[1].split("\n## ", 1)[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("| ")]
    split = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in rows]
    return split[0], [r for r in split[1:] if not set(r[0]) <= set("-")]


def _kind(attack: str) -> str:
    import yaml

    name = attack.split("[", 1)[0].split(" from ", 1)[0]
    return yaml.safe_load((ROOT / "attacks" / f"{name}.yaml").read_text())["kind"]


def test_the_answer_table_matches_the_committed_reports():
    """Each cell's verdict and counts are those of the report's gaps.csv (adjusted decisions), so a regenerated
    report cannot leave the front page saying something else."""
    import csv

    header, rows = _answer_table()
    assert [METHOD_COLUMNS[h] for h in header[1:]] == list(METHOD_COLUMNS.values()), header
    labels = [next(k for k in ANSWER_ROWS if r[0].startswith(k)) for r in rows]
    assert sorted(labels) == sorted(ANSWER_ROWS), labels
    for row, label in zip(rows, labels):
        report, kinds, transferred, *variant = ANSWER_ROWS[label]
        assert f"(reports/{report}/report.md)" in row[0], row[0]
        gaps = list(csv.DictReader((ROOT / "reports" / report / "gaps.csv").open()))
        gaps = [g for g in gaps if g.get("variant", "") == (variant[0] if variant else "")]
        if transferred:
            gaps = [g for g in gaps if g["attack"].endswith(" from pretrain")]  # crafted on the public base only
        else:
            gaps = [g for g in gaps if " from " not in g["attack"] and _kind(g["attack"]) in kinds]
        for column, cell in zip(header[1:], row[1:]):
            mine = [g for g in gaps if g["method"] == METHOD_COLUMNS[column]]
            where = f"README answer table, {label} x {column}: {cell!r}"
            if cell == "–":
                assert not mine, f"{where}: the report has {len(mine)} cells"
                continue
            m = CELL.match(cell)
            assert m, f"{where}: not 'less|no different N/M[, more² K]'"
            less = sum(g["significant"] == "True" and float(g["gap"]) < 0 for g in mine)
            more = sum(g["significant"] == "True" and float(g["gap"]) > 0 for g in mine)
            verdict = "less" if less else "no different"
            got = (m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4) or 0))
            assert got == (verdict, less, len(mine), more), (
                f"{where}: the report says {(verdict, less, len(mine), more)}"
            )


def test_the_clip_sentence_is_what_the_committed_report_says():
    """The answer's CLIP numbers (APGD-DLR at 8/255, harmonic mean of base and novel classes) and its "one cell
    each" are base_novel.csv's and gaps.csv's, so a regenerated report cannot leave the front page behind."""
    import pandas as pd

    root = ROOT / "reports" / "clip-prompt-learning"
    text = " ".join(README.read_text().split())
    bn = pd.read_csv(root / "base_novel.csv")
    bn = bn[bn["attack"] == "apgd-ce"].assign(entry=lambda d: d["model"].str.replace("-shapes-objects-base", ""))
    hm = dict(zip(bn["entry"], 100 * bn["hm_robust"]))
    learners = ("coop", "vpt", "maple", "apt")
    plain = [hm[f"{m}{v}"] for m in learners for v in ("", "-adv")]
    robust = [hm[f"{m}{v}"] for m in learners for v in ("-rb", "-adv-rb")]
    assert f"keep {min(plain):.1f} to {max(plain):.1f}% from the plain base" in text
    assert f"TeCoA {hm['finetune-adv']:.1f}%" in text
    assert f"every one {min(robust):.1f} to {max(robust):.1f}% from the robust base" in text
    gaps = pd.read_csv(root / "gaps.csv").fillna({"variant": ""})
    own = ~gaps["attack"].str.contains(" from ") & ~gaps["attack"].isin(["gaussian-noise", "defocus-blur", "contrast"])
    more = gaps[own & (gaps["variant"] == "") & (gaps["significant"]) & (gaps["gap"] > 0)]
    assert "that CoOp, VPT and APT keep (one cell each)" in text
    assert [int((more["method"] == m).sum()) for m in ("coop", "vpt", "apt")] == [1, 1, 1]
    assert set(more.loc[more["method"].isin(["coop", "vpt", "apt"]), "task"]) == {"shapes-objects-novel"}
