"""Render a report Document as Markdown (GitHub-flavoured: pipe tables, ~~struck~~ words)."""

from __future__ import annotations

from .document import Bullets, Document, Heading, Image, Para, Table, render_cell


def _esc(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


MARKS = {"del": ("~~", "~~"), "ins": ("**", "**"), "code": ("`", "`")}


def cell(c) -> str:
    return render_cell(c, _esc, MARKS)


def table(t: Table) -> str:
    lines = ["| " + " | ".join(_esc(h) for h in t.headers) + " |",
             "|" + "|".join("---" if i < 2 else "--:" if _numeric(t, i) else "---" for i in range(len(t.headers)))
             + "|"]
    for row in t.rows:
        lines.append("| " + " | ".join(cell(c) for c in row) + " |")
    if t.caption:
        lines += ["", f"*{t.caption}*"]
    return "\n".join(lines)


def _numeric(t: Table, i: int) -> bool:
    vals = [r[i] for r in t.rows if i < len(r) and isinstance(r[i], str) and r[i]]
    return bool(vals) and all(v[:1].isdigit() or v[:1] in "+-" for v in vals)


def render(doc: Document) -> str:
    parts = []
    for b in doc.blocks:
        if isinstance(b, Heading):
            parts.append("#" * b.level + " " + b.text)
        elif isinstance(b, Para):
            parts.append(f"> **{b.text}**" if b.style == "warning" else f"_{b.text}_" if b.style == "note" else b.text)
        elif isinstance(b, Bullets):
            parts.append("\n".join(f"- {i}" for i in b.items))
        elif isinstance(b, Table):
            parts.append(table(b))
        elif isinstance(b, Image):
            parts.append(f"![{b.alt}]({b.path})" + (f"\n\n*{b.caption}*" if b.caption else ""))
    return "\n\n".join(parts) + "\n"
