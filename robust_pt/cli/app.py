"""The typer `app` of the `robust-pt` command and its one-line error helper.

A leaf module: the command modules (train.py, attack.py, report.py, setup.py) add
their commands to `app` from here, and robust_pt/cli/__init__.py imports them, so no command
module imports cli.py.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Measure the adversarial robustness of prompt-tuned vs finetuned VL models.",
)


def fail(err: Exception) -> None:
    """Print one line that says what to do, and exit 2."""
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(2)
