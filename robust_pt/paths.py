"""Where robust-pt finds its presets and keeps its caches.

Stdlib only: robust_pt/runtime/textdata.py (`robust-pt setup`) uses it, and `import robust_pt`
must stay light.

Two layouts are supported:

* a source / editable checkout (`pip install -e .`): the package directory sits next to
  the repository's `pyproject.toml`; presets are the top-level `attacks/` and `recipes/`
  folders, and the cache is `<repo>/.cache`;
* an installed wheel: the presets were copied into the package as
  `robust_pt/_data/attacks` and `robust_pt/_data/recipes` at build time (see setup.py),
  and the cache is `~/.cache/robust-pt`.

`$ROBUST_PT_CACHE` overrides the cache location in both layouts.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

__all__ = [
    "PRESET_KINDS",
    "package_dir",
    "repo_root",
    "preset_dir",
    "assets_dir",
    "cache_dir",
    "nltk_dir",
    "textattack_cache",
]

#: The preset folders that exist at the repository's top level and in the wheel.
PRESET_KINDS = ("attacks", "recipes")

_PACKAGE_DIR = Path(__file__).resolve().parent


def package_dir() -> Path:
    """The directory of the installed (or checked-out) `robust_pt` package."""
    return _PACKAGE_DIR


@lru_cache(maxsize=None)
def repo_root() -> Path | None:
    """The repository root when running from a source or editable checkout, else None.

    A checkout is recognised by the `pyproject.toml` beside the package directory that
    names this distribution; an installed wheel has no such file next to it.
    """
    root = _PACKAGE_DIR.parent
    pyproject = root / "pyproject.toml"
    try:
        text = pyproject.read_text(encoding="utf-8")
    except OSError:
        return None
    if not re.search(r"""^name\s*=\s*["']robust[-_.]pt["']""", text, re.MULTILINE | re.IGNORECASE):
        return None
    return root


def preset_dir(kind: str) -> Path:
    """The folder holding the `kind` presets ("attacks" or "recipes").

    In a checkout this is the top-level `<repo>/<kind>/` (edits show up at once); in an
    installed wheel it is `robust_pt/_data/<kind>/`. The folder may be absent or empty if
    no preset of that kind exists.
    """
    if kind not in PRESET_KINDS:
        raise ValueError(f"unknown preset kind {kind!r}; expected one of {', '.join(PRESET_KINDS)}")
    root = repo_root()
    if root is not None:
        return root / kind
    return _PACKAGE_DIR / "_data" / kind


def assets_dir() -> Path:
    """The package's bundled assets (e.g. `assets/base-small/`, the pretrained base checkpoint)."""
    return _PACKAGE_DIR / "assets"


def cache_dir() -> Path:
    """$ROBUST_PT_CACHE, else `<repo>/.cache` in a checkout, else `~/.cache/robust-pt`.

    Not created here; callers create what they write.
    """
    env = os.environ.get("ROBUST_PT_CACHE")
    if env:
        return Path(env).expanduser().resolve()
    root = repo_root()
    if root is not None:
        return root / ".cache"
    return Path.home() / ".cache" / "robust-pt"


def nltk_dir() -> Path:
    """The offline NLTK data directory (what NLTK_DATA points at): `cache_dir()/nltk_data`."""
    return cache_dir() / "nltk_data"


def textattack_cache() -> Path:
    """TextAttack's cache directory (what TA_CACHE_DIR points at): `cache_dir()/textattack`."""
    return cache_dir() / "textattack"
