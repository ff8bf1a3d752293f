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
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; "
                                                          ".ci/run installs it)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]


def chromium(page: Path, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    prof = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={prof}", *extra, page.resolve().as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90,
                          env={**os.environ, "HOME": str(tmp)})


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
    txt = write_run(root / "pt-text", "prompt-shapes-vqa", PT, PT_CLEAN, attack="textfooler",
                    spec={"kind": "text", "method": "textfooler", "norm": "words", "eps_unit": "words"},
                    extra={"text": words, "adv_text": adv, "words_changed": 2})
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
