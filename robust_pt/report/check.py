"""The CI gate: a baseline of robust metrics and gaps, and a check of new runs against it.

    robust-pt baseline RUN_OR_REPORT... --out reports/baseline.json
    robust-pt check RUN_OR_REPORT... --baseline reports/baseline.json [--tolerance 0.02] [--junit out.xml]

Inputs are run directories (a report is computed in memory), report folders (their
summary.json) or summary.json files. The check passes when

* every robust metric of the baseline is measured again and is at least
  baseline - tolerance (tolerance in the metric's own units: 0.02 = 2 points of accuracy);
* every gap that was significant in the baseline (its test's p-value adjusted across the
  baseline's report, the report's `significant` column) keeps its sign: a significantly
  positive gap must stay > 0, a significantly negative one < 0. (Baselines made before
  robust-pt 0.3 carry no decision: there a gap whose 95% CI excluded 0 counts.)

With two_sided (`--two-sided`, CI's dogfood gate on a fixed model) a robust metric more
than tolerance *above* the baseline fails too (on an unchanged model: an attack got
weaker), and so does a clean metric that moved by more than tolerance either way (the
model or the data changed); re-make the baseline when that is intended.

Rows are matched on the attack's identity, not its name: the baseline records each attack's
settings, and the baseline's attacks and the runs' are labelled together by the report's one
labelling rule (load.attack_labels), so PGD-50 runs against a PGD-10 baseline are `pgd[steps=50]`
against `pgd[steps=10]`: the baseline's rows are missing (a failure that names both), never matched
to the other setting. A baseline made before the settings were recorded matches by its label
alone, and only where that is unambiguous: a bare name ("pgd", one setting of it in the baseline)
matches the runs' attack of that name when the runs have a single setting of it.

Rows that are new (not in the baseline) pass and are listed as new. The JUnit XML has one
test case per (task, model, attack, eps); gap regressions belong to the case of the
compared (non-finetuning) model.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable
from xml.etree import ElementTree as ET

from . import SCHEMA_VERSION, ReportError
from .load import RUN_JSON, attack_labels, attack_settings, eps_label

BASELINE_KIND = "robust-pt-baseline"
REPORT_KIND = "robust-pt-report"
DEFAULT_TOLERANCE = 0.02


class BaselineError(ReportError):
    """A missing, unreadable or incompatible baseline file."""


def _key(task, model, attack, eps) -> tuple:
    """A row's identity: task, model, attack label (attack_labels: its settings where they differ), eps."""
    return (str(task), str(model), str(attack), round(float(eps), 10))


def _unlabelled(label: str) -> str:
    """The base label of an attack label written without its base (summary.json made before robust-pt
    recorded it): "pgd[steps=10]" -> "pgd"."""
    return re.sub(r"\[[^\[\]]*\]$", "", str(label))


def _identify(items: list[dict], runs: list[dict]) -> None:
    """Give each row or gap of a report its attack's base label and settings (attack_base, attack_settings)
    from the report's runs (each with task, model, attack label, attack_spec)."""
    ident = {}
    for r in runs:
        spec = r.get("attack_spec")
        if isinstance(spec, dict):
            base = r.get("attack_base") or _unlabelled(r.get("attack", ""))
            ident[(str(r.get("task")), str(r.get("model")), str(r.get("attack")))] = (base, attack_settings(spec))
    for it in items:
        hit = ident.get((str(it.get("task")), str(it.get("model")), str(it.get("attack"))))
        if hit is not None:
            it.setdefault("attack_base", hit[0])
            it.setdefault("attack_settings", hit[1])


def _read_summary(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text())
    except OSError as err:
        raise ReportError(f"{path} is unreadable ({err.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ReportError(f"{path} is not valid JSON ({err}); rebuild it with `robust-pt report`") from None
    if not isinstance(obj, dict) or obj.get("kind") != REPORT_KIND:
        raise ReportError(f"{path} is not a robust-pt report summary.json; pass run directories or report folders")
    v = obj.get("schema_version")
    if v != SCHEMA_VERSION:
        raise ReportError(
            f"{path} has report schema version {v!r}, this robust-pt reads version {SCHEMA_VERSION}; "
            f"rebuild the report with `robust-pt report`"
        )
    return obj


def _baseline_significant(b: dict) -> bool:
    """The baseline's decision for one gap; a baseline without one: its 95% CI excluded 0."""
    if b.get("significant") is not None:
        return bool(b["significant"])
    lo, hi = b.get("gap_lo"), b.get("gap_hi")
    return lo is not None and hi is not None and (lo > 0 or hi < 0)


def _p(p) -> str:
    from .stats import format_p

    return format_p(float(p)) if p is not None else "p n/a"


def collect(
    inputs: Iterable[str | Path],
    allow_mixed: bool = False,
    n_boot: int | None = None,
    seed: int | None = None,
    correction: str | None = None,
) -> tuple[list[dict], list[dict], list[str], list[str]]:
    """(metric rows, gap rows, warnings, sources) from run directories, report folders or summary.json files."""
    from . import build, stats

    run_dirs: list[Path] = []
    rows: list[dict] = []
    gaps: list[dict] = []
    warnings: list[str] = []
    sources: list[str] = []
    inputs = [Path(p) for p in inputs]
    if not inputs:
        raise ReportError("nothing to check; pass run directories or report folders")
    for p in inputs:
        summary = None
        if p.is_file() and p.suffix == ".json":
            summary = p
        elif p.is_dir() and not (p / RUN_JSON).exists() and (p / "summary.json").exists():
            summary = p / "summary.json"
        if summary is not None:
            obj = _read_summary(summary)
            r_, g_ = obj.get("rows") or [], obj.get("gaps") or []
            _identify(r_ + g_, obj.get("runs") or [])
            rows += r_
            gaps += g_
            warnings += obj.get("warnings") or []
            sources.append(str(summary))
        else:
            run_dirs.append(p)
    if run_dirs:
        rep = build(
            run_dirs,
            None,
            allow_mixed=allow_mixed,
            n_boot=n_boot or stats.DEFAULT_B,
            seed=stats.DEFAULT_SEED if seed is None else seed,
            correction=correction or stats.DEFAULT_CORRECTION,
        )
        from .document import as_plain

        r_, g_ = as_plain(rep.summary.to_dict(orient="records")), as_plain(rep.gaps.to_dict(orient="records"))
        runs = [
            {
                "task": r.task,
                "model": r.model,
                "attack": r.attack,
                "attack_base": r.attack_base,
                "attack_spec": r.attack_spec,
            }
            for r in rep.runs
        ]
        _identify(r_ + g_, as_plain(runs))
        rows += r_
        gaps += g_
        warnings += rep.warnings
        sources += [str(r.path) for r in rep.runs]
    return rows, gaps, warnings, sources


def _variant_of(row: dict) -> dict:
    """{"variant": ...} for a row of a report whose runs have training variants (adversarially tuned, from a
    robust base), so that a baseline says how each model was trained; {} otherwise (baselines as they were)."""
    return {"variant": row["variant"]} if "variant" in row else {}


def make_baseline(inputs: Iterable[str | Path], allow_mixed: bool = False, correction: str | None = None) -> dict:
    rows, gaps, warnings, sources = collect(inputs, allow_mixed, correction=correction)
    from .. import __version__

    metrics = [
        {
            k: r.get(k)
            for k in (
                "task",
                "model",
                "method",
                "attack",
                "attack_base",
                "attack_settings",
                "eps",
                "eps_label",
                "metric",
                "n",
                "clean",
                "robust",
                "robust_lo",
                "robust_hi",
            )
        }
        | _variant_of(r)
        for r in rows
    ]
    gap_list = [
        {
            k: g.get(k)
            for k in (
                "task",
                "model",
                "method",
                "reference",
                "attack",
                "attack_base",
                "attack_settings",
                "eps",
                "eps_label",
                "metric",
                "n",
                "gap",
                "gap_lo",
                "gap_hi",
                "p",
                "p_adj",
                "significant",
            )
        }
        | _variant_of(g)
        for g in gaps
    ]
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": BASELINE_KIND,
        "robust_pt_version": __version__,
        "created": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "sources": sources,
        "warnings": warnings,
        "metrics": metrics,
        "gaps": gap_list,
    }


def save_baseline(
    inputs: Iterable[str | Path], out: str | Path, allow_mixed: bool = False, correction: str | None = None
) -> dict:
    from ..outputs import require_writable_file

    out = require_writable_file(out, "baseline file")  # before the runs are read
    base = make_baseline(inputs, allow_mixed, correction)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(base, indent=1) + "\n")
    return base


def load_baseline(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise BaselineError(f"baseline {p} does not exist; make one with `robust-pt baseline RUN... --out {p}`")
    try:
        obj = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BaselineError(f"baseline {p} is not valid JSON ({err}); re-create it with `robust-pt baseline`") from None
    if not isinstance(obj, dict) or obj.get("kind") != BASELINE_KIND:
        raise BaselineError(f"{p} is not a robust-pt baseline; make one with `robust-pt baseline RUN... --out {p}`")
    v = obj.get("schema_version")
    if v != SCHEMA_VERSION:
        raise BaselineError(
            f"baseline {p} has schema version {v!r}, but this robust-pt reads version "
            f"{SCHEMA_VERSION}; re-create it with `robust-pt baseline`"
        )
    if not isinstance(obj.get("metrics"), list) or not isinstance(obj.get("gaps"), list):
        raise BaselineError(f"baseline {p} lacks its metrics or gaps lists; re-create it with `robust-pt baseline`")
    return obj


@dataclass
class Case:
    task: str
    model: str
    attack: str
    eps: float
    eps_label: str
    failures: list[str] = field(default_factory=list)
    info: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.attack} eps={self.eps_label}"

    @property
    def classname(self) -> str:
        return f"robust-pt.{self.task}.{self.model}"


@dataclass
class CheckResult:
    passed: bool
    regressions: list[str]
    cases: list[Case]
    new: list[str]
    warnings: list[str]
    tolerance: float

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1


def _pts(x) -> str:
    return f"{100 * float(x):.1f}" if x is not None and math.isfinite(float(x)) else "n/a"


def _lab(r: dict) -> str:
    return r.get("eps_label") or eps_label(float(r["eps"]))


LEGACY = (
    "the baseline records no attack settings (made by an older robust-pt): its attacks are matched to the runs' "
    "by name, so a change of an attack's settings goes unseen; re-make it with `robust-pt baseline`"
)


class _Labels:
    """Attack labels of the baseline's entries and the runs' rows, made together (load.attack_labels), so
    that two settings of one attack get two labels whichever side each is on."""

    def __init__(self, baseline_items: list[dict], current_items: list[dict]):
        self.items: list[tuple[str, dict]] = []
        self.index: dict[tuple, int] = {}
        for it in baseline_items + current_items:
            if isinstance(it.get("attack_settings"), dict):
                self._add(it)
        self.labels = attack_labels(self.items)
        self.base_of = {lab: base for lab, (base, _) in zip(self.labels, self.items)}
        self.by_base: dict[str, set] = {}
        for it in current_items:
            lab = self.label(it)
            self.by_base.setdefault(self.base_of.get(lab, _unlabelled(lab)), set()).add(lab)
        self.legacy = False

    @staticmethod
    def _ident(it: dict) -> tuple:
        base = it.get("attack_base") or _unlabelled(it["attack"])
        return base, json.dumps(it["attack_settings"], sort_keys=True, default=str)

    def _add(self, it: dict) -> None:
        k = self._ident(it)
        if k not in self.index:
            self.index[k] = len(self.items)
            self.items.append((k[0], it["attack_settings"]))

    def label(self, it: dict) -> str:
        """A run's row: its label among the baseline's and the runs' attacks (rows without settings: their own)."""
        if isinstance(it.get("attack_settings"), dict):
            return self.labels[self.index[self._ident(it)]]
        return str(it["attack"])

    def baseline_label(self, b: dict) -> tuple[str, str | None]:
        """(label, why it cannot be matched or None) of a baseline entry; an entry without settings (an old
        baseline) takes the label of the runs' one setting of its attack, where that is unambiguous."""
        if isinstance(b.get("attack_settings"), dict):
            return self.label(b), None
        lab = str(b["attack"])
        self.legacy = True
        if _unlabelled(lab) != lab:
            return lab, (
                f"the baseline names {lab}, one of several settings of {_unlabelled(lab)}, without recording the "
                f"settings (an older robust-pt), so it cannot be matched to the runs; re-make the baseline with "
                f"`robust-pt baseline`"
            )
        cands = sorted(self.by_base.get(lab, ()))
        if len(cands) > 1:
            return lab, (
                f"the baseline has {lab} without its settings (an older robust-pt); the runs have "
                f"{', '.join(cands)}, so which one it was is unknown; re-make the baseline with `robust-pt baseline`"
            )
        return (cands[0] if cands else lab), None

    def others(self, cur_keys, task: str, model: str, label: str) -> list[str]:
        """The runs' other settings of the same attack for one task and model."""
        base = self.base_of.get(label, _unlabelled(label))
        return sorted(
            {
                k[2]
                for k in cur_keys
                if k[0] == task and k[1] == model and k[2] != label and self.base_of.get(k[2], k[2]) == base
            }
        )


def _metric_failure(b: dict, r: dict, where: str, tolerance: float, two_sided: bool) -> str | None:
    """Why the current row `r` fails its baseline row `b` (None: it passes)."""
    now, then, metric = r.get("robust"), b.get("robust"), b.get("metric", "metric")
    if now is None or then is None or not math.isfinite(float(now)):
        return f"{where}: robust {metric} is not available now"
    if float(now) < float(then) - tolerance - 1e-12:
        return f"{where}: robust {metric} {_pts(now)} < baseline {_pts(then)} - tolerance {_pts(tolerance)} (points)"
    clean_now, clean_then = r.get("clean"), b.get("clean")
    if two_sided and clean_now is not None and clean_then is not None:
        if abs(float(clean_now) - float(clean_then)) > tolerance + 1e-12:
            return (
                f"{where}: clean {metric} {_pts(clean_now)} differs from baseline {_pts(clean_then)} by more than "
                f"tolerance {_pts(tolerance)} (points): the model or the data changed; re-make the baseline with "
                f"`robust-pt baseline` if that is intended"
            )
    if two_sided and float(now) > float(then) + tolerance + 1e-12:
        return (
            f"{where}: robust {metric} {_pts(now)} > baseline {_pts(then)} + tolerance {_pts(tolerance)} (points): "
            f"the attack got weaker, or the model or data changed; re-make the baseline with `robust-pt baseline` "
            f"if that is intended"
        )
    return None


def _gap_failure(b: dict, g: dict | None, where: str) -> str | None:
    """Why the current gap `g` fails the baseline's significant gap `b` (None: it keeps its sign)."""
    gap, lo, hi = b["gap"], b.get("gap_lo"), b.get("gap_hi")
    if g is None or g.get("gap") is None:
        sign = "+" if gap > 0 else "-"
        return (
            f"{where}: gap vs finetuning ({b['reference']}) is not measured now "
            f"(baseline {sign}{_pts(abs(gap))} points, significant)"
        )
    if (g["gap"] > 0) != (gap > 0) or g["gap"] == 0:
        return (
            f"{where}: gap vs finetuning ({b['reference']}) lost its sign: baseline {float(gap) * 100:+.1f}, "
            f"now {float(g['gap']) * 100:+.1f} points (significant in the baseline: 95% CI {_pts(lo)} to "
            f"{_pts(hi)}, adjusted {_p(b.get('p_adj'))})"
        )
    return None


def _check_tolerance(tolerance) -> None:
    """A tolerance is a finite number >= 0 (in metric units), else one line."""
    if (
        not isinstance(tolerance, (int, float))
        or isinstance(tolerance, bool)
        or not math.isfinite(tolerance)
        or tolerance < 0
    ):
        raise ReportError(f"tolerance must be a number >= 0 (in metric units, 0.02 = 2 points), got {tolerance!r}")


def compare(
    rows: list[dict], gaps: list[dict], baseline: dict, tolerance: float = DEFAULT_TOLERANCE, two_sided: bool = False
) -> CheckResult:
    """Regressions of current rows/gaps against a baseline (see the module docstring)."""
    _check_tolerance(tolerance)
    names = _Labels(list(baseline["metrics"]) + list(baseline["gaps"]), list(rows) + list(gaps))
    cur = {_key(r["task"], r["model"], names.label(r), r["eps"]): r for r in rows}
    cases: dict[tuple, Case] = {}

    def case(task, model, attack, eps, label) -> Case:
        k = _key(task, model, attack, eps)
        if k not in cases:
            cases[k] = Case(str(task), str(model), str(attack), float(eps), label)
        return cases[k]

    def missing(b: dict, attack: str, where: str) -> str:
        others = names.others(cur, str(b["task"]), str(b["model"]), attack)
        if not others:
            return f"{where}: in the baseline but not measured now (run the same model, task and attack)"
        return (
            f"{where}: missing: baseline has {attack} at eps {_lab(b)} for model {b['model']}; the runs have "
            f"{' and '.join(others)} - re-make the baseline if the attack changed on purpose (`robust-pt baseline`)"
        )

    def entry(b: dict) -> tuple:
        """A baseline entry's (attack label, why it cannot be matched or None, key, case, where)."""
        attack, unmatched = names.baseline_label(b)
        k = _key(b["task"], b["model"], attack, b["eps"])
        where = f"{b['task']} {b['model']} {attack} eps={_lab(b)}"
        return attack, unmatched, k, case(b["task"], b["model"], attack, b["eps"], _lab(b)), where

    regressions: list[str] = []
    base_keys = set()
    for b in baseline["metrics"]:
        attack, unmatched, k, c, where = entry(b)
        base_keys.add(k)
        r = None if unmatched else cur.get(k)
        if unmatched:
            msg = f"{where}: {unmatched}"
        elif r is None:
            msg = missing(b, attack, where)
        else:
            msg = _metric_failure(b, r, where, tolerance, two_sided)
            if msg is None:
                c.info.append(f"robust {_pts(r.get('robust'))} (baseline {_pts(b.get('robust'))}, "
                              f"tolerance {_pts(tolerance)})")  # fmt: skip
                continue
        c.failures.append(msg)
        regressions.append(msg)
    cur_gaps = {(_key(g["task"], g["model"], names.label(g), g["eps"]), str(g["reference"])): g for g in gaps}
    for b in baseline["gaps"]:
        gap = b.get("gap")
        if gap is None or not _baseline_significant(b):
            continue  # the baseline could not tell the sign: nothing to keep
        _, unmatched, k, c, where = entry(b)
        g = None if unmatched else cur_gaps.get((k, str(b["reference"])))
        if unmatched:
            msg = f"{where}: gap vs finetuning ({b['reference']}): {unmatched}"
        else:
            msg = _gap_failure(b, g, where)
            if msg is None:
                c.info.append(
                    f"gap vs {b['reference']} {float(g['gap']) * 100:+.1f} keeps its sign "
                    f"(baseline {float(gap) * 100:+.1f})"
                )
                continue
        c.failures.append(msg)
        regressions.append(msg)
    new = []
    for k, r in cur.items():
        if k not in base_keys:
            c = case(r["task"], r["model"], k[2], r["eps"], _lab(r))
            c.info.append("new: not in the baseline")
            new.append(f"{r['task']} {r['model']} {k[2]} eps={_lab(r)}")
    ordered = sorted(cases.values(), key=lambda c: (c.task, c.model, c.attack, c.eps))
    return CheckResult(not regressions, regressions, ordered, new, [LEGACY] if names.legacy else [], float(tolerance))


def junit_xml(result: CheckResult, path: str | Path, baseline_path: str = "") -> Path:
    """JUnit XML: one testsuite, one testcase per (task, model, attack, eps)."""
    from ..outputs import require_writable_file

    p = require_writable_file(path, "JUnit file", "--junit")
    failures = sum(1 for c in result.cases if c.failures)
    suite = ET.Element(
        "testsuite",
        name="robust-pt check",
        tests=str(len(result.cases)),
        failures=str(failures),
        errors="0",
        skipped="0",
        timestamp=time.strftime("%Y-%m-%dT%H:%M:%S"),
    )
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="baseline", value=str(baseline_path))
    ET.SubElement(props, "property", name="tolerance", value=f"{result.tolerance:g}")
    for c in result.cases:
        tc = ET.SubElement(suite, "testcase", classname=c.classname, name=c.name, time="0")
        if c.failures:
            f = ET.SubElement(tc, "failure", message=c.failures[0], type="regression")
            f.text = "\n".join(c.failures)
        if c.info:
            ET.SubElement(tc, "system-out").text = "\n".join(c.info)
    root = ET.Element("testsuites", name="robust-pt", tests=str(len(result.cases)), failures=str(failures))
    root.append(suite)
    p.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(p, encoding="utf-8", xml_declaration=True)
    return p


def check(
    inputs: Iterable[str | Path],
    baseline: str | Path,
    tolerance: float = DEFAULT_TOLERANCE,
    junit: str | Path | None = None,
    allow_mixed: bool = False,
    two_sided: bool = False,
) -> CheckResult:
    """Check runs or reports against a baseline file; writes JUnit XML if asked."""
    base = load_baseline(baseline)
    rows, gaps, warnings, _ = collect(inputs, allow_mixed)
    res = compare(rows, gaps, base, tolerance, two_sided=two_sided)
    res.warnings = warnings + res.warnings
    if junit is not None:
        junit_xml(res, junit, str(baseline))
    return res
