"""Render a report Document as Markdown (GitHub-flavoured: pipe tables, ~~struck~~ words)."""

from __future__ import annotations

from .document import Bullets, Document, Fold, Heading, Image, Para, Table, render_cell


def _esc(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


MARKS = {"strong": ("**", "**"), "del": ("~~", "~~"), "ins": ("**", "**"), "code": ("`", "`")}


def cell(c) -> str:
    return render_cell(c, _esc, MARKS)


def table(t: Table) -> str:
    lines = [
        "| " + " | ".join(_esc(h) for h in t.headers) + " |",
        "|" + "|".join("---" if i < 2 else "--:" if _numeric(t, i) else "---" for i in range(len(t.headers))) + "|",
    ]
    for row in t.rows:
        lines.append("| " + " | ".join(cell(c) for c in row) + " |")
    if t.caption:
        lines += ["", f"*{t.caption}*"]
    return "\n".join(lines)


def _numeric(t: Table, i: int) -> bool:
    vals = [r[i] for r in t.rows if i < len(r) and isinstance(r[i], str) and r[i]]
    return bool(vals) and all(v[:1].isdigit() or v[:1] in "+-" for v in vals)


def block(b) -> str:
    """One block as Markdown. Markdown cannot fold: a Fold is its summary as a bold line, then its blocks."""
    if isinstance(b, Heading):
        return "#" * b.level + " " + b.text
    if isinstance(b, Para):
        styled = {"warning": f"> **{b.text}**", "note": f"_{b.text}_", "verdict": f"**Verdict.** {b.text}"}
        return styled.get(b.style, b.text)
    if isinstance(b, Bullets):
        return "\n".join(f"- {i}" for i in b.items)
    if isinstance(b, Table):
        return table(b)
    if isinstance(b, Image):
        return f"![{b.alt}]({b.path})" + (f"\n\n*{b.caption}*" if b.caption else "")
    if isinstance(b, Fold):
        return "\n\n".join([f"**{b.summary}**"] + [block(x) for x in b.blocks])
    raise TypeError(f"not a report block: {type(b).__name__}")


def render(doc: Document) -> str:
    return "\n\n".join(block(b) for b in doc.blocks) + "\n"
