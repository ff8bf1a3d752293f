"""Render a report Document as one self-contained HTML page.

Figures are embedded as base64 PNG data URIs; there is no external URL, and a
Content-Security-Policy forbids loading anything that is not inline (so a broken
reference fails visibly instead of reaching the network). A small inline script marks the
page when it has loaded: on <body>, data-images (how many <img>), data-broken-images
(the alt text of every image with naturalWidth 0 or no rendered size, "|"-separated),
data-failed (resources that failed to load or were blocked) and data-loaded="1". Tests
read these from Chromium's --dump-dom.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from .document import Bullets, Document, Heading, Image, Para, Table, render_cell
from .sanity import FAIL, NOT_CHECKED, PASS

CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
       "font-src data:; connect-src 'none'; base-uri 'none'; form-action 'none'")

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:2rem auto;
max-width:1200px;padding:0 1rem;color:#222;line-height:1.45}
h1{font-size:1.6rem;border-bottom:2px solid #ddd;padding-bottom:.3rem}h2{font-size:1.3rem;margin-top:2rem;
border-bottom:1px solid #eee}h3{font-size:1.05rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.85rem;display:block;overflow-x:auto}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top}th{background:#f5f5f5}
tr:nth-child(even) td{background:#fafafa}caption{caption-side:bottom;text-align:left;font-size:.8rem;color:#555;
padding-top:.3rem}
.warning{background:#fff4e5;border-left:4px solid #f0a020;padding:.5rem .8rem}.note{color:#555;font-size:.9rem}
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
 for(var i=0;i<imgs.length;i++){var im=imgs[i],r=im.getBoundingClientRect();
  sizes.push(im.naturalWidth+'x'+im.naturalHeight+'/'+Math.round(r.width)+'x'+Math.round(r.height));
  if(!im.complete||im.naturalWidth===0||im.naturalHeight===0||r.width===0||r.height===0){bad.push(im.alt||('img'+i));}}
 var b=document.body;b.setAttribute('data-images',String(imgs.length));
 b.setAttribute('data-broken-images',bad.join('|'));b.setAttribute('data-image-sizes',sizes.join(' '));
 b.setAttribute('data-failed',window.__failed.join('|'));b.setAttribute('data-loaded','1');});
"""


def _e(s) -> str:
    return html.escape(str(s), quote=True)


MARKS = {"del": ("<del>", "</del>"), "ins": ("<ins>", "</ins>"), "code": ("<code>", "</code>")}


def cell(c) -> str:
    return render_cell(c, _e, MARKS)


def table(t: Table) -> str:
    rows = ["<tr>" + "".join(f"<th>{_e(h)}</th>" for h in t.headers) + "</tr>"]
    for r in t.rows:
        tds = []
        for i, c in enumerate(r):
            cls = ""
            if t.status_col == i:
                cls = {PASS: "pass", FAIL: "fail", NOT_CHECKED: "nc"}.get(str(c), "")
            tds.append(f'<td class="{cls}">{cell(c)}</td>' if cls else f"<td>{cell(c)}</td>")
        rows.append("<tr>" + "".join(tds) + "</tr>")
    cap = f"<caption>{_e(t.caption)}</caption>" if t.caption else ""
    return f"<table>{cap}{''.join(rows)}</table>"


def image(b: Image, root: Path) -> str:
    data = base64.b64encode((root / b.path).read_bytes()).decode("ascii")
    cap = f"<figcaption>{_e(b.caption)}</figcaption>" if b.caption else ""
    return f'<figure><img alt="{_e(b.alt)}" src="data:image/png;base64,{data}">{cap}</figure>'


def render(doc: Document, root: Path) -> str:
    """The page; image paths in `doc` are relative to `root` (the report folder)."""
    body = []
    for b in doc.blocks:
        if isinstance(b, Heading):
            body.append(f"<h{b.level}>{_e(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            cls = f' class="{b.style}"' if b.style else ""
            body.append(f"<p{cls}>{_e(b.text)}</p>")
        elif isinstance(b, Bullets):
            body.append("<ul>" + "".join(f"<li>{_e(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            body.append(table(b))
        elif isinstance(b, Image):
            body.append(image(b, root))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{_e(CSP)}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(doc.title)}</title><style>{CSS}</style><script>{HEAD_SCRIPT}</script></head>\n"
            f"<body>\n" + "\n".join(body) + "\n</body></html>\n")
