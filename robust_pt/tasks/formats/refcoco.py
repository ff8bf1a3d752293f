"""RefCOCO, RefCOCO+ and RefCOCOg in their official format: `--task refcoco:DIR` (refcoco+, refcocog), grounding.

DIR holds `refs(<split_by>).json` (the distributed `.p` converted once; pickles are
refused: robust-pt never unpickles a file, the error says how to convert it),
`instances.json`, and the COCO train2014 images (`DIR/images/train2014/`, `DIR/train2014/`,
`DIR/images/` or DIR). One example per expression, the instruction
`which region does the text " <expression> " describe?`, the target the box as OFA
location tokens; Acc@0.5. The split `test` means every test* split (testA, testB, test).
"""

from __future__ import annotations

from pathlib import Path

from ...errors import TaskError
from ..base import GROUND
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

_SPLIT_BY = {"refcoco": "unc", "refcoco+": "unc", "refcocog": "umd"}


def _refs_file(root: Path, name: str) -> Path:
    files = sorted([*root.glob("refs*.p"), *root.glob("refs*.json")])
    if not files:
        raise TaskError(f"{name}: no refs file (refs(<split_by>).p or refs*.json) in {root}")
    if len(files) == 1:
        return files[0]
    pref = [f for f in files if f"({_SPLIT_BY[name]})" in f.name]
    if pref:
        return sorted(pref, key=lambda f: f.suffix != ".json")[0]
    raise TaskError(f"{name}: several refs files in {root} ({', '.join(f.name for f in files)}); keep one")


def load_refcoco(
    root: Path, split: str, limit: int | None, seed: int, size: int, resize: str, name: str = "refcoco"
) -> RealTask:
    _dir(root, name, "the refs file, instances.json and the COCO train2014 images")
    rpath = _refs_file(root, name)
    if rpath.suffix != ".json":
        raise TaskError(
            f"{rpath}: robust-pt never unpickles files; convert it to JSON once with "
            f"python -c \"import json,pickle; json.dump(pickle.load(open('{rpath.name}','rb')), "
            f"open('{rpath.stem}.json','w'))\" (only on a file you trust), then remove the .p"
        )
    refs = read_json(rpath)
    if not isinstance(refs, list):
        raise TaskError(f"{rpath} must hold a list of refs")
    ipath = root / "instances.json"
    if not ipath.exists():
        raise TaskError(f"{name}: no instances.json in {root}")
    inst = read_json(ipath)
    images = {}
    for i, im in enumerate(_records(inst, "images", ipath)):
        _need(im, ("id", "file_name"), lambda: f"{ipath.name}: image {i}{_ident(im, ['id'])}")
        images[im["id"]] = im
    boxes = {}
    for i, a in enumerate(_records(inst, "annotations", ipath)):
        _need(a, ("id", "bbox"), lambda: f"{ipath.name}: annotation {i}{_ident(a, ['id'])}")
        if not isinstance(a["bbox"], list) or len(a["bbox"]) != 4:
            raise TaskError(f"{ipath.name}: annotation {i} (id {a['id']}) has a bbox that is not [x, y, w, h]")
        boxes[a["id"]] = a["bbox"]
    for i, r in enumerate(refs):
        where = lambda: f"{rpath.name}: ref {i}{_ident(r, ['ref_id'])}"  # noqa: E731
        _need(r, ("ref_id", "ann_id", "image_id", "split", "sentences"), where)
        for j, s in enumerate(r["sentences"]):
            _need(s, ("sent",), lambda: f"{where()} sentence {j}")
        if r["ann_id"] not in boxes:
            raise TaskError(f"{where()} names ann_id {r['ann_id']}, which {ipath.name} does not have")
        if r["image_id"] not in images:
            raise TaskError(f"{where()} names image_id {r['image_id']}, which {ipath.name} does not have")

    def in_split(s: str) -> bool:
        return s.startswith("test") if split == "test" else s == split

    pairs = [(r, s) for r in refs if in_split(str(r["split"])) for s in r["sentences"]]
    if not pairs:
        have = sorted({str(r["split"]) for r in refs})
        raise TaskError(f"{name}: no refs in split {split!r} in {rpath.name} (it has: {', '.join(have)})")
    folders = [root / "images" / "train2014", root / "train2014", root / "images", root]
    items = []
    for i in _subsample(len(pairs), limit, seed):
        r, s = pairs[i]
        x, y, w, h = (float(v) for v in boxes[r["ann_id"]])
        img = _find_image(root, [images[r["image_id"]]["file_name"]], folders, f"{name} ref {r['ref_id']}")
        sent = " ".join(str(s["sent"]).split())
        items.append(
            Item(
                id=f"{r['ref_id']}:{s.get('sent_id', i)}",
                image=img,
                text=f'which region does the text " {sent} " describe?',
                box=(x, y, x + w, y + h),
                qtype=str(r["split"]),
            )
        )
    return RealTask(
        name=name,
        kind=GROUND,
        split=split,
        metric="acc@0.5",
        answers=None,
        image_size=size,
        seed=seed,
        items=items,
        resize=resize,
        source=str(root),
    )


for _name in _SPLIT_BY:
    register(
        DatasetFormat(
            _name,
            lambda *a, name=_name: load_refcoco(*a, name=name),
            GROUND,
            "Expression",
        )
    )
