"""Robustness-gap reports: tables, statistics, figures and sanity checks from run directories.

    import robust_pt as rpt
    rep = rpt.report(["runs/ft-pgd", "runs/pt-pgd"], out="reports/vqa")
    rep.summary    # one row per (task, model, attack, eps), with 95% CIs
    rep.gaps       # each tuning method against finetuning (or build(reference=...)): gap, CI, p, adjusted p, significant
                   # (runs with a training variant, e.g. adversarially tuned, against the reference of their variant;
                   # build(reference="clean"): each adversarially tuned run against its clean partner)
    rep.sanity     # gradient-masking checks: pass / fail / not checked, with the reason
    rep.findings   # one sentence per comparison

Files written to `out`: report.md, report.html (self-contained), summary.csv, gaps.csv,
summary.tex (booktabs), summary.json and figures/*.png. The pieces: load.py (reading
runs), stats.py (bootstrap, McNemar), tables.py, sanity.py, plots.py, document.py with
markdown.py / html.py / latex.py (writers) and check.py (baseline and CI gate).
"""

from __future__ import annotations

import inspect
import json
import sys
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..runformat import slug as _safe
from . import stats
from .load import REFERENCE, MixedRunsError, ReportError, RunData, load_runs

__all__ = ["build", "Report", "ReportError", "MixedRunsError", "SCHEMA_VERSION"]

#: Version of summary.json's layout (and of baselines made from it).
SCHEMA_VERSION = 1


@dataclass
class Report:
    runs: list[RunData]
    summary: Any  # pandas.DataFrame, tables.SUMMARY_COLUMNS
    gaps: Any  # pandas.DataFrame, tables.GAP_COLUMNS
    sanity: Any  # pandas.DataFrame: check, description, task, model, method, status, detail
    findings: list[str]
    warnings: list[str]
    notes: list[str]
    seed: int
    n_boot: int
    created: str
    version: str
    title: str | None = None
    out: Path | None = None
    figures: dict = field(default_factory=dict)  # (kind, key) -> path relative to out
    files: dict = field(default_factory=dict)  # name -> Path
    text_examples: int = 8
    correction: str = stats.DEFAULT_CORRECTION  # multiplicity correction of the gaps' p-values
    reference: str = REFERENCE  # the method every other method's gaps are against
    corruptions: Any = None  # pandas.DataFrame, corruption.COLUMNS: per corruption and mean over severities
    transfer: Any = None  # pandas.DataFrame, transfer.COLUMNS: the transfer matrix (None without transfer runs)
    certified: Any = None  # pandas.DataFrame, certified.COLUMNS: per certification run (randomized smoothing)
    base_novel: Any = None  # pandas.DataFrame, base_novel.COLUMNS: base / novel classes and their harmonic mean

    def to_dict(self) -> dict:
        from .document import as_plain

        return as_plain(
            {
                "schema_version": SCHEMA_VERSION,
                "kind": "robust-pt-report",
                "robust_pt_version": self.version,
                "created": self.created,
                "title": self.title,
                "bootstrap": {
                    "replicates": self.n_boot,
                    "seed": self.seed,
                    "level": stats.LEVEL,
                    "method": "paired percentile bootstrap",
                },
                "tests": self._tests(),
                "runs": [
                    {
                        "path": str(r.path),
                        "model": r.model,
                        "method": r.method,
                        **({"variant": r.variant} if self._has_variants() else {}),
                        "task": r.task,
                        "task_kind": r.task_kind,
                        "metric": r.metric,
                        "attack": r.attack,
                        "attack_base": r.attack_base,
                        "attack_spec": r.attack_spec,
                        "eps": r.eps,
                        "examples": int(r.records["id"].nunique()),
                        "records": len(r.records),
                        "bad_lines": r.bad_lines,
                        "unfinished_records": r.unfinished,
                        "status": r.status,
                    }
                    for r in self.runs
                ],
                "rows": self.summary.to_dict(orient="records"),
                "gaps": self.gaps.to_dict(orient="records"),
                "sanity": self.sanity.to_dict(orient="records"),
                "findings": self.findings,
                "warnings": self.warnings,
                "notes": self.notes,
                "figures": {f"{k[0]}:{k[1]}": v for k, v in self.figures.items()},
                **self._corruption_rows(),
                **({"transfer": self.transfer.to_dict(orient="records")} if self._has_transfer() else {}),
                **({"certified": self.certified.to_dict(orient="records")} if self._has_certified() else {}),
                **({"base_novel": self.base_novel.to_dict(orient="records")} if self._has_base_novel() else {}),
            }
        )

    def _has_variants(self) -> bool:
        """Some run has a training variant (load.RunData.variant); reports without any keep their layout."""
        return any(r.variant for r in self.runs)

    def _has_transfer(self) -> bool:
        return self.transfer is not None and len(self.transfer) > 0

    def _has_certified(self) -> bool:
        return self.certified is not None and len(self.certified) > 0

    def _has_base_novel(self) -> bool:
        return self.base_novel is not None and len(self.base_novel) > 0

    def _corruption_rows(self) -> dict:
        """summary.json's "corruptions" (only in reports with corruption runs: the others stay as they were)."""
        c = self.corruptions
        return {"corruptions": c.to_dict(orient="records")} if c is not None and len(c) else {}

    def _tests(self) -> dict:
        """summary.json's record of how the gaps were tested. The reference method is written only when
        it is not finetuning, so that reports made with the default stay byte for byte what they were
        (no "reference" key: the gaps are against finetuning)."""
        from .tables import reference_name

        tests = {
            "binary": "McNemar's exact test; interval: exact conditional (Clopper-Pearson)",
            "graded": "paired bootstrap test; interval: percentile",
            "alpha": stats.ALPHA,
            "correction": self.correction,
            "correction_name": stats.CORRECTION_NAMES[self.correction],
        }
        if self.reference != REFERENCE:
            tests.update(reference=self.reference, reference_name=reference_name(self.reference))
        return tests

    def __repr__(self) -> str:
        return f"Report(runs={len(self.runs)}, rows={len(self.summary)}, gaps={len(self.gaps)}, out={self.out})"


def _int(name: str, v, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ReportError(f"{name} must be an integer >= {lo}, got {v!r}")
    return v


def _reference(reference, data: list[RunData]) -> str:
    """The reference method, checked against the runs: a known method (aliases such as "pt" allowed)
    that has a run in the report, or "clean" (each adversarially tuned run against its clean partner) where
    some run was tuned adversarially. Why here and not in gap_rows: a misspelt or absent reference would
    otherwise give a report without a single gap; the error names the methods the runs have instead.
    The default (finetuning) keeps today's behaviour: without a finetuning run the report says so in
    its notes."""
    from .load import CLEAN, METHOD_NAMES, method_rank, normalise_method

    present = sorted({r.method for r in data}, key=lambda m: (method_rank(m), m))
    listing = ", ".join(present)
    if isinstance(reference, str) and reference.strip().lower() == CLEAN:
        if not any(r.adversarial for r in data):
            raise ReportError(
                "reference 'clean' compares adversarially tuned runs with their clean partners, but no run in the "
                "report declares adversarial tuning (model_meta.adversarial in run.json); pass a method instead: "
                f"{listing}"
            )
        return CLEAN
    ref = normalise_method(reference)
    if ref is None or ref not in METHOD_NAMES:
        raise ReportError(f"unknown reference method {reference!r}; the runs' methods are: {listing} (or clean)")
    if ref != REFERENCE and ref not in present:
        raise ReportError(f"no run of the reference method {ref!r} in the report; the runs' methods are: {listing}")
    return ref


def build(
    runs: str | Path | Iterable[str | Path],
    out: str | Path | None = None,
    *,
    allow_mixed: bool = False,
    seed: int = stats.DEFAULT_SEED,
    n_boot: int = stats.DEFAULT_B,
    title: str | None = None,
    figures: bool = True,
    gallery: int = 6,
    text_examples: int = 8,
    correction: str = stats.DEFAULT_CORRECTION,
    reference: str = REFERENCE,
) -> Report:
    """Build a report from run directories (or folders of them); write it to `out` if given.

    Raises RunDirError / ReportError (RobustPTError) on a missing or empty run directory, a
    run without valid records, or runs of different tasks without allow_mixed. Corrupt
    record lines are skipped and reported in `Report.warnings`. `correction` (bh, holm, none)
    adjusts the gaps' p-values across the report; the adjusted decisions are what it counts.
    `reference` (a tuning method, finetuning by default) is what every other method's runs are
    compared against (each run against the reference's runs of its own training variant), and what the
    text names; "clean" compares each adversarially tuned run with its clean partner (the same method tuned
    without adversarial training from the same base); an unknown one, or one without a run, is a ReportError.
    """
    from .. import __version__
    from . import sanity, tables

    if out is not None:
        check_out(Path(out), figures)  # before any run is read: a bad --out is one line, not a late traceback
    seed = _int("seed", seed, 0)
    n_boot = _int("n_boot", n_boot, 100)
    if correction not in stats.CORRECTIONS:
        raise ReportError(f"unknown correction {correction!r}; use one of {', '.join(stats.CORRECTIONS)}")
    if isinstance(runs, (str, Path)):
        runs = [runs]
    data = load_runs(list(runs), allow_mixed=allow_mixed)
    reference = _reference(reference, data)
    summary = tables.summary_frame(data, n_boot, seed)
    gap_rows, notes = tables.gap_rows(data, n_boot, seed, reference)
    gaps = tables.gap_frame(gap_rows, correction, any(r.variant for r in data))
    import pandas as pd

    san = pd.DataFrame(
        sanity.run_checks(data, n_boot, seed),
        columns=["check", "description", "task", "model", "method", "status", "detail"],
    )
    warnings = [w for r in data for w in r.warnings()]
    from .base_novel import base_novel_frame
    from .certified import certified_frame
    from .corruption import corruption_frame
    from .transfer import transfer_frame

    rep = Report(
        runs=data,
        summary=summary,
        gaps=gaps,
        sanity=san,
        findings=tables.findings(gaps, reference),
        warnings=warnings,
        notes=notes,
        seed=seed,
        n_boot=n_boot,
        created=time.strftime("%Y-%m-%d %H:%M:%S %z"),
        version=__version__,
        title=title,
        text_examples=text_examples,
        correction=correction,
        reference=reference,
        corruptions=corruption_frame(data, reference, n_boot, seed),
        transfer=transfer_frame(data, summary),
        certified=certified_frame(data, n_boot, seed),
        base_novel=base_novel_frame(data, summary),
    )
    if out is not None:
        write(rep, Path(out), figures=figures, gallery=gallery)
    return rep


REPORT_FILES = (
    "report.md",
    "report.html",
    "summary.csv",
    "gaps.csv",
    "summary.tex",
    "summary.json",
    "transfer.csv",
    "corruptions.csv",
    "certified.csv",
    "base_novel.csv",
)


def check_out(out: Path, figures: bool = True) -> None:
    """That the report can be written into `out` (robust_pt/outputs.py): the folder, figures/ and each
    file (an existing report's files are replaced only once the report is built); creates nothing."""
    from ..outputs import require_writable_dir, require_writable_file

    require_writable_dir(out, "report directory")
    if figures:
        require_writable_dir(out / "figures", "report figures directory")
    for name in REPORT_FILES:
        require_writable_file(out / name, "report file")


def write(rep: Report, out: Path, figures: bool = True, gallery: int = 6) -> dict:
    """Write every file of the report into `out` (created); returns {name: path}."""
    from . import document, factors, html, latex, markdown, plots
    from .transfer import MATRIX
    from .transfer import groups as transfer_groups

    check_out(out, figures)
    out.mkdir(parents=True, exist_ok=True)
    figdir = out / "figures"
    if figures:
        figdir.mkdir(exist_ok=True)
        for old in figdir.glob("*.png"):
            old.unlink()
        s = rep.summary
        axis = {r.attack: r.eps_axis for r in rep.runs}
        for task in dict.fromkeys(s["task"]):
            p = plots.metric_vs_eps(s, task, figdir / f"metric-vs-eps_{_safe(task)}.png", axis)
            rep.figures[("metric_vs_eps", task)] = str(p.relative_to(out))
        transferred = {r.attack for r in rep.runs if r.source}  # drawn as transfer heatmaps instead
        for attack in [a for a in dict.fromkeys(s["attack"]) if a not in transferred]:
            p = plots.degradation(s, attack, figdir / f"degradation_{_safe(attack)}.png")
            rep.figures[("degradation", attack)] = str(p.relative_to(out))
        fpanels = factors.panels(rep.runs)
        for task in dict.fromkeys(p.task for p in fpanels):
            p = plots.prompt_factors(s, task, fpanels, figdir / f"prompt-factors_{_safe(task)}.png")
            rep.figures[("prompt_factors", task)] = str(p.relative_to(out))
        if rep._has_transfer():
            for task, attack, _ in transfer_groups(rep.transfer):
                p = plots.transfer_heatmap(
                    rep.transfer, task, attack, figdir / f"transfer_{_safe(task)}_{_safe(attack)}.png"
                )
                rep.figures[(MATRIX, f"{task}: {attack}")] = str(p.relative_to(out))
        if rep._has_certified():
            d = s[s["attack"].isin(set(rep.certified["attack"]))]
            for task in dict.fromkeys(rep.certified["task"]):
                metric = d[d["task"] == task]["metric"].iloc[0]
                p = plots.metric_vs_eps(
                    d, task, figdir / f"certified_{_safe(task)}.png", axis, f"certified {metric} (%)"
                )
                rep.figures[("certified", task)] = str(p.relative_to(out))
        c = rep.corruptions
        if c is not None and len(c) and c["rce"].notna().any():
            p = plots.rce(c, figdir / "rce.png")
            rep.figures[("rce", "all")] = str(p.relative_to(out))
        if gallery:
            for r in rep.runs:
                items = plots.samples(r, gallery)
                if items:
                    p = plots.gallery(r, items, figdir / f"gallery_{_safe(r.name)}.png")
                    rep.figures[("gallery", r.name)] = str(p.relative_to(out))
    rep.out = out
    doc = document.build_document(rep)
    files = {
        "report.md": out / "report.md",
        "report.html": out / "report.html",
        "summary.csv": out / "summary.csv",
        "gaps.csv": out / "gaps.csv",
        "summary.tex": out / "summary.tex",
        "summary.json": out / "summary.json",
    }
    files["report.md"].write_text(markdown.render(doc))
    files["report.html"].write_text(html.render(doc, out))
    rep.summary.to_csv(files["summary.csv"], index=False)
    rep.gaps.to_csv(files["gaps.csv"], index=False)
    optional = (("transfer.csv", rep.transfer), ("corruptions.csv", rep.corruptions),
                ("certified.csv", rep.certified), ("base_novel.csv", rep.base_novel))  # fmt: skip
    for name, frame in optional:  # written only where the report has them
        if frame is not None and len(frame):
            files[name] = out / name
            frame.to_csv(files[name], index=False)
    files["summary.tex"].write_text(latex.render(rep))
    files["summary.json"].write_text(json.dumps(rep.to_dict(), indent=1))
    files.update({f"figures/{Path(v).name}": out / v for v in rep.figures.values()})
    rep.files = files
    return files


class _CallableModule(types.ModuleType):
    """`robust_pt.report(...)` is the public API function, but importing this subpackage sets the
    attribute `robust_pt.report` to the module (which shadows robust_pt's lazy __getattr__). So the
    module itself is callable: calling it is calling build()."""

    def __call__(self, *args, **kwargs) -> Report:
        return build(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
__signature__ = inspect.signature(build)  # what inspect.signature / help show for robust_pt.report(...)
