"""Image classification in the ImageFolder layout: `--task imagefolder:DIR`, zero-shot classification.

DIR holds one folder per class (`DIR/<split>/<folder>/*.jpg|png|jpeg|webp`, or `DIR/<folder>/...`
when DIR has no split folders: every split reads it), and optionally:
  classnames.txt  one line per class, "<folder> <class name>" (CoOp's files: "n01440764 tench");
                  without it a folder's name is its class name, underscores as spaces;
  template.txt    the prompt, with {} where the class name goes (default "a photo of a {}.").
The candidates are the class names in folder order (sorted), the target the example's class;
accuracy (tasks/classify.py's kind, so a dual encoder tuned on one class set is evaluated on another).
"""

from __future__ import annotations

from pathlib import Path

from ...errors import TaskError
from ..classify import CLASSIFY, check_classes, check_template
from .common import DatasetFormat, Item, RealTask, _dir, _subsample, register

TEMPLATE = "a photo of a {}."
SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def _split_root(root: Path, split: str) -> Path:
    for name in (split, {"val": "validation", "test": "val"}.get(split, split)):
        if (root / name).is_dir():
            return root / name
    if any((root / s).is_dir() for s in ("train", "val", "test")):
        raise TaskError(f"imagefolder: {root} has no {split} folder; pass --split with one of the folders it has")
    return root


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as err:
        raise TaskError(f"imagefolder: cannot read {path} as UTF-8 text ({type(err).__name__}); save it as UTF-8")


def _names(root: Path, folders: list[str]) -> list[str]:
    path = root / "classnames.txt"
    if not path.exists():
        return check_classes([f.replace("_", " ") for f in folders], f"imagefolder {root}")
    table = {}
    for n, line in enumerate(_read(path).splitlines(), 1):
        if line.strip():
            folder, _, name = line.strip().partition(" ")
            table[folder] = name.strip()
    missing = [f for f in folders if f not in table]
    if missing:
        raise TaskError(f"imagefolder: {path} has no line for folder {missing[0]!r}; add '<folder> <class name>'")
    return check_classes([table[f] for f in folders], str(path))


def load_imagefolder(root: Path, split: str, limit: int | None, seed: int, size: int, resize: str) -> RealTask:
    _dir(root, "imagefolder", "one folder of images per class")
    base = _split_root(root, split)
    folders = sorted(p.name for p in base.iterdir() if p.is_dir())
    if not folders:
        raise TaskError(f"imagefolder: {base} holds no class folders; put each class's images in DIR/<split>/<class>/")
    answers = _names(root, folders)
    template = _read(root / "template.txt").strip() if (root / "template.txt").exists() else TEMPLATE
    check_template(template, str(root / "template.txt"))
    files = [
        (k, p) for k, f in enumerate(folders) for p in sorted((base / f).iterdir()) if p.suffix.lower() in SUFFIXES
    ]
    items = [
        Item(id=f"{folders[k]}/{p.name}", image=p, text=template, target=answers[k], label=k, qtype=folders[k])
        for k, p in (files[i] for i in _subsample(len(files), limit, seed))
    ]
    return RealTask(name="imagefolder", kind=CLASSIFY, split=split, metric="accuracy", answers=answers,
                    image_size=size, seed=seed, items=items, resize=resize, source=str(root))  # fmt: skip


register(DatasetFormat("imagefolder", load_imagefolder, CLASSIFY, "Prompt"))
