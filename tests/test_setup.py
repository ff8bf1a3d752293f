"""Packaging and setup: preset/cache paths, the offline NLTK setup, a light `import robust_pt`."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import robust_pt
from robust_pt import paths

REPO = Path(__file__).resolve().parent.parent


def _run(code: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        cwd=REPO,
    )


# --- paths -------------------------------------------------------------------------------


def test_preset_dirs_are_the_top_level_folders_in_a_checkout():
    assert paths.repo_root() == REPO
    for kind in ("attacks", "recipes"):
        d = paths.preset_dir(kind)
        assert d == REPO / kind
        assert d.is_dir(), f"{d} should exist (kept in git with a .gitkeep)"


def test_preset_dir_rejects_unknown_kinds():
    with pytest.raises(ValueError, match="unknown preset kind"):
        paths.preset_dir("models")


def test_cache_dir_follows_env_then_checkout(monkeypatch, tmp_path):
    monkeypatch.setenv("ROBUST_PT_CACHE", str(tmp_path))
    assert paths.cache_dir() == tmp_path.resolve()
    assert paths.nltk_dir() == tmp_path.resolve() / "nltk_data"
    assert paths.textattack_cache() == tmp_path.resolve() / "textattack"
    monkeypatch.delenv("ROBUST_PT_CACHE")
    assert paths.cache_dir() == REPO / ".cache"


def test_installed_layout_uses_package_data_and_home_cache(monkeypatch, tmp_path):
    # paths.py inside a site-packages-like folder with no pyproject.toml beside the package.
    pkg = tmp_path / "site" / "robust_pt"
    pkg.mkdir(parents=True)
    shutil.copy(REPO / "robust_pt" / "paths.py", pkg / "paths.py")
    spec = importlib.util.spec_from_file_location("_installed_paths", pkg / "paths.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.delenv("ROBUST_PT_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert mod.repo_root() is None
    assert mod.preset_dir("attacks") == pkg.resolve() / "_data" / "attacks"
    assert mod.preset_dir("recipes") == pkg.resolve() / "_data" / "recipes"
    assert mod.cache_dir() == tmp_path / "home" / ".cache" / "robust-pt"


def test_prepare_textattack_env_sets_defaults_and_keeps_user_values(tmp_path):
    code = (
        "import json, os; from robust_pt.runtime.offline import prepare_textattack_env; "
        "print(json.dumps(prepare_textattack_env()))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("NLTK_DATA", "TA_CACHE_DIR")}
    env["ROBUST_PT_CACHE"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {
        "NLTK_DATA": str(tmp_path.resolve() / "nltk_data"),
        "TA_CACHE_DIR": str(tmp_path.resolve() / "textattack"),
    }
    env["NLTK_DATA"] = "/somewhere/else"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, cwd=REPO)
    assert json.loads(out.stdout)["NLTK_DATA"] == "/somewhere/else"


# --- robust-pt setup (robust_pt/runtime/textdata.py) -----------------------------------------------


def _setup_nltk(cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "ROBUST_PT_CACHE": str(cache), "ROBUST_PT_NO_APT": "1"}
    cmd = [sys.executable, "-m", "robust_pt", "setup"]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=cache.parent)


def test_setup_nltk_prepares_offline_data_and_is_idempotent(tmp_path):
    from robust_pt.runtime.offline import missing_offline_data

    cache = tmp_path / "cache"
    out = _setup_nltk(cache)
    assert out.returncode == 0, out.stderr
    nltk_data, ta_cache = cache / "nltk_data", cache / "textattack"
    stop = nltk_data / "corpora" / "stopwords" / "english"
    words = stop.read_text().split()
    assert len(words) == 179 and len(set(words)) == 179
    assert {"the", "a", "don't", "wouldn't"} <= set(words)
    marker = ta_cache / "post_install_check_3"
    assert marker.is_file()

    have_wordnet = Path("/usr/share/wordnet/data.noun").is_file()
    wn = nltk_data / "corpora" / "wordnet"
    if have_wordnet:
        # lexnames rows as NLTK's WordNetCorpusReader parses them: "NN<TAB>name<TAB>cat".
        rows = [line.split() for line in (wn / "lexnames").read_text().splitlines()]
        assert len(rows) == 45
        assert all(int(r[0]) == i for i, r in enumerate(rows))
        lexnames = [r[1] for r in rows]
        # Every verb synset's lexicographer file number must name a verb.* file.
        used = {
            line.split(" ", 2)[1]
            for line in (wn / "data.verb").read_text(encoding="latin-1").splitlines()
            if line[:1].isdigit()
        }
        assert used and all(lexnames[int(n)].startswith("verb.") for n in used)
        assert missing_offline_data(nltk_data, ta_cache) == []
    else:
        assert "WordNet" in out.stderr and "apt-get install wordnet-base" in out.stderr

    before = {p: p.stat().st_mtime_ns for p in (stop, marker)}
    out2 = _setup_nltk(cache)
    assert out2.returncode == 0, out2.stderr
    assert {p: p.stat().st_mtime_ns for p in before} == before
    if have_wordnet:
        assert "up to date" in out2.stdout


def test_the_old_script_still_prepares_the_data(tmp_path):
    env = {**os.environ, "ROBUST_PT_CACHE": str(tmp_path), "ROBUST_PT_NO_APT": "1"}
    cmd = [sys.executable, str(REPO / "scripts" / "setup_nltk.py"), "-q"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "nltk_data" / "corpora" / "stopwords" / "english").is_file()


def test_the_first_text_attack_prepares_its_data_with_one_line(tmp_path):
    """A pip user who never ran `robust-pt setup`: the first text attack fills robust-pt's own cache and says so."""
    code = (
        "import json\n"
        "from robust_pt.attacks.text.setup import ensure_offline_data\n"
        "print(json.dumps(ensure_offline_data()))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("NLTK_DATA", "TA_CACHE_DIR")}
    env["ROBUST_PT_CACHE"] = str(tmp_path / "c")

    def first_use():
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 0, out.stderr
        return out, json.loads(out.stdout.strip().splitlines()[-1])

    out, missing = first_use()
    assert (tmp_path / "c" / "nltk_data" / "corpora" / "stopwords" / "english").is_file()
    assert (tmp_path / "c" / "textattack" / "post_install_check_3").is_file()
    assert "preparing the offline NLTK data" in out.stderr and "robust-pt setup" in out.stderr
    assert all("WordNet" in m for m in missing)  # only WordNet can be missing (no system copy to take)
    if Path("/usr/share/wordnet/data.noun").is_file():
        assert missing == []
    again, _ = first_use()
    assert "preparing" not in again.stderr  # once


# --- import cost -------------------------------------------------------------------------


def test_import_robust_pt_is_light():
    # what it imports, not how long it takes (benchmarks/startup.py times it)
    code = (
        "import json, sys\n"
        "import robust_pt\n"
        "heavy = [m for m in ('torch', 'textattack', 'torchattacks', 'transformers', 'foolbox')"
        " if m in sys.modules]\n"
        "print(json.dumps({'heavy': heavy}))\n"
    )
    out = _run(code)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["heavy"] == [], f"`import robust_pt` imported {got['heavy']}"


# --- packaging ---------------------------------------------------------------------------


def test_pyproject_metadata():
    tomllib = pytest.importorskip("tomllib")
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    project = meta["project"]
    assert project["name"] == "robust-pt"
    assert project["scripts"]["robust-pt"] == "robust_pt.cli:main"
    assert meta["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "robust_pt.__version__"}
    deps = " ".join(project["dependencies"])
    assert "textattack==0.3.10" in deps and "torchattacks" not in deps
    assert robust_pt.__version__


def test_wheel_ships_presets_as_package_data(tmp_path):
    """Build a wheel of a copy of the tree (with dummy presets) and look inside it."""
    try:
        import setuptools
    except ImportError:
        pytest.skip("setuptools is not installed")
    if tuple(int(x) for x in setuptools.__version__.split(".")[:2]) < (70, 1):
        pytest.skip("setuptools < 70.1 cannot build a wheel without the `wheel` package")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(
        REPO / "robust_pt", src / "robust_pt", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "_data")
    )
    for kind in ("attacks", "recipes"):
        (src / kind).mkdir()
        (src / kind / f"zz_test_{kind}.yaml").write_text("name: dummy\n")
    assets = src / "robust_pt" / "assets" / "zz-test"
    assets.mkdir(parents=True, exist_ok=True)
    (assets / "config.json").write_text("{}")
    (assets / "model.safetensors").write_bytes(b"\0")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "dist"),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    (wheel,) = (tmp_path / "dist").glob("robust_pt-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "robust_pt/_data/attacks/zz_test_attacks.yaml" in names
    assert "robust_pt/_data/recipes/zz_test_recipes.yaml" in names
    assert "robust_pt/assets/zz-test/config.json" in names
    assert "robust_pt/assets/zz-test/model.safetensors" in names
    assert "robust_pt/paths.py" in names
    entry_points = (
        zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    )
    assert "robust-pt = robust_pt.cli:main" in entry_points
