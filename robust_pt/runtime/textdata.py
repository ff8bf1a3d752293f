"""Prepare the offline NLTK data and TextAttack marker that robust-pt's text attacks need.

Why a module of the package: a pip user has no checkout and no Makefile, so
`robust-pt setup` (and the first text attack, without apt-get) must find this code where
the installed package is, and fill the cache the installed package reads. Stdlib only.

    robust-pt setup [--cache DIR] [--no-apt] [-q]        (make setup runs it in a checkout)

Writes, under robust_pt.paths.cache_dir() ($ROBUST_PT_CACHE, else <repo>/.cache in a
checkout, else ~/.cache/robust-pt):

* nltk_data/corpora/stopwords/english  NLTK's 179-word English stop-word list (built in);
* nltk_data/corpora/wordnet/           WordNet 3.0 from the system's /usr/share/wordnet
                                       (Debian's `wordnet-base` and `wordnet-sense-index`,
                                       installed with apt-get when missing and running as
                                       root), plus the `lexnames` file NLTK's reader needs;
* textattack/post_install_check_3      the marker that stops `import textattack` from
                                       trying to download six NLTK corpora.

Idempotent: what exists is kept, and a run with nothing to do returns in milliseconds.
Without WordNet (not root, or --no-apt) it warns and says how to get it, and goes on:
`import textattack` works, only PWWS / WordNet swaps need WordNet. Exit status 1 only when
an install as root fails.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .. import paths

WORDNET_SRC = Path("/usr/share/wordnet")
WORDNET_DEBS = ("wordnet-base", "wordnet-sense-index")
TEXTATTACK_MARKER = "post_install_check_3"
WORDNET_HOWTO = (
    f"get WordNet with `sudo apt-get install {' '.join(WORDNET_DEBS)}` (Debian, Ubuntu) and run "
    "`robust-pt setup` again, or where the internet is reachable "
    "`python -c \"import nltk; nltk.download('wordnet', download_dir='NLTK_DIR')\"`"
)

# The files NLTK's WordNetCorpusReader opens (cntlist.rev only for Lemma.count()).
WORDNET_FILES = (
    "lexnames",
    "index.sense",
    "index.adj",
    "index.adv",
    "index.noun",
    "index.verb",
    "data.adj",
    "data.adv",
    "data.noun",
    "data.verb",
    "adj.exc",
    "adv.exc",
    "noun.exc",
    "verb.exc",
)

# WordNet 3.0's lexicographer files, lexnames(5): number, name, syntactic category
# (1 noun, 2 verb, 3 adjective, 4 adverb). NLTK reads "NN<TAB>name<TAB>cat" rows.
LEXNAMES = (
    ("adj.all", 3),
    ("adj.pert", 3),
    ("adv.all", 4),
    ("noun.Tops", 1),
    ("noun.act", 1),
    ("noun.animal", 1),
    ("noun.artifact", 1),
    ("noun.attribute", 1),
    ("noun.body", 1),
    ("noun.cognition", 1),
    ("noun.communication", 1),
    ("noun.event", 1),
    ("noun.feeling", 1),
    ("noun.food", 1),
    ("noun.group", 1),
    ("noun.location", 1),
    ("noun.motive", 1),
    ("noun.object", 1),
    ("noun.person", 1),
    ("noun.phenomenon", 1),
    ("noun.plant", 1),
    ("noun.possession", 1),
    ("noun.process", 1),
    ("noun.quantity", 1),
    ("noun.relation", 1),
    ("noun.shape", 1),
    ("noun.state", 1),
    ("noun.substance", 1),
    ("noun.time", 1),
    ("verb.body", 2),
    ("verb.change", 2),
    ("verb.cognition", 2),
    ("verb.communication", 2),
    ("verb.competition", 2),
    ("verb.consumption", 2),
    ("verb.contact", 2),
    ("verb.creation", 2),
    ("verb.emotion", 2),
    ("verb.motion", 2),
    ("verb.perception", 2),
    ("verb.possession", 2),
    ("verb.social", 2),
    ("verb.stative", 2),
    ("verb.weather", 2),
    ("adj.ppl", 3),
)

# NLTK's corpora/stopwords/english (the classic 179 words), so behaviour matches an
# `nltk.download("stopwords")` install exactly.
NLTK_ENGLISH_STOPWORDS = """
i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself
yourselves he him his himself she she's her hers herself it it's its itself they them their
theirs themselves what which who whom this that that'll these those am is are was were be
been being have has had having do does did doing a an the and but if or because as until
while of at by for with about against between into through during before after above below
to from up down in out on off over under again further then once here there when where why
how all any both each few more most other some such no nor not only own same so than too
very s t can will just don don't should should've now d ll m o re ve y ain aren aren't
couldn couldn't didn didn't doesn doesn't hadn hadn't hasn hasn't haven haven't isn isn't ma
mightn mightn't mustn mustn't needn needn't shan shan't shouldn shouldn't wasn wasn't weren
weren't won won't wouldn wouldn't
""".split()


def _log(msg: str, quiet: bool = False) -> None:
    if not quiet:
        print(f"robust-pt setup: {msg}", flush=True)


def _warn(msg: str) -> None:
    print(f"robust-pt setup: warning: {msg}", file=sys.stderr, flush=True)


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def stopwords_ok(nltk_data: Path) -> bool:
    f = nltk_data / "corpora" / "stopwords" / "english"
    return f.is_file() and f.stat().st_size > 0


def wordnet_ok(nltk_data: Path) -> bool:
    d = nltk_data / "corpora" / "wordnet"
    return all((d / name).is_file() for name in WORDNET_FILES)


def marker_ok(ta_cache: Path) -> bool:
    return (ta_cache / TEXTATTACK_MARKER).is_file()


def write_stopwords(nltk_data: Path) -> None:
    _atomic_write(nltk_data / "corpora" / "stopwords" / "english", "\n".join(NLTK_ENGLISH_STOPWORDS) + "\n")


def wordnet_source_present() -> bool:
    """Whether the system has WordNet where Debian's packages put it."""
    return _wordnet_src_ok()


def _wordnet_src_ok() -> bool:
    return all((WORDNET_SRC / name).is_file() for name in WORDNET_FILES if name != "lexnames")


def _apt_install(quiet: bool) -> bool:
    """apt-get install the WordNet packages; `apt-get update` once only if that fails."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *WORDNET_DEBS]
    _log(f"installing {' '.join(WORDNET_DEBS)} with apt-get", quiet)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        _log("apt-get install failed; running apt-get update and retrying", quiet)
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False)
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.stderr.write(out.stdout + out.stderr)
        return False
    return _wordnet_src_ok()


def ensure_wordnet_source(allow_apt: bool, quiet: bool) -> str | None:
    """None when /usr/share/wordnet is usable, else why it is not."""
    if _wordnet_src_ok():
        return None
    if not allow_apt or not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"{WORDNET_SRC} is missing{' (apt-get disabled)' if not allow_apt else ''}; {WORDNET_HOWTO}"
    if not _apt_install(quiet):
        return f"apt-get could not install {' '.join(WORDNET_DEBS)}"
    return None


def write_wordnet(nltk_data: Path) -> None:
    """Copy /usr/share/wordnet into corpora/wordnet (atomically) and add `lexnames`."""
    corpora = nltk_data / "corpora"
    corpora.mkdir(parents=True, exist_ok=True)
    target = corpora / "wordnet"
    tmp = Path(tempfile.mkdtemp(dir=corpora, prefix=".wordnet."))
    try:
        for src in WORDNET_SRC.iterdir():
            if src.is_file():
                shutil.copyfile(src, tmp / src.name)
        rows = "".join(f"{i:02d}\t{name}\t{cat}\n" for i, (name, cat) in enumerate(LEXNAMES))
        (tmp / "lexnames").write_text(rows, encoding="utf-8")
        os.chmod(tmp, 0o755)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_marker(ta_cache: Path) -> None:
    ta_cache.mkdir(parents=True, exist_ok=True)
    (ta_cache / TEXTATTACK_MARKER).touch()


def prepare(cache: str | os.PathLike | None = None, allow_apt: bool = True, quiet: bool = False) -> int:
    """Fill the cache (default paths.cache_dir()); 0, or 1 when an install as root failed."""
    if cache:
        root = Path(cache).expanduser().resolve()
        nltk_data, ta_cache = root / "nltk_data", root / "textattack"
    else:
        nltk_data, ta_cache = paths.nltk_dir(), paths.textattack_cache()
    if stopwords_ok(nltk_data) and wordnet_ok(nltk_data) and marker_ok(ta_cache):
        _log(f"up to date (NLTK_DATA={nltk_data}, TA_CACHE_DIR={ta_cache})", quiet)
        return 0
    status = 0
    if not stopwords_ok(nltk_data):
        write_stopwords(nltk_data)
        _log(f"wrote {nltk_data / 'corpora/stopwords/english'}", quiet)
    if not wordnet_ok(nltk_data):
        problem = ensure_wordnet_source(allow_apt, quiet)
        if problem is None:
            write_wordnet(nltk_data)
            _log(f"copied WordNet 3.0 into {nltk_data / 'corpora/wordnet'}", quiet)
        else:
            problem = problem.replace("NLTK_DIR", str(nltk_data))
            _warn(f"{problem}; until then WordNet-based text attacks (PWWS, WordNet swaps) will not work")
            if allow_apt and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
                status = 1
    if not marker_ok(ta_cache):
        write_marker(ta_cache)
        _log(f"wrote {ta_cache / TEXTATTACK_MARKER}", quiet)
    return status


def apt_allowed(no_apt: bool = False) -> bool:
    """apt-get may run unless --no-apt or ROBUST_PT_NO_APT=1."""
    return not no_apt and os.environ.get("ROBUST_PT_NO_APT", "") in ("", "0")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", help="cache root to fill (default: robust_pt.paths.cache_dir())")
    ap.add_argument("--no-apt", action="store_true", help="never call apt-get (also: ROBUST_PT_NO_APT=1)")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    return prepare(args.cache, apt_allowed(args.no_apt), args.quiet)


if __name__ == "__main__":
    sys.exit(main())
