"""The `robust-pt` entry point (robust_pt/cli/__init__.py): every command group registers, and one
that cannot be imported stops the CLI loudly instead of leaving its commands out."""

from __future__ import annotations

import subprocess
import sys

import pytest

from robust_pt import cli


def test_every_command_group_registers():
    cli._register()
    names = {c.name or c.callback.__name__ for c in cli.app.registered_commands}
    assert {"pretrain", "train", "eval", "demo", "run", "attack", "list", "report", "baseline", "check"} <= names


@pytest.mark.parametrize("module", cli.COMMAND_MODULES)
def test_a_command_module_that_fails_to_import_is_an_error(module, monkeypatch):
    monkeypatch.setitem(sys.modules, f"robust_pt.cli.{module}", None)  # `import` of it raises ImportError
    with pytest.raises(ImportError, match=f"command module robust_pt.cli.{module} cannot be imported"):
        cli.main(["--help"])


def test_the_command_fails_loudly_in_a_fresh_process():
    code = (
        "import sys; sys.modules['robust_pt.cli.report'] = None; "
        "from robust_pt.cli import main; main(['list', 'attacks'])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "robust_pt.cli.report cannot be imported" in out.stderr, out.stderr
    assert "Traceback" in out.stderr  # not a one-line user error: the installation is broken
