"""VQAv2 in its official format: `--task vqav2:DIR`, closed answers scored by VQA soft accuracy.

DIR holds `*questions*.json` + `*annotations*.json` (the official VQAv2 files) and the COCO
images (`DIR/<subtype>/`, `DIR/images/<subtype>/`, `DIR/images/` or DIR;
`COCO_<subtype>_<id:012d>.jpg` or `<id:012d>.jpg`); optionally `answer_list.json`.

* Questions are the instructions as they are.
* Candidates: `answer_list.json` (a JSON list, as BLIP's evaluation uses; dump a model's
  id2label there to score exactly its answers) when DIR has one, else the VQA_VOCAB (3129,
  the size of the standard VQAv2 answer vocabulary) most frequent normalised
  `multiple_choice_answer`s of the file (all of them if fewer; ties alphabetical), so the
  candidate set never depends on --limit. The label is the candidate with the highest soft
  accuracy (the consensus answer first); a question none of whose answers is a candidate
  has label -1 and scores 0 for every prediction.
* Score: VQA soft accuracy min(#humans who gave the answer / 3, 1), answers normalised as in
  the official evaluation (lower case, punctuation, articles, number words -> digits); the
  official script also averages it over the ten leave-one-annotator-out subsets, which
  changes it by at most 1/30 on the usual 10 answers.
* Split: the single questions/annotations pair of DIR, or the one whose file names contain
  --split (VQAv2 test has no public annotations: evaluate on val).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ...errors import TaskError
from ..base import CLOSED, Example
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

VQA_VOCAB = 3129  # candidates kept without answer_list.json: the standard VQAv2 answer vocabulary size

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


@dataclass(frozen=True)
class VQAExample(Example):
    """A VQAv2 example: `human_answers` are the (usually ten) annotators' answers."""

    human_answers: tuple[str, ...] = ()


@dataclass
class VQAv2Task(RealTask):
    """A VQAv2 task: each example keeps its annotators' answers, and a prediction scores its soft accuracy."""

    def make_example(self, it: Item, kw: dict) -> Example:
        return VQAExample(**kw, human_answers=it.human)

    def example_scores(self, examples, predictions) -> np.ndarray:
        assert self.answers is not None
        return np.array(
            [
                vqa_accuracy(self.answers[int(p)], getattr(ex, "human_answers", ()) or (ex.target,))
                for ex, p in zip(examples, predictions)
            ]
        )


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


def _read(root: Path, split: str) -> tuple[dict, dict, list, list, dict]:
    """(questions JSON, annotations JSON, the questions, the annotations, annotation by question id), every
    record checked."""
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
    return qdata, adata, questions, anns, by_qid


def _consensus(a: dict) -> str:
    """The annotation's multiple-choice answer, else its most frequent one (ties: the larger string)."""
    mc = a.get("multiple_choice_answer")
    if mc is not None:
        return normalize_answer(mc)
    counts: dict[str, int] = {}
    for h in a["answers"]:
        k = normalize_answer(h["answer"])
        counts[k] = counts.get(k, 0) + 1
    return max(counts, key=lambda k: (counts[k], k))


def _candidates(root: Path, anns) -> list[str]:
    """answer_list.json's answers, else the VQA_VOCAB most frequent consensus answers (sorted)."""
    alist = root / "answer_list.json"
    if alist.exists():
        cands = read_json(alist)
        if not isinstance(cands, list) or not all(isinstance(c, str) for c in cands):
            raise TaskError(f"{alist} must be a JSON list of answer strings")
        return list(dict.fromkeys(normalize_answer(c) for c in cands))
    counts: dict[str, int] = {}
    for a in anns:
        c = _consensus(a)
        counts[c] = counts.get(c, 0) + 1
    return sorted(sorted(counts, key=lambda k: (-counts[k], k))[:VQA_VOCAB])


def _label(cons: str, human: tuple[str, ...], index: dict) -> int:
    """The candidate with the highest soft accuracy, the consensus answer first (-1: none scores)."""
    best, best_score = index.get(cons, -1), vqa_accuracy(cons, human) if cons in index else -1.0
    for h in dict.fromkeys(normalize_answer(x) for x in human):
        if h in index and vqa_accuracy(h, human) > best_score:
            best, best_score = index[h], vqa_accuracy(h, human)
    return best if best_score > 0 else -1


def load_vqav2(root: Path, split: str, limit: int | None, seed: int, size: int, resize: str) -> RealTask:
    _dir(root, "vqav2", "the VQAv2 questions and annotations JSON files")
    qdata, adata, questions, anns, by_qid = _read(root, split)
    answers = _candidates(root, anns)
    index = {a: k for k, a in enumerate(answers)}
    subtype = str(qdata.get("data_subtype") or adata.get("data_subtype") or split)
    folders = [root / subtype, root / "images" / subtype, root / "images", root]
    items = []
    for i in _subsample(len(questions), limit, seed):
        q = questions[i]
        a = by_qid[q["question_id"]]
        human = tuple(str(h["answer"]) for h in a["answers"])
        cons = _consensus(a)
        iid = int(q["image_id"])
        img = _find_image(
            root,
            [f"COCO_{subtype}_{iid:012d}.jpg", f"{iid:012d}.jpg", f"{iid}.jpg"],
            folders,
            f"vqav2 question {q['question_id']}",
        )
        text = str(q["question"]).strip()
        qtype = str(a.get("answer_type", ""))
        items.append(Item(str(q["question_id"]), img, text, cons, _label(cons, human, index), qtype=qtype, human=human))
    return VQAv2Task(
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


register(DatasetFormat("vqav2", load_vqav2, CLOSED, "Question"))
