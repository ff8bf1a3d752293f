"""Real datasets from local files, in their official formats: `--task NAME:DIR`.

    load_task("vqav2:data/vqa", split="val", limit=500, seed=0, size=384)

| name | DIR holds | kind, metric |
|---|---|---|
| vqav2 | `*questions*.json` + `*annotations*.json` (the official VQAv2 files) and the COCO images (`DIR/<subtype>/`, `DIR/images/<subtype>/`, `DIR/images/` or DIR; `COCO_<subtype>_<id:012d>.jpg` or `<id:012d>.jpg`); optional `answer_list.json` | closed; VQA soft accuracy min(#humans who gave the answer / 3, 1) |
| snli-ve | `snli_ve_<split>.jsonl` (dev for val; one JSON object a line: Flickr30K_ID, sentence2, gold_label) and the Flickr30k images (`<id>.jpg` in `DIR/flickr30k_images/`, `DIR/Flickr30K/flickr30k_images/`, `DIR/images/` or DIR) | closed; accuracy |
| refcoco, refcoco+, refcocog | `refs(<split_by>).json` (the distributed `.p` converted once; pickles are refused), `instances.json`, and the COCO train2014 images (`DIR/images/train2014/`, `DIR/train2014/`, `DIR/images/` or DIR) | ground; Acc@0.5 |
| coco-captions | `dataset_coco.json` (Karpathy split) and the COCO images (`DIR/<filepath>/<filename>`, `DIR/images/...` or DIR) | caption; CIDEr-D, BLEU-4 |

Conventions:

* Questions become the same instructions as the built-in tasks, so the built-in model and
  the Hugging Face models read them alike: VQAv2 questions as they are; SNLI-VE
  `does the image describe " <hypothesis> "?` with candidates yes / no / maybe for
  entailment / contradiction / neutral (the gold label is kept as `qtype`); RefCOCO
  `which region does the text " <expression> " describe?` (one example per expression,
  target: the box as OFA location tokens); captions `what does the image describe?`.
* VQAv2 candidates: `answer_list.json` (a JSON list, as BLIP's evaluation uses; dump a
  model's id2label there to score exactly its answers) when DIR has one, else the
  VQA_VOCAB (3129, the size of the standard VQAv2 answer vocabulary) most frequent
  normalised `multiple_choice_answer`s of the file (all of them if fewer; ties
  alphabetical), so the candidate set never depends on --limit. The label is the
  candidate with the highest soft accuracy (the consensus answer first); a question none
  of whose answers is a candidate has label -1 and scores 0 for every prediction. Answers are normalised as in the official evaluation
  (lower case, punctuation, articles, number words -> digits) before counting humans;
  the score is the formula above (the official script also averages it over the ten
  leave-one-annotator-out subsets, which changes it by at most 1/30 on the usual 10 answers).
* Splits: VQAv2 uses the single questions/annotations pair of DIR, or the one whose file
  names contain --split (VQAv2 test has no public annotations: evaluate on val). SNLI-VE
  val reads the dev file. RefCOCO's `test` means every test* split (testA, testB, test);
  Karpathy's `train` includes `restval`.
* --limit N takes a seeded random subsample of N examples (seed: `seed`), kept in file
  order; without it every example of the split, in file order.
* Images are resized to the model's square input resolution before the attack, as its
  processor does: "squash" (BLIP; ViLT, whose processor keeps the aspect ratio and pads,
  gets the square so every example has the same eps-ball) or "crop" (CLIP: shortest edge
  to S, centre crop). Boxes follow the same transform. Bicubic resampling.
* A record without a field the loader needs is one error line that names the file and the
  first offending record.
* robust-pt never unpickles a file (safetensors and JSON only): RefCOCO's refs pickle
  must be converted to JSON once (the error says how); `refs(<split_by>).json` loads.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import TaskError
from .base import CAPTION, CLOSED, GROUND, Example, Task

RESIZE_MODES = ("squash", "crop")
VQA_VOCAB = 3129  # candidates kept without answer_list.json: the standard VQAv2 answer vocabulary size
VE_CANDIDATES = {"entailment": "yes", "contradiction": "no", "neutral": "maybe"}


# ============================================================================ VQA accuracy

_CONTRACTIONS = {
    "dont": "don't",
    "doesnt": "doesn't",
    "isnt": "isn't",
    "arent": "aren't",
    "cant": "can't",
    "wont": "won't",
    "im": "i'm",
    "ive": "i've",
    "youre": "you're",
    "thats": "that's",
    "whats": "what's",
    "wasnt": "wasn't",
    "didnt": "didn't",
    "hes": "he's",
    "shes": "she's",
}
_NUMBERS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
_ARTICLES = {"a", "an", "the"}
_PUNCT = re.compile(r"[;/\[\]\"{}()=+\\_\-><@`,?!*#%^&$|~:]")
_PERIOD = re.compile(r"(?<!\d)\.(?!\d)")


def normalize_answer(ans: str) -> str:
    """The VQA evaluation's answer normalisation (punctuation, articles, number words, contractions)."""
    a = str(ans).replace("\n", " ").replace("\t", " ").strip().lower()
    a = _PUNCT.sub(" ", a)
    a = _PERIOD.sub("", a)
    words = []
    for w in a.split():
        w = _NUMBERS.get(w, w)
        if w in _ARTICLES:
            continue
        words.append(_CONTRACTIONS.get(w, w))
    return " ".join(words)


def vqa_accuracy(pred: str, human_answers: Sequence[str]) -> float:
    """VQA soft accuracy: min(#human answers equal to pred / 3, 1), after normalisation."""
    p = normalize_answer(pred)
    n = sum(1 for h in human_answers if normalize_answer(h) == p)
    return min(n / 3.0, 1.0)


# ============================================================================ tasks


@dataclass(frozen=True)
class VQAExample(Example):
    """A VQAv2 example: `human_answers` are the (usually ten) annotators' answers."""

    human_answers: tuple[str, ...] = ()


@dataclass
class _Item:
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
        it: _Item = self.items[int(i)]
        arr, (w, h) = load_image(str(it.image), self.image_size, self.resize)
        image = arr.astype(np.float32).transpose(2, 0, 1) / 255.0
        box = None if it.box is None else transform_box(it.box, (w, h), self.image_size, self.resize)
        target = it.target
        if self.kind == GROUND and box is not None:
            from .metrics import box_to_tokens

            target = box_to_tokens(box, self.image_size)
        kw = dict(
            id=it.id, image=image, text=it.text, target=target, label=it.label, refs=it.refs, box=box, qtype=it.qtype
        )
        if it.human:
            return VQAExample(**kw, human_answers=it.human)
        return Example(**kw)

    def example_scores(self, examples, predictions) -> np.ndarray:
        if self.name == "vqav2":
            assert self.answers is not None
            return np.array(
                [
                    vqa_accuracy(self.answers[int(p)], getattr(ex, "human_answers", ()) or (ex.target,))
                    for ex, p in zip(examples, predictions)
                ]
            )
        return super().example_scores(examples, predictions)


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
    if not path.exists():
        raise TaskError(f"{name}: {path} does not exist; pass the directory that holds {holds}")
    if not path.is_dir():
        raise TaskError(f"{name}: {path} is not a directory; pass the directory that holds {holds}")
    return path


# ============================================================================ VQAv2


def _pick_pair(files: list[Path], split: str, what: str, root: Path) -> Path:
    if not files:
        raise TaskError(f"vqav2: no {what} file (*{what}*.json) in {root}")
    if len(files) == 1:
        return files[0]
    hits = [f for f in files if split.lower() in f.name.lower()]
    if len(hits) != 1:
        raise TaskError(
            f"vqav2: {len(files)} {what} files in {root} ({', '.join(f.name for f in files)}) and "
            f"{'none' if not hits else 'several'} match split {split!r}; pass --split (train, val)"
        )
    return hits[0]


def load_vqav2(root: Path, split: str, limit: int | None, seed: int, size: int, resize: str) -> RealTask:
    _dir(root, "vqav2", "the VQAv2 questions and annotations JSON files")
    qfile = _pick_pair(sorted(root.glob("*questions*.json")), split, "questions", root)
    afile = _pick_pair(sorted(root.glob("*annotations*.json")), split, "annotations", root)
    qdata, adata = read_json(qfile), read_json(afile)
    questions = _records(qdata, "questions", qfile)
    anns = _records(adata, "annotations", afile)
    by_qid: dict = {}
    for i, a in enumerate(anns):
        _need(a, ("question_id", "answers"), lambda: f"{afile.name}: annotation {i}{_ident(a, ['question_id'])}")
        if not isinstance(a["answers"], list) or not a["answers"]:
            raise TaskError(
                f"{afile.name}: annotation {i} (question_id {a['question_id']}) has an empty 'answers' list"
            )
        for j, h in enumerate(a["answers"]):
            _need(h, ("answer",), lambda: f"{afile.name}: annotation {i} (question_id {a['question_id']}) answer {j}")
        by_qid[a["question_id"]] = a
    for i, q in enumerate(questions):
        _need(
            q,
            ("question_id", "image_id", "question"),
            lambda: f"{qfile.name}: question {i}{_ident(q, ['question_id'])}",
        )
        if q["question_id"] not in by_qid:
            raise TaskError(
                f"{qfile.name}: question {i} (question_id {q['question_id']}) has no annotation in "
                f"{afile.name} (VQAv2 test has no public annotations: evaluate on val)"
            )

    def consensus(a) -> str:
        mc = a.get("multiple_choice_answer")
        if mc is not None:
            return normalize_answer(mc)
        counts: dict[str, int] = {}
        for h in a["answers"]:
            k = normalize_answer(h["answer"])
            counts[k] = counts.get(k, 0) + 1
        return max(counts, key=lambda k: (counts[k], k))

    alist = root / "answer_list.json"
    if alist.exists():
        cands = read_json(alist)
        if not isinstance(cands, list) or not all(isinstance(c, str) for c in cands):
            raise TaskError(f"{alist} must be a JSON list of answer strings")
        answers = list(dict.fromkeys(normalize_answer(c) for c in cands))
    else:
        counts: dict[str, int] = {}
        for a in anns:
            c = consensus(a)
            counts[c] = counts.get(c, 0) + 1
        answers = sorted(sorted(counts, key=lambda k: (-counts[k], k))[:VQA_VOCAB])
    index = {a: k for k, a in enumerate(answers)}
    subtype = str(qdata.get("data_subtype") or adata.get("data_subtype") or split)
    folders = [root / subtype, root / "images" / subtype, root / "images", root]
    items = []
    for i in _subsample(len(questions), limit, seed):
        q = questions[i]
        a = by_qid[q["question_id"]]
        human = tuple(str(h["answer"]) for h in a["answers"])
        cons = consensus(a)
        # label: the candidate with the highest soft accuracy, the consensus answer first
        best, best_score = index.get(cons, -1), vqa_accuracy(cons, human) if cons in index else -1.0
        for h in dict.fromkeys(normalize_answer(x) for x in human):
            if h in index and vqa_accuracy(h, human) > best_score:
                best, best_score = index[h], vqa_accuracy(h, human)
        if best_score <= 0:
            best = -1
        iid = int(q["image_id"])
        img = _find_image(
            root,
            [f"COCO_{subtype}_{iid:012d}.jpg", f"{iid:012d}.jpg", f"{iid}.jpg"],
            folders,
            f"vqav2 question {q['question_id']}",
        )
        items.append(
            _Item(
                id=str(q["question_id"]),
                image=img,
                text=str(q["question"]).strip(),
                target=cons,
                label=best,
                qtype=str(a.get("answer_type", "")),
                human=human,
            )
        )
    return RealTask(
        name="vqav2",
        kind=CLOSED,
        split=subtype,
        metric="vqa-accuracy",
        answers=answers,
        image_size=size,
        seed=seed,
        items=items,
        resize=resize,
        source=str(root),
    )


# ============================================================================ SNLI-VE

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
    recs = _read_jsonl_cached(_stat_key(path))
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
            _Item(
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


# ============================================================================ RefCOCO

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
            _Item(
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


# ============================================================================ COCO captions (Karpathy)


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
            _Item(
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


# ============================================================================ entry point

LOADERS: dict[str, Callable[..., RealTask]] = {
    "vqav2": load_vqav2,
    "snli-ve": load_snli_ve,
    "refcoco": load_refcoco,
    "refcoco+": lambda *a: load_refcoco(*a, name="refcoco+"),
    "refcocog": lambda *a: load_refcoco(*a, name="refcocog"),
    "coco-captions": load_coco_captions,
}
FORMATS: tuple[str, ...] = tuple(LOADERS)


def is_real(name: str) -> bool:
    return ":" in str(name)


def load_real(
    spec: str, split: str = "test", limit: int | None = None, seed: int = 0, size: int = 64, resize: str = "squash"
) -> RealTask:
    """A real-dataset task from "NAME:DIR" (see the module docstring)."""
    name, _, path = str(spec).partition(":")
    name = name.strip().lower()
    if name not in LOADERS:
        raise TaskError(
            f"unknown dataset format {name!r} in {spec!r}; use one of: {', '.join(f'{n}:DIR' for n in FORMATS)}"
        )
    if not path:
        raise TaskError(f"{spec!r} names no directory; use {name}:DIR")
    if resize not in RESIZE_MODES:
        raise TaskError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {resize!r}")
    root = Path(os.path.expanduser(path))
    task = LOADERS[name](root, split, limit, seed, size, resize)
    if len(task) == 0:
        raise TaskError(f"{spec}: split {split!r} has no examples")
    return task
