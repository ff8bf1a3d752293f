"""COCO captions, Karpathy split: `--task coco-captions:DIR`, captioning (CIDEr-D, BLEU-4).

DIR holds `dataset_coco.json` (the Karpathy split) and the COCO images
(`DIR/<filepath>/<filename>`, `DIR/images/...` or DIR). The instruction is
`what does the image describe?`; Karpathy's `train` includes `restval`.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import TaskError
from ..base import CAPTION
from .common import (
    DatasetFormat,
    Item,
    RealTask,
    _dir,
    _find_image,
    _ident,
    _need,
    _records,
    _subsample,
    read_json,
    register,
)


def load_coco_captions(root: Path, split: str, limit: int | None, seed: int, size: int, resize: str) -> RealTask:
    _dir(root, "coco-captions", "dataset_coco.json (Karpathy split) and the COCO images")
    path = root / "dataset_coco.json"
    if not path.exists():
        found = sorted(root.glob("*.json"))
        if len(found) != 1:
            raise TaskError(f"coco-captions: no dataset_coco.json in {root}")
        path = found[0]
    recs = _records(read_json(path), "images", path)
    for i, r in enumerate(recs):
        where = lambda: f"{path.name}: image {i}{_ident(r, ['cocoid', 'imgid', 'filename'])}"  # noqa: E731
        _need(r, ("filename", "split", "sentences"), where)
        if not r["sentences"]:
            raise TaskError(f"{where()} has no sentences")
        for j, s in enumerate(r["sentences"]):
            if not isinstance(s, dict) or ("raw" not in s and "tokens" not in s):
                raise TaskError(f"{where()} sentence {j} has no 'raw' or 'tokens' field")
    ok = {"train": ("train", "restval")}.get(split, (split,))
    sel = [r for r in recs if r["split"] in ok]
    if not sel:
        raise TaskError(
            f"coco-captions: no images in split {split!r} in {path.name} "
            f"(it has: {', '.join(sorted({str(r['split']) for r in recs}))})"
        )
    items = []
    for i in _subsample(len(sel), limit, seed):
        r = sel[i]
        fp = str(r.get("filepath", ""))
        folders = [root / fp, root / "images" / fp, root / "images", root]
        img = _find_image(root, [r["filename"]], folders, f"coco-captions image {r.get('cocoid', r['filename'])}")
        refs = tuple(" ".join(str(s["raw"]).split()) if "raw" in s else " ".join(s["tokens"]) for s in r["sentences"])
        items.append(
            Item(
                id=str(r.get("cocoid", r.get("imgid", r["filename"]))),
                image=img,
                text="what does the image describe?",
                target=refs[0],
                refs=refs,
            )
        )
    return RealTask(
        name="coco-captions",
        kind=CAPTION,
        split=split,
        metric="cider",
        answers=None,
        image_size=size,
        seed=seed,
        items=items,
        resize=resize,
        source=str(root),
    )


register(DatasetFormat("coco-captions", load_coco_captions, CAPTION, "Prompt"))
