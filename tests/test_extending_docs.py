"""docs/extending.md shows each worked example's code as it is in the file the tests run.

Why: a worked example is only worth its test if the text a reader copies is the code that
passed. The docs may show an excerpt (imports left out), so each line shown must be a line
of the example file, in the same order.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "extending.md").read_text()
# the python block that follows a paragraph naming tests/extending_<name>.py
SHOWN = re.compile(r"`(tests/extending_\w+\.py)`[^`]*?(?:`[^`]*`[^`]*?)*?```python\n(.*?)```", re.S)


def _shown() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in SHOWN.finditer(DOC)]


def test_every_worked_example_file_is_shown():
    files = {f for f, _ in _shown()}
    assert files == {str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("extending_*.py")}


@pytest.mark.parametrize("path,block", _shown(), ids=[f for f, _ in _shown()])
def test_the_docs_show_the_example_as_it_is(path, block):
    lines = [line.rstrip() for line in (ROOT / path).read_text().splitlines()]
    at = 0
    for shown in (line.rstrip() for line in block.splitlines()):
        if not shown:
            continue
        assert shown in lines[at:], f"{path} has no line {shown!r} (after line {at})"
        at = lines.index(shown, at) + 1
