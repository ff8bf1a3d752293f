"""summary.tex: booktabs tables (one per task and attack, plus the gaps), ready for \\input.

Needs \\usepackage{booktabs} in the preamble.
"""

from __future__ import annotations

from .document import Table, cell_text, gap_table, wide_table

_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def esc(s: str) -> str:
    return "".join(_SPECIAL.get(ch, ch) for ch in str(s))


def tabular(t: Table, label: str) -> str:
    cols = "ll" + "r" * (len(t.headers) - 2)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\begin{{tabular}}{{{cols}}}",
        r"\toprule",
        " & ".join(esc(h) for h in t.headers) + r" \\",
        r"\midrule",
    ]
    for row in t.rows:
        lines.append(" & ".join(esc(cell_text(c)) for c in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if t.caption:
        lines.append(rf"\caption{{{esc(t.caption)}}}")
    lines += [rf"\label{{{label}}}", r"\end{table}"]
    return "\n".join(lines)


def _lab(*parts: str) -> str:
    return "tab:robust-pt:" + "-".join("".join(c if c.isalnum() else "-" for c in p) for p in parts)


def render(report) -> str:
    s, g = report.summary, report.gaps
    out = ["% robust-pt report tables; needs \\usepackage{booktabs}", ""]
    for task in dict.fromkeys(s["task"]):
        for attack in dict.fromkeys(s[s["task"] == task]["attack"]):
            out += [tabular(wide_table(s, task, attack), _lab(task, attack)), ""]
        if len(g) and (g["task"] == task).any():
            out += [tabular(gap_table(g, task, report.reference), _lab(task, "gaps")), ""]
    return "\n".join(out)
