"""report.html in headless Chromium: self-contained, loads with no failed request, every figure shows."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from robust_pt.report import build

from .helpers import PT, PT_CLEAN, golden_runs, write_run

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; .ci/run installs it)"
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def chromium(page: Path, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    prof = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={prof}", *extra, page.resolve().as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, env={**os.environ, "HOME": str(tmp)})


def body_attrs(dom: str) -> dict:
    m = re.search(r"<body([^>]*)>", dom)
    assert m, dom[:500]
    return dict(re.findall(r'([\w-]+)="([^"]*)"', m.group(1)))


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("html")
    ft, pt = golden_runs(root, samples=2)
    words = lambda i, e: f"what color is the circle number {i}"  # noqa: E731
    adv = lambda i, e: f"what colour is the circles number {i}" if not PT[e][i] else None  # noqa: E731
    txt = write_run(
        root / "pt-text",
        "prompt-shapes-vqa",
        PT,
        PT_CLEAN,
        attack="textfooler",
        spec={"kind": "text", "method": "textfooler", "norm": "words", "eps_unit": "words"},
        extra={"text": words, "adv_text": adv, "words_changed": 2},
    )
    rep = build([ft, pt, txt], root / "report", n_boot=200)
    return rep.out


def test_html_is_self_contained(report_dir):
    html = (report_dir / "report.html").read_text()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html, re.I)
    assert "url(" not in html and "@import" not in html
    imgs = re.findall(r'<img [^>]*src="([^"]{0,40})', html)
    assert len(imgs) >= 4 and all(s.startswith("data:image/png;base64,") for s in imgs)
    assert "Content-Security-Policy" in html
    assert "<del>colour</del>" not in html and "<ins>colour</ins>" in html and "<del>color</del>" in html


def test_html_renders_in_chromium(report_dir, tmp_path):
    page = report_dir / "report.html"
    res = chromium(page, tmp_path, "--virtual-time-budget=5000", "--dump-dom")
    assert res.returncode == 0, res.stderr[-2000:]
    attrs = body_attrs(res.stdout)
    assert attrs.get("data-loaded") == "1", attrs
    n = page.read_text().count("<img ")
    assert int(attrs["data-images"]) == n >= 4
    assert attrs["data-broken-images"] == "", attrs  # every image decoded (naturalWidth > 0) and has a size
    assert attrs["data-failed"] == "", attrs  # no failed or blocked request
    for size in attrs["data-image-sizes"].split():
        natural, shown = size.split("/")
        shown = "1x1" if shown == "folded" else shown  # in a closed Fold: nothing shown to measure
        assert all(int(v) > 0 for v in natural.split("x") + shown.split("x")), size
    shot = tmp_path / "shot.png"
    res = chromium(page, tmp_path, "--window-size=1280,2000", f"--screenshot={shot}")
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_the_page_check_catches_a_broken_image(report_dir, tmp_path):
    """The in-page check itself works: a corrupt figure is reported."""
    html = (report_dir / "report.html").read_text()
    bad = tmp_path / "bad.html"
    bad.write_text(html.replace("<figure>", '<figure><img alt="corrupt" src="data:image/png;base64,AAAA">', 1))
    res = chromium(bad, tmp_path, "--virtual-time-budget=5000", "--dump-dom")
    attrs = body_attrs(res.stdout)
    assert attrs.get("data-loaded") == "1" and "corrupt" in attrs["data-broken-images"]


# ----------------------------------------------------------------------------- Fold blocks, tables


def fold_document(report_dir: Path):
    """A page with a Fold (holding a table and a figure), a sortable numeric table and a very wide table."""
    from robust_pt.report.document import Bullets, Document, Fold, Heading, Image, Para, Table

    fig = sorted((report_dir / "figures").glob("degradation_*.png"))[0].relative_to(report_dir)
    folded = Table(["Model", "gap"], [["folded-model", "+1.0 [-2.0, 4.0]"]], caption="not significant")
    scores = Table(
        ["Model", "Robust [95% CI]", "Note"],
        [
            ["m-ten", "10.0 [8.0, 12.0]", "b"],
            ["m-nine", "9.0 [7.0, 11.0]", "c"],
            ["m-hundred", "100.0 [99.0, 100.0]", "a"],
            ["m-none", "n/a", "d"],
        ],
    )
    wide = Table(
        ["Model"] + [f"eps={k}/255 robust [95% CI]" for k in range(1, 25)],
        [["wide-model"] + [f"{50 + k}.0 [{40 + k}.0, {60 + k}.0]" for k in range(1, 25)]],
    )
    return Document(
        "fold test",
        [
            Heading(1, "fold test"),
            Para("before"),
            scores,
            Fold(
                "3 comparisons whose 95% CI includes 0",
                [
                    Heading(3, "inside"),
                    folded,
                    Bullets(["a <b>"]),
                    Image(str(fig), "folded figure", "a figure in a fold"),
                ],
            ),
            wide,
            Para("after"),
        ],
    )


def test_fold_renders_as_details_in_html_and_as_a_bold_line_in_markdown(report_dir):
    from robust_pt.report import html as H
    from robust_pt.report import markdown as M

    doc = fold_document(report_dir)
    page = H.render(doc, report_dir)
    m = re.search(
        r'<details class="fold"><summary>3 comparisons whose 95% CI includes 0</summary>(.*?)</details>', page, re.S
    )
    assert m, page[:2000]
    inner = m.group(1)
    assert "<h3>inside</h3>" in inner and "folded-model" in inner and "a &lt;b&gt;" in inner
    assert 'alt="folded figure"' in inner
    assert "folded-model" not in page.replace(inner, "")  # the folded blocks only inside the fold
    assert " open" not in page[m.start() : m.start() + 40]  # folded by default
    md = M.render(doc)
    assert "\n\n**3 comparisons whose 95% CI includes 0**\n\n### inside\n\n| Model | gap |" in md
    # numbers right-aligned, text left; every table in its own scrolling box
    assert '<th scope="col" class="num">Robust&nbsp;[95%&nbsp;CI]</th>' not in page  # only brackets keep spaces
    assert '<th scope="col" class="num">Robust [95%&nbsp;CI]</th>' in page
    assert '<td class="num">10.0 [8.0, 12.0]</td>' in page and "<td>b</td>" in page
    assert page.count('<div class="table-wrap"><table class="sortable">') == 2
    # a wide table (an eps sweep) stacks each number over its interval, so that it fits the page
    assert page.count('<div class="table-wrap wide"><table class="sortable">') == 1
    assert '<td class="num">51.0<br><span class="sub">[41.0, 61.0]</span></td>' in page


# clicks the numeric header once (ascending) and the text header twice (descending), then records what it sees
PROBE = """<script>window.addEventListener('load',function(){
 var b=document.body,t=document.querySelectorAll('table.sortable')[0],th=t.querySelectorAll('thead th');
 function col(k){return Array.prototype.map.call(t.tBodies[0].rows,function(r){return r.cells[k].textContent;})
  .join(',');}
 th[1].click();b.setAttribute('data-by-robust',col(0));th[1].click();b.setAttribute('data-by-robust-desc',col(0));
 th[2].click();th[2].click();b.setAttribute('data-by-note-desc',col(2));
 b.setAttribute('data-aria',th[2].getAttribute('aria-sort'));
 var d=document.querySelector('details.fold'),w=document.querySelectorAll('.table-wrap')[2];
 b.setAttribute('data-fold-open',String(d.open));
 b.setAttribute('data-fold-height',String(d.getBoundingClientRect().height));
 b.setAttribute('data-folded-visible',String(d.querySelector('table').checkVisibility()));
 b.setAttribute('data-page-overflow',String(document.documentElement.scrollWidth-window.innerWidth));
 b.setAttribute('data-wide-scrolls',String(w.scrollWidth>w.clientWidth));
 b.setAttribute('data-wide-box',String(Math.round(w.getBoundingClientRect().right)));
 b.setAttribute('data-num-align',getComputedStyle(t.tBodies[0].rows[0].cells[1]).textAlign);});</script>"""


def test_fold_and_table_behaviour_in_chromium(report_dir, tmp_path):
    """At 1300 px: the fold is closed, a wide table scrolls inside its box (the page does not widen), numbers are
    right-aligned and a header click sorts numbers as numbers."""
    from robust_pt.report import html as H

    page = tmp_path / "fold.html"
    page.write_text(H.render(fold_document(report_dir), report_dir).replace("</body>", PROBE + "</body>"))
    res = chromium(page, tmp_path, "--window-size=1300,2000", "--virtual-time-budget=5000", "--dump-dom")
    assert res.returncode == 0, res.stderr[-2000:]
    a = body_attrs(res.stdout)
    assert a.get("data-loaded") == "1" and a["data-failed"] == "" and a["data-broken-images"] == "", a
    assert a["data-sortable"] == "3" and a["data-images"] == "1" and a["data-image-sizes"].endswith("/folded")
    assert a["data-by-robust"] == "m-nine,m-ten,m-hundred,m-none"  # 9 < 10 < 100 (numbers), n/a last
    assert a["data-by-robust-desc"] == "m-hundred,m-ten,m-nine,m-none"  # n/a last either way
    assert a["data-by-note-desc"] == "d,c,b,a" and a["data-aria"] == "descending"
    assert a["data-fold-open"] == "false" and a["data-folded-visible"] == "false", a
    assert float(a["data-fold-height"]) < 60, a  # just its summary line
    assert int(a["data-page-overflow"]) <= 0 and a["data-wide-scrolls"] == "true"
    assert int(a["data-wide-box"]) <= 1300
    assert a["data-num-align"] == "right", a
    shot = tmp_path / "fold.png"
    res = chromium(page, tmp_path, "--window-size=1300,1600", f"--screenshot={shot}")
    assert res.returncode == 0 and shot.exists() and shot.stat().st_size > 10_000, res.stderr[-2000:]
