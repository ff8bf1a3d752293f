"""What every real-dataset format shares, and the registry of formats.

Why: each format (tasks/formats/vqav2.py, snli_ve.py, refcoco.py, coco_captions.py) only
reads its own files into `Item`s; decoding and resizing images as the model's processor
does, moving boxes with them, reading JSON once per file state, one-line errors naming
the first bad record and the seeded subsample are the same for all and live here. A
format is one module and one `register(DatasetFormat(...))`, which names its loader,
the task kind it yields (tasks/kinds.py) and what its instruction text is called.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ...errors import TaskError
from ..base import Example, Task

RESIZE_MODES = ("squash", "crop")


# ============================================================================ the registry


@dataclass(frozen=True)
class DatasetFormat:
    """A dataset format: `load(root, split, limit, seed, size, resize) -> RealTask` and what it declares."""

    name: str
    load: Callable[..., "RealTask"]
    kind: str  # the task kind its tasks have (tasks/kinds.py)
    text_label: str = ""  # what its instruction text is called in reports ("" for its kind's label)


_formats: dict[str, DatasetFormat] = {}


def register(fmt: DatasetFormat) -> DatasetFormat:
    """Add (or replace) a dataset format; `--task NAME:DIR` then loads it."""
    from ..kinds import label_text

    _formats[fmt.name] = fmt
    label_text(fmt.name, fmt.text_label)
    return fmt


def lookup(name: str) -> DatasetFormat | None:
    return _formats.get(name)


def names() -> tuple[str, ...]:
    return tuple(_formats)


# ============================================================================ tasks


@dataclass
class Item:
    """One example as read from the files, before its image is decoded."""

    id: str
    image: Path
    text: str
    target: str = ""
    label: int = -1
    refs: tuple[str, ...] = ()
    box: tuple[float, float, float, float] | None = None  # original pixels
    qtype: str = ""
    human: tuple[str, ...] = ()


@dataclass
class RealTask(Task):
    """Examples read from a dataset in its official format; images decoded and resized on access."""

    items: list = field(default_factory=list, repr=False)
    resize: str = "squash"
    source: str = ""

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        it: Item = self.items[int(i)]
        arr, (w, h) = load_image(str(it.image), self.image_size, self.resize)
        image = arr.astype(np.float32).transpose(2, 0, 1) / 255.0
        box = None if it.box is None else transform_box(it.box, (w, h), self.image_size, self.resize)
        target = it.target
        if box is not None:  # a grounding target: the box as location tokens at this size
            from ..metrics import box_to_tokens

            target = box_to_tokens(box, self.image_size)
        kw = dict(
            id=it.id, image=image, text=it.text, target=target, label=it.label, refs=it.refs, box=box, qtype=it.qtype
        )
        return self.make_example(it, kw)

    def make_example(self, it: Item, kw: dict) -> Example:
        """The Example of one item (a format with more per-example data overrides it, as VQAv2 does)."""
        return Example(**kw)


# ============================================================================ images


def _resample():
    from PIL import Image

    return Image.Resampling.BICUBIC if hasattr(Image, "Resampling") else Image.BICUBIC


@lru_cache(maxsize=64)
def load_image(path: str, size: int, resize: str) -> tuple[np.ndarray, tuple[int, int]]:
    """(uint8 (S, S, 3) image resized as `resize` says, original (width, height))."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            if resize == "squash":
                out = im.resize((size, size), _resample())
            else:
                nw, nh = _shortest_edge(w, h, size)
                out = im.resize((nw, nh), _resample())
                left, top = (nw - size) // 2, (nh - size) // 2
                out = out.crop((left, top, left + size, top + size))
    except OSError as err:
        raise TaskError(f"cannot read image {path}: {err}") from None
    return np.asarray(out, dtype=np.uint8), (w, h)


def _shortest_edge(w: int, h: int, size: int) -> tuple[int, int]:
    """Hugging Face's shortest_edge resize: the short side becomes size, the long one int(size * long / short)."""
    if w <= h:
        return size, int(size * h / w)
    return int(size * w / h), size


def transform_box(box, wh: tuple[int, int], size: int, resize: str) -> tuple[float, float, float, float]:
    """A pixel box (x0, y0, x1, y1) of the original image in the resized image's pixels (clipped)."""
    w, h = wh
    x0, y0, x1, y1 = (float(v) for v in box)
    if resize == "squash":
        sx, sy, ox, oy = size / w, size / h, 0.0, 0.0
    else:
        nw, nh = _shortest_edge(w, h, size)
        sx, sy = nw / w, nh / h
        ox, oy = float((nw - size) // 2), float((nh - size) // 2)

    def clip(v):
        return min(max(v, 0.0), float(size))

    return (clip(x0 * sx - ox), clip(y0 * sy - oy), clip(x1 * sx - ox), clip(y1 * sy - oy))


def _find_image(root: Path, names: Sequence[str], folders: Sequence[Path], what: str) -> Path:
    for folder in folders:
        for n in names:
            p = folder / n
            if p.is_file():
                return p
    shown = ", ".join(str(f) for f in dict.fromkeys(folders))
    raise TaskError(f"{what}: image {names[0]} not found (looked in {shown})")


# ============================================================================ file reading


def _stat_key(p: Path):
    st = p.stat()
    return str(p.resolve()), st.st_mtime_ns, st.st_size


@lru_cache(maxsize=8)
def _read_json_cached(key) -> Any:
    path = key[0]
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except ValueError as err:
        raise TaskError(f"{path} is not valid JSON ({err})") from None


def read_json(p: Path) -> Any:
    return _read_json_cached(_stat_key(p))


def read_jsonl(p: Path) -> list:
    """The JSON objects of a JSON-lines file, read once per file state."""
    return _read_jsonl_cached(_stat_key(p))


@lru_cache(maxsize=4)
def _read_jsonl_cached(key) -> list:
    path = key[0]
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except ValueError as err:
                    raise TaskError(f"{path}: line {n} is not valid JSON ({err})") from None
    return out


def _need(rec: Any, fields: Sequence[str], where: Callable[[], str]) -> None:
    """One line naming the first missing field of the record."""
    if not isinstance(rec, dict):
        raise TaskError(f"{where()} is not a JSON object")
    for f in fields:
        if f not in rec or rec[f] is None:
            raise TaskError(f"{where()} has no {f!r} field")


def _ident(rec: Any, keys: Sequence[str]) -> str:
    if isinstance(rec, dict):
        for k in keys:
            if k in rec:
                return f" ({k} {rec[k]})"
    return ""


def _records(data: Any, key: str, path: Path) -> list:
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise TaskError(f"{path} has no {key!r} list; is it the right file?")
    return data[key]


def _subsample(n: int, limit: int | None, seed: int) -> list[int]:
    if limit is None or limit >= n:
        return list(range(n))
    return sorted(np.random.default_rng(seed).choice(n, size=limit, replace=False).tolist())


def _dir(path: Path, name: str, holds: str) -> Path:
    """`path` if it is a directory (else one line saying what to pass)."""
    if not path.exists():
        raise TaskError(f"{name}: {path} does not exist; pass the directory that holds {holds}")
    if not path.is_dir():
        raise TaskError(f"{name}: {path} is not a directory; pass the directory that holds {holds}")
    return path
