"""Offline setup for TextAttack / NLTK. Nothing runs at import.

`import textattack` tries to download six NLTK corpora on its first import and then
crashes without the stop-word list. `robust-pt setup` (robust_pt/runtime/textdata.py; `make setup`)
prepares the data under `paths.nltk_dir()` and writes TextAttack's post-install marker
under `paths.textattack_cache()`; call `prepare_textattack_env()` before importing
textattack so both libraries find them.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from .. import paths

__all__ = ["prepare_textattack_env", "missing_offline_data", "no_nltk_downloads"]

_NLTK_CATEGORIES = (
    "corpora",
    "tokenizers",
    "taggers",
    "models",
    "chunkers",
    "grammars",
    "misc",
    "sentiment",
    "stemmers",
    "help",
)

#: TextAttack skips its NLTK downloads when this file exists in TA_CACHE_DIR.
TEXTATTACK_MARKER = "post_install_check_3"


def prepare_textattack_env() -> dict[str, str]:
    """Point NLTK_DATA and TA_CACHE_DIR at robust-pt's cache, unless the user set them.

    Uses `os.environ.setdefault`, so explicit user settings win. If nltk is already
    imported (it reads NLTK_DATA only at import), the directory is also added to
    `nltk.data.path`. HF_HUB_OFFLINE is left alone. Returns the two values in force.
    Note: importing textattack with TA_CACHE_DIR set makes it overwrite HF_HOME,
    TFHUB_CACHE_DIR and XDG_CACHE_HOME with that directory.
    """
    nltk_data = os.environ.setdefault("NLTK_DATA", str(paths.nltk_dir()))
    ta_cache = os.environ.setdefault("TA_CACHE_DIR", str(paths.textattack_cache()))
    nltk = sys.modules.get("nltk")
    if nltk is not None:
        data_path = nltk.data.path
        for entry in reversed(nltk_data.split(os.pathsep)):
            if entry and entry not in data_path:
                data_path.insert(0, entry)
    return {"NLTK_DATA": nltk_data, "TA_CACHE_DIR": ta_cache}


def missing_offline_data(
    nltk_data: str | os.PathLike | None = None, ta_cache: str | os.PathLike | None = None
) -> list[str]:
    """What of the offline TextAttack data is missing (an empty list when all is there).

    Defaults to robust-pt's own directories. The fix for anything listed is
    `robust-pt setup` (in a checkout, `make setup`).
    """
    nd = Path(nltk_data) if nltk_data is not None else paths.nltk_dir()
    tc = Path(ta_cache) if ta_cache is not None else paths.textattack_cache()
    missing = []
    if not (nd / "corpora" / "stopwords" / "english").is_file():
        missing.append(f"NLTK stopwords ({nd / 'corpora' / 'stopwords' / 'english'})")
    if not (nd / "corpora" / "wordnet" / "lexnames").is_file():
        missing.append(f"NLTK WordNet ({nd / 'corpora' / 'wordnet'}; PWWS and WordNet swaps need it)")
    if not (tc / TEXTATTACK_MARKER).is_file():
        missing.append(f"TextAttack post-install marker ({tc / TEXTATTACK_MARKER})")
    return missing


@contextlib.contextmanager
def no_nltk_downloads() -> Iterator[None]:
    """Within the block, `nltk.download(id)` only reports whether `id` is already present.

    TextAttack calls `nltk.download("omw-1.4")` in `WordSwapWordNet.__init__` (PWWS and
    WordNet swaps), which goes to the network even when WordNet is installed; offline it
    prints an error and goes on. Wrapping the construction in this context skips that.
    """
    import nltk

    original = nltk.download

    def present(info_or_id=None, *args, **kwargs) -> bool:
        if not isinstance(info_or_id, str):
            return False
        for cat in _NLTK_CATEGORIES:
            for name in (f"{cat}/{info_or_id}", f"{cat}/{info_or_id}.zip"):
                try:
                    nltk.data.find(name)
                    return True
                except LookupError:
                    pass
        return False

    nltk.download = present
    try:
        yield
    finally:
        nltk.download = original
