"""`robust-pt setup`: the offline data text attacks need, where the installed package reads it.

A pip user has no Makefile: this command is their `make setup` for what pip cannot
install (NLTK's stop words, WordNet from the system, TextAttack's post-install marker).
"""

from __future__ import annotations

from pathlib import Path

import typer

from .app import app


@app.command("setup")
def setup_cmd(
    cache: Path = typer.Option(
        None, help="Cache root to fill (default: $ROBUST_PT_CACHE, the checkout's .cache, or ~/.cache/robust-pt)."
    ),  # fmt: skip
    no_apt: bool = typer.Option(False, "--no-apt", help="Never call apt-get (also ROBUST_PT_NO_APT=1)."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Prepare NLTK stop words, WordNet (copied from the system; says how to get it) and TextAttack's marker."""
    from ..errors import ConfigError
    from ..runtime import textdata
    from .app import fail

    try:
        code = textdata.prepare(cache, textdata.apt_allowed(no_apt), quiet)
    except OSError as err:
        fail(ConfigError(f"cannot write {err.filename or cache} ({err.strerror}); pass a writable --cache"))
    raise typer.Exit(code)
