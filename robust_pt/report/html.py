"""Render a report Document as one self-contained HTML page.

Figures are embedded as base64 PNG data URIs; there is no external URL, and a
Content-Security-Policy forbids loading anything that is not inline (so a broken
reference fails visibly instead of reaching the network). A small inline script marks the
page when it has loaded: on <body>, data-images (how many <img>), data-broken-images
(the alt text of every image with naturalWidth 0 or no rendered size, "|"-separated; an
image in a closed Fold has no size to check, only its decoding), data-image-sizes,
data-failed (resources that failed to load or were blocked) and data-loaded="1". Tests
read these from Chromium's --dump-dom.

Tables sit in their own horizontally scrolling box (a wide one never stretches the page); in a
wide table (more than WIDE columns, e.g. an eps sweep's robust and drop columns) a number's
interval or relative value goes on a second line of its cell ("85.2" over "[80.1, 89.9]"), so
that a sweep of five eps fits the page instead of hiding behind the scroll bar. Numeric columns
are right-aligned, and a click on a header sorts the table (a second inline
script; it sets data-sortable, the number of sortable tables, on <body>). A Fold block is
a closed <details> element.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from .document import Bullets, Document, Fold, Heading, Image, Para, Table, cell_text, render_cell
from .sanity import FAIL, NOT_CHECKED, PASS

CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
    "font-src data:; connect-src 'none'; base-uri 'none'; form-action 'none'"
)

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:2rem auto;
max-width:1280px;padding:0 1rem;color:#222;line-height:1.45}
h1{font-size:1.6rem;border-bottom:2px solid #ddd;padding-bottom:.3rem}h2{font-size:1.3rem;margin-top:2rem;
border-bottom:1px solid #eee}h3{font-size:1.05rem}
.table-wrap{overflow-x:auto;width:fit-content;max-width:100%;margin:.6rem 0}
table{border-collapse:collapse;font-size:.85rem}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f0f2f5;vertical-align:bottom;min-width:4.5em;max-width:14em;font-weight:600;cursor:pointer;
user-select:none}th:hover{background:#e4e8ee}
td{white-space:nowrap}td.wrap{white-space:normal;min-width:16em;max-width:32em}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}td .sub{font-size:.9em;color:#555}
.wide table{font-size:.78rem}.wide th{min-width:3em}.wide td,.wide th{padding:.2rem .35rem}
td:first-child,th:first-child{position:sticky;left:0;z-index:1}td:first-child{background:#fff}
th[aria-sort=ascending]::after{content:" \\25B2";font-size:.7em}th[aria-sort=descending]::after{content:" \\25BC";
font-size:.7em}
tbody tr:nth-child(even) td{background:#fafafa}caption{caption-side:bottom;text-align:left;font-size:.8rem;
color:#555;padding:.3rem .5rem;white-space:normal}
details.fold{border:1px solid #ddd;border-radius:4px;padding:.2rem .8rem;margin:.8rem 0;background:#fcfcfc}
details.fold>summary{cursor:pointer;font-weight:600;padding:.3rem 0}details.fold[open]>summary{margin-bottom:.4rem}
.warning{background:#fff4e5;border-left:4px solid #f0a020;padding:.5rem .8rem}.note{color:#555;font-size:.9rem}
.verdict{font-size:1.08rem;background:#eef4fb;border-left:4px solid #2c6fbb;padding:.6rem .9rem;max-width:75rem}
.pass{color:#137333;font-weight:600}.fail{color:#b3261e;font-weight:700}.nc{color:#777}
figure{margin:1rem 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85rem;color:#555}del{color:#b3261e}ins{color:#137333;font-weight:600;text-decoration:none}
"""

# registered in <head>, before any image, so that load errors of every resource are seen
HEAD_SCRIPT = """
window.__failed=[];
window.addEventListener('error',function(e){var t=e.target;if(t&&t!==window&&t.tagName){
 window.__failed.push(t.tagName+':'+(t.getAttribute('alt')||t.getAttribute('src')||'').slice(0,80));}},true);
document.addEventListener('securitypolicyviolation',function(e){window.__failed.push('csp:'+e.blockedURI);});
window.addEventListener('load',function(){
 var imgs=document.images,bad=[],sizes=[];
 for(var i=0;i<imgs.length;i++){var im=imgs[i],r=im.getBoundingClientRect(),folded=!!im.closest('details:not([open])');
  sizes.push(im.naturalWidth+'x'+im.naturalHeight+'/'+(folded?'folded':Math.round(r.width)+'x'+Math.round(r.height)));
  if(!im.complete||im.naturalWidth===0||im.naturalHeight===0||(!folded&&(r.width===0||r.height===0))){
   bad.push(im.alt||('img'+i));}}
 var b=document.body;b.setAttribute('data-images',String(imgs.length));
 b.setAttribute('data-broken-images',bad.join('|'));b.setAttribute('data-image-sizes',sizes.join(' '));
 b.setAttribute('data-failed',window.__failed.join('|'));b.setAttribute('data-loaded','1');});
"""


# Click a header to sort its table (again: the other way); numbers (the leading one of "85.2 [80.1, 89.9]")
# compare as numbers, the rest as text, and text after numbers either way (so "n/a" stays last); ties keep
# the table's own order.
SORT_SCRIPT = """
document.addEventListener('DOMContentLoaded',function(){
 function key(td){var t=(td?td.textContent:'').trim(),m=t.match(/^[+-]?\\d+(?:\\.\\d+)?/);
  return m?[0,parseFloat(m[0])]:[1,t];}
 function cmp(a,b){return a[0]===0?a[1]-b[1]:a[1].localeCompare(b[1]);}
 document.querySelectorAll('table.sortable').forEach(function(tb){
  var ths=tb.querySelectorAll('thead th'),body=tb.tBodies[0];
  Array.prototype.forEach.call(body.rows,function(r,i){r.setAttribute('data-i',i);});
  ths.forEach(function(th,c){th.title='Click to sort';th.addEventListener('click',function(){
   var dir=th.getAttribute('aria-sort')==='ascending'?-1:1;
   ths.forEach(function(h){h.removeAttribute('aria-sort');});
   th.setAttribute('aria-sort',dir>0?'ascending':'descending');
   var rows=Array.prototype.slice.call(body.rows);
   rows.sort(function(a,b){var x=key(a.cells[c]),y=key(b.cells[c]);if(x[0]!==y[0])return x[0]-y[0];
    return dir*cmp(x,y)||(a.getAttribute('data-i')-b.getAttribute('data-i'));});
   rows.forEach(function(r){body.appendChild(r);});});});});
 document.body.setAttribute('data-sortable',String(document.querySelectorAll('table.sortable').length));});
"""


def _e(s) -> str:
    return html.escape(str(s), quote=True)


MARKS = {
    "strong": ("<strong>", "</strong>"),
    "del": ("<del>", "</del>"),
    "ins": ("<ins>", "</ins>"),
    "code": ("<code>", "</code>"),
}


def cell(c) -> str:
    return render_cell(c, _e, MARKS)


NUMBER = re.compile(r"^(?:[+-]?\d|n/a$)")
WIDE = 8  # a table with more columns than this stacks each number over its interval (see the module docstring)
STACK = re.compile(r"^([+-]?\d[^\s\[(]*) ([\[(].*[\])])$")  # "85.2 [80.1, 89.9]", "37.6 (5.8%)"
WRAP = 40  # a cell longer than this (a sentence) may wrap; shorter ones (names, numbers) stay on one line


def numeric_columns(t: Table) -> set[int]:
    """Columns whose every non-empty cell starts with a number ("85.2 [80.1, 89.9]", "+3.1", "12") or is "n/a",
    some of them a real number: right-aligned, so that digits line up."""
    out = set()
    for i in range(len(t.headers)):
        vals = [cell_text(r[i]).strip() for r in t.rows if i < len(r) and cell_text(r[i]).strip()]
        if vals and all(NUMBER.match(v) for v in vals) and any(v != "n/a" for v in vals):
            out.add(i)
    return out


def _header(h: str) -> str:
    """A header may wrap, but not inside a bracket: "[95% CI]" and "(rel.)" stay whole."""
    return re.sub(r"\[[^\]]*\]|\([^)]*\)", lambda m: m.group(0).replace(" ", "&nbsp;"), _e(h))


def table(t: Table) -> str:
    """A sortable table inside its own horizontally scrolling box, so that a wide one never stretches the page."""
    nums = numeric_columns(t)
    stack = len(t.headers) > WIDE
    num = lambda i: ' class="num"' if i in nums else ""  # noqa: E731
    head = (
        "<thead><tr>"
        + "".join(f'<th scope="col"{num(i)}>{_header(h)}</th>' for i, h in enumerate(t.headers))
        + "</tr></thead>"
    )
    rows = []
    for r in t.rows:
        tds = []
        for i, c in enumerate(r):
            cls = "num" if i in nums else "wrap" if len(cell_text(c)) > WRAP else ""
            if t.status_col == i:
                cls = {PASS: "pass", FAIL: "fail", NOT_CHECKED: "nc"}.get(str(c), cls)
            inner = cell(c)
            m = STACK.match(cell_text(c)) if stack and i in nums and isinstance(c, str) else None
            if m:
                inner = f'{_e(m.group(1))}<br><span class="sub">{_e(m.group(2))}</span>'
            tds.append(f'<td class="{cls}">{inner}</td>' if cls else f"<td>{inner}</td>")
        rows.append("<tr>" + "".join(tds) + "</tr>")
    cap = f"<caption>{_e(t.caption)}</caption>" if t.caption else ""
    wide = " wide" if stack else ""
    return (
        f'<div class="table-wrap{wide}"><table class="sortable">{cap}{head}<tbody>{"".join(rows)}</tbody></table></div>'
    )


def image(b: Image, root: Path) -> str:
    data = base64.b64encode((root / b.path).read_bytes()).decode("ascii")
    cap = f"<figcaption>{_e(b.caption)}</figcaption>" if b.caption else ""
    return f'<figure><img alt="{_e(b.alt)}" src="data:image/png;base64,{data}">{cap}</figure>'


def block(b, root: Path) -> str:
    """One block as HTML; a Fold becomes <details> (closed) holding its blocks."""
    if isinstance(b, Heading):
        return f"<h{b.level}>{_e(b.text)}</h{b.level}>"
    if isinstance(b, Para):
        cls = f' class="{b.style}"' if b.style else ""
        return f"<p{cls}>{_e(b.text)}</p>"
    if isinstance(b, Bullets):
        return "<ul>" + "".join(f"<li>{_e(i)}</li>" for i in b.items) + "</ul>"
    if isinstance(b, Table):
        return table(b)
    if isinstance(b, Image):
        return image(b, root)
    if isinstance(b, Fold):
        inner = "\n".join(block(x, root) for x in b.blocks)
        return f'<details class="fold"><summary>{_e(b.summary)}</summary>\n{inner}\n</details>'
    raise TypeError(f"not a report block: {type(b).__name__}")


def render(doc: Document, root: Path) -> str:
    """The page; image paths in `doc` are relative to `root` (the report folder)."""
    body = [block(b, root) for b in doc.blocks]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(CSP)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(doc.title)}</title><style>{CSS}</style><script>{HEAD_SCRIPT}{SORT_SCRIPT}</script></head>\n"
        f"<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
