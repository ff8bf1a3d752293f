"""CLI commands of reports and the CI gate: `robust-pt report`, `baseline` and `check`.

Exit codes: 0 done (check: no regression), 1 check found regressions, 2 bad input (one
`error: ...` line that says what to do).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import RobustPTError
from .app import app, fail


def _warn(lines) -> None:
    for w in lines:
        typer.echo(f"warning: {w}", err=True)


@app.command("report")
def report_cmd(
    runs: List[Path] = typer.Argument(..., help="Run directories (or folders of them) made by `robust-pt attack`."),
    out: Path = typer.Option(..., "--out", help="Report folder (report.md, report.html, summary.*, figures/)."),
    allow_mixed: bool = typer.Option(False, "--allow-mixed", help="Allow runs of different tasks in one report."),
    seed: int = typer.Option(0, "--seed", help="Seed of the paired bootstrap."),
    n_boot: int = typer.Option(2000, "--bootstrap", help="Bootstrap replicates (>= 100)."),
    title: Optional[str] = typer.Option(None, "--title", help="Report title."),
    gallery: int = typer.Option(6, "--gallery", help="Adversarial sample images per run (0: none)."),
    strict: bool = typer.Option(False, "--strict", help="Exit 2 (after writing the report) when records are corrupt."),
    correction: str = typer.Option(
        "bh",
        "--correction",
        help="Multiplicity correction of the gaps' p-values across the report: bh (Benjamini-Hochberg), holm or none.",
    ),
    reference: str = typer.Option(
        "finetune",
        "--reference",
        help="Tuning method every other method is compared against (e.g. prompt, lora; it needs a run in the "
        "report), each run against the method's runs of its own training variant; or clean: each adversarially "
        "tuned run against its clean partner (the same method tuned without --adversarial from the same base).",
    ),
):
    """Tables, statistics, figures and sanity checks from run directories."""
    from ..report import build

    try:
        rep = build(  # checks --out before the runs are read
            runs,
            out,
            allow_mixed=allow_mixed,
            seed=seed,
            n_boot=n_boot,
            title=title,
            gallery=gallery,
            correction=correction,
            reference=reference,
        )
    except RobustPTError as err:
        fail(err)
    _warn(rep.warnings)
    for line in rep.findings:
        typer.echo(line)
    failed = rep.sanity[rep.sanity["status"] == "fail"]
    for _, r in failed.iterrows():
        typer.echo(f"sanity check failed: {r['task']} {r['model']}: {r['description']}: {r['detail']}")
    typer.echo(
        f"report: {out / 'report.md'} and {out / 'report.html'} ({len(rep.runs)} runs, "
        f"{len(rep.summary)} rows, {len(rep.gaps)} gaps)"
    )
    if strict and any(r.bad_lines for r in rep.runs):
        fail(
            RobustPTError(
                "corrupt record lines were skipped (see the warnings); fix or re-run those runs, or drop --strict"
            )
        )


@app.command("baseline")
def baseline_cmd(
    inputs: List[Path] = typer.Argument(..., help="Run directories, report folders or summary.json files."),
    out: Path = typer.Option(..., "--out", help="Baseline JSON to write, e.g. reports/baseline.json."),
    allow_mixed: bool = typer.Option(False, "--allow-mixed", help="Allow runs of different tasks."),
    correction: str = typer.Option(
        "bh",
        "--correction",
        help="Multiplicity correction deciding which gaps are significant (run "
        "directories only; a report keeps its own): bh, holm or none.",
    ),
):
    """Record robust metrics and gaps as the baseline that `robust-pt check` compares against."""
    from ..report.check import save_baseline

    try:
        # save_baseline checks --out before the runs are read
        base = save_baseline(inputs, out, allow_mixed=allow_mixed, correction=correction)
    except RobustPTError as err:
        fail(err)
    _warn(base["warnings"])
    typer.echo(f"baseline: {out} ({len(base['metrics'])} robust metrics, {len(base['gaps'])} gaps)")


@app.command("check")
def check_cmd(
    inputs: List[Path] = typer.Argument(..., help="Run directories, report folders or summary.json files."),
    baseline: Path = typer.Option(..., "--baseline", help="Baseline JSON made by `robust-pt baseline`."),
    tolerance: float = typer.Option(0.02, "--tolerance", help="Allowed drop of a robust metric (0.02 = 2 points)."),
    junit: Optional[Path] = typer.Option(None, "--junit", help="Write JUnit XML here."),
    allow_mixed: bool = typer.Option(False, "--allow-mixed", help="Allow runs of different tasks."),
    two_sided: bool = typer.Option(
        False,
        "--two-sided",
        help="Also fail when a robust metric rose by more than the tolerance (a fixed model whose attack got weaker).",
    ),
):
    """Exit 0 when no robust metric fell below the baseline and no significant gap changed sign, else 1."""
    from ..outputs import require_writable_file
    from ..report.check import check

    try:
        if junit is not None:
            require_writable_file(junit, "JUnit file", "--junit")  # before the runs are read
        res = check(inputs, baseline, tolerance=tolerance, junit=junit, allow_mixed=allow_mixed, two_sided=two_sided)
    except RobustPTError as err:
        fail(err)
    _warn(res.warnings)
    for line in res.regressions:
        typer.echo(f"REGRESSION {line}")
    for line in res.new:
        typer.echo(f"new (not in the baseline): {line}")
    n = len(res.cases)
    bad = sum(1 for c in res.cases if c.failures)
    if junit is not None:
        typer.echo(f"junit: {junit}")
    if res.passed:
        typer.echo(f"check passed: {n} case(s) within tolerance {tolerance:g} of {baseline}")
    else:
        typer.echo(f"check failed: {len(res.regressions)} regression(s) in {bad} of {n} case(s) against {baseline}")
    raise typer.Exit(res.exit_code)
