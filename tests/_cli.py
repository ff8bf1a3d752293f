"""Run the `robust-pt` CLI in-process, and check that a bad input is one `error: ` line with exit code 2."""

from __future__ import annotations

from typer.testing import CliRunner

from robust_pt.cli import _register, app

_register()


def invoke(*args):
    """`robust-pt ARGS...` (each argument str()-ed); the click Result."""
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *needles):
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for n in needles:
        assert n in lines[0], lines[0]
