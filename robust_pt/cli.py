"""The `robust-pt` command: parses options, calls the API, maps RobustPTError to exit 2.

Kept thin on purpose: every command body lives in the library so that the Python API
and the CLI behave the same. Sub-command groups register themselves from cli_*.py.
"""

from __future__ import annotations

import sys

import typer

from .errors import RobustPTError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Measure the adversarial robustness of prompt-tuned vs finetuned VL models.")


def fail(err: Exception) -> None:
    """Print one line that says what to do, and exit 2."""
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(2)


def _register() -> None:
    from . import cli_train  # noqa: F401
    try:
        from . import cli_attack  # noqa: F401
    except ImportError:
        pass
    try:
        from . import cli_report  # noqa: F401
    except ImportError:
        pass


def main(argv: list[str] | None = None) -> None:
    _register()
    try:
        app(args=argv, standalone_mode=True)
    except RobustPTError as err:  # pragma: no cover - commands catch their own
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
