"""Importing TextAttack offline: NLTK data and its cache in the project cache, its logs hushed.

A leaf module (it imports nothing else of robust_pt.attacks), so that both the recipes
(text/recipes.py) and TextAttack's view of a VLModel (vl_wrapper.py) set TextAttack up the same
way without importing each other.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings
from pathlib import Path

from ...errors import AttackError


def load_textattack():
    """Import textattack offline (NLTK data and its cache in the project cache); AttackError if it cannot."""
    if "textattack" in sys.modules:
        return sys.modules["textattack"]
    missing = [m for m in ensure_offline_data() if "WordNet" not in m]
    if missing:
        raise AttackError(f"text attacks need offline NLTK data that is missing ({'; '.join(missing)}); {how_to_fix()}")
    try:
        with warnings.catch_warnings(), _quiet():
            warnings.simplefilter("ignore")
            import textattack
    except ImportError as err:
        raise AttackError(f"textattack cannot be imported ({err}); install textattack==0.3.10") from None
    return textattack


def ensure_offline_data() -> list[str]:
    """Point NLTK and TextAttack at robust-pt's cache and fill it if needed; what is still missing.

    When NLTK_DATA / TA_CACHE_DIR are robust-pt's own (checkout or installed wheel), the
    missing stop words and marker are written by robust_pt.runtime.textdata (as `robust-pt setup`
    does, but without apt-get: WordNet is copied only when the system has it), with one
    line on stderr. Data the user pointed elsewhere is never written.
    """
    from ... import paths
    from ...runtime import textdata
    from ...runtime.offline import missing_offline_data, prepare_textattack_env

    env = prepare_textattack_env()
    nltk_data = env["NLTK_DATA"].split(os.pathsep)[0]
    missing = missing_offline_data(nltk_data, env["TA_CACHE_DIR"])
    own = Path(nltk_data) == paths.nltk_dir() and Path(env["TA_CACHE_DIR"]) == paths.textattack_cache()
    fixable = [m for m in missing if "WordNet" not in m or textdata.wordnet_source_present()]
    if not fixable or not own:
        return missing
    print(f"robust-pt: preparing the offline NLTK data text attacks need in {paths.cache_dir()} "
          "(once; `robust-pt setup` does it ahead)", file=sys.stderr, flush=True)  # fmt: skip
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            textdata.prepare(paths.cache_dir(), allow_apt=False, quiet=True)
    except OSError as err:  # a read-only cache: say what is missing, as without it
        print(f"robust-pt: cannot write {paths.cache_dir()} ({err.strerror})", file=sys.stderr, flush=True)
    return missing_offline_data(nltk_data, env["TA_CACHE_DIR"])


def how_to_fix() -> str:
    """What to run for missing offline data: `robust-pt setup`, unless NLTK_DATA / TA_CACHE_DIR point elsewhere."""
    from ... import paths

    mine = {"NLTK_DATA": paths.nltk_dir(), "TA_CACHE_DIR": paths.textattack_cache()}
    theirs = [f"{k}={os.environ[k]}" for k, v in mine.items() if os.environ.get(k) and Path(os.environ[k]) != v]
    if theirs:
        return (
            f"{' and '.join(theirs)} point away from robust-pt's cache: fill them (nltk.download) or unset them "
            f"and run `robust-pt setup`"
        )
    return "run `robust-pt setup` (in a checkout: `make setup`)"


@contextlib.contextmanager
def _quiet():
    """TextAttack logs a warning per goal function about unknown model classes; hush it meanwhile."""
    logs = [logging.getLogger("textattack")]
    ta = sys.modules.get("textattack.shared.utils")
    if ta is not None and isinstance(getattr(ta, "logger", None), logging.Logger):
        logs.append(ta.logger)  # its own handler, not propagated
    levels = [log.level for log in logs]
    for log in logs:
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for log, level in zip(logs, levels):
            log.setLevel(level)
