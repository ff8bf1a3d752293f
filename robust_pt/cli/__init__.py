"""The `robust-pt` command: parses options, calls the API, maps RobustPTError to exit 2.

Kept thin on purpose: every command body lives in the library so that the Python API
and the CLI behave the same. The typer `app` lives in app.py; the command groups
(COMMAND_MODULES, one module each) add their commands to it when `_register` imports
them. A command module that fails to import is an error, never a missing command.
"""

from __future__ import annotations

import importlib
import sys

import typer

from ..errors import RobustPTError
from .app import app, fail  # noqa: F401  (`from robust_pt.cli import app` keeps working)

COMMAND_MODULES = ("train", "attack", "report", "setup")  # robust_pt.cli.<name>, in help order


def _register() -> None:
    """Import every command module (each adds its commands to `app`); ImportError names the one that failed."""
    for name in COMMAND_MODULES:
        try:
            importlib.import_module(f"{__package__}.{name}")
        except ImportError as err:
            raise ImportError(
                f"the robust-pt command module {__package__}.{name} cannot be imported "
                f"({type(err).__name__}: {err}); its commands would be missing, so robust-pt "
                f"stops: fix the installation (pip install -e .) or the module"
            ) from err


def main(argv: list[str] | None = None) -> None:
    _register()
    try:
        app(args=argv, standalone_mode=True)
    except RobustPTError as err:  # pragma: no cover - commands catch their own
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
