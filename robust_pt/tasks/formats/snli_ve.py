"""SNLI-VE in its official format: `--task snli-ve:DIR`, closed answers yes / no / maybe.

DIR holds `snli_ve_<split>.jsonl` (dev for val; one JSON object a line: Flickr30K_ID,
sentence2, gold_label) and the Flickr30k images (`<id>.jpg` in `DIR/flickr30k_images/`,
`DIR/Flickr30K/flickr30k_images/`, `DIR/images/` or DIR). The instruction is
`does the image describe " <hypothesis> "?` with candidates yes / no / maybe for
entailment / contradiction / neutral (the gold label is kept as `qtype`); accuracy.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import TaskError
from ..base import CLOSED
from .common import (
    DatasetFormat,
    Item,
    RealTask,
    _dir,
    _find_image,
    _ident,
    _need,
    _subsample,
    read_jsonl,
    register,
)

VE_CANDIDATES = {"entailment": "yes", "contradiction": "no", "neutral": "maybe"}
_VE_SPLIT = {"val": "dev", "dev": "dev", "test": "test", "train": "train"}


def load_snli_ve(root: Path, split: str, limit: int | None, seed: int, size: int, resize: str) -> RealTask:
    _dir(root, "snli-ve", "snli_ve_<split>.jsonl and the Flickr30k images")
    files = sorted(root.glob("*.jsonl"))
    want = _VE_SPLIT.get(split, split)
    hits = [f for f in files if f.stem.lower().endswith(want)]
    if len(hits) == 1:
        path = hits[0]
    elif len(files) == 1 and not hits:
        path = files[0]
    else:
        raise TaskError(
            f"snli-ve: no single snli_ve_{want}.jsonl in {root} (found: "
            f"{', '.join(f.name for f in files) or 'no .jsonl files'})"
        )
    recs = read_jsonl(path)
    for n, r in enumerate(recs, 1):
        _need(r, ("Flickr30K_ID", "sentence2", "gold_label"), lambda: f"{path.name}: line {n}{_ident(r, ['pairID'])}")
        if r["gold_label"] not in VE_CANDIDATES:
            raise TaskError(
                f"{path.name}: line {n}{_ident(r, ['pairID'])} has gold_label {r['gold_label']!r}; "
                f"expected one of {', '.join(VE_CANDIDATES)}"
            )
    answers = ["yes", "no", "maybe"]
    folders = [
        root / "flickr30k_images",
        root / "Flickr30K" / "flickr30k_images",
        root / "Flickr30k" / "flickr30k_images",
        root / "images",
        root,
    ]
    items = []
    for i in _subsample(len(recs), limit, seed):
        r = recs[i]
        fid = str(r["Flickr30K_ID"])
        img = _find_image(root, [f"{fid}.jpg", f"{fid}.png"], folders, f"snli-ve {path.name} line {i + 1}")
        ans = VE_CANDIDATES[r["gold_label"]]
        hyp = " ".join(str(r["sentence2"]).split())
        items.append(
            Item(
                id=str(r.get("pairID", f"{fid}:{i}")),
                image=img,
                text=f'does the image describe " {hyp} "?',
                target=ans,
                label=answers.index(ans),
                qtype=str(r["gold_label"]),
            )
        )
    return RealTask(
        name="snli-ve",
        kind=CLOSED,
        split=want,
        metric="accuracy",
        answers=answers,
        image_size=size,
        seed=seed,
        items=items,
        resize=resize,
        source=str(root),
    )


register(DatasetFormat("snli-ve", load_snli_ve, CLOSED, "Hypothesis"))
