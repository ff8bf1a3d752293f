"""Real datasets from local files, in their official formats: `--task NAME:DIR`, one module per format.

    load_task("vqav2:data/vqa", split="val", limit=500, seed=0, size=384)

| name | DIR holds | kind, metric |
|---|---|---|
| vqav2 | `*questions*.json` + `*annotations*.json` (the official VQAv2 files) and the COCO images (`DIR/<subtype>/`, `DIR/images/<subtype>/`, `DIR/images/` or DIR; `COCO_<subtype>_<id:012d>.jpg` or `<id:012d>.jpg`); optional `answer_list.json` | closed; VQA soft accuracy min(#humans who gave the answer / 3, 1) |
| snli-ve | `snli_ve_<split>.jsonl` (dev for val; one JSON object a line: Flickr30K_ID, sentence2, gold_label) and the Flickr30k images (`<id>.jpg` in `DIR/flickr30k_images/`, `DIR/Flickr30K/flickr30k_images/`, `DIR/images/` or DIR) | closed; accuracy |
| refcoco, refcoco+, refcocog | `refs(<split_by>).json` (the distributed `.p` converted once; pickles are refused), `instances.json`, and the COCO train2014 images (`DIR/images/train2014/`, `DIR/train2014/`, `DIR/images/` or DIR) | ground; Acc@0.5 |
| coco-captions | `dataset_coco.json` (Karpathy split) and the COCO images (`DIR/<filepath>/<filename>`, `DIR/images/...` or DIR) | caption; CIDEr-D, BLEU-4 |
| imagefolder | one folder of images per class (`DIR/<split>/<folder>/` or `DIR/<folder>/`), optional `classnames.txt` ("<folder> <class name>" lines, CoOp's) and `template.txt` (default "a photo of a {}.") | classify; accuracy (imagefolder.py) |

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

A new format is one module here that reads its files into `Item`s of a `RealTask` and
calls `register(DatasetFormat(NAME, load, KIND, TEXT_LABEL))` (formats/common.py), plus
its import below; `--task NAME:DIR`, `load_task` and recipes then accept it.
"""

from __future__ import annotations

import os
from pathlib import Path

from ...errors import TaskError

# isort: off
# each registers its format, in the order they are listed
from . import vqav2, snli_ve, refcoco, coco_captions, imagefolder  # noqa: F401

# isort: on
from .common import (
    RESIZE_MODES,
    DatasetFormat,
    Item,
    RealTask,
    load_image,
    lookup,
    names,
    read_json,
    register,
    transform_box,
)
from .snli_ve import VE_CANDIDATES, load_snli_ve
from .vqav2 import VQA_VOCAB, VQAExample, load_vqav2, normalize_answer, vqa_accuracy

#: the built-in formats' names
FORMATS: tuple[str, ...] = names()

__all__ = [
    "FORMATS",
    "RESIZE_MODES",
    "VE_CANDIDATES",
    "VQA_VOCAB",
    "DatasetFormat",
    "Item",
    "RealTask",
    "VQAExample",
    "is_real",
    "load_image",
    "load_real",
    "load_snli_ve",
    "load_vqav2",
    "lookup",
    "names",
    "normalize_answer",
    "read_json",
    "register",
    "transform_box",
    "vqa_accuracy",
]


def is_real(name: str) -> bool:
    """Whether a task name names a dataset directory ("NAME:DIR")."""
    return ":" in str(name)


def load_real(
    spec: str, split: str = "test", limit: int | None = None, seed: int = 0, size: int = 64, resize: str = "squash"
) -> RealTask:
    """A real-dataset task from "NAME:DIR" (see the module docstring)."""
    from ..named import dataset_spec

    name, path = dataset_spec(spec) or (str(spec).strip().lower(), "")
    fmt = lookup(name)
    if fmt is None:
        raise TaskError(
            f"unknown dataset format {name!r} in {spec!r}; use one of: {', '.join(f'{n}:DIR' for n in names())}"
        )
    if not path:
        raise TaskError(f"{spec!r} names no directory; use {name}:DIR")
    if resize not in RESIZE_MODES:
        raise TaskError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {resize!r}")
    root = Path(os.path.expanduser(path))
    task = fmt.load(root, split, limit, seed, size, resize)
    if len(task) == 0:
        raise TaskError(f"{spec}: split {split!r} has no examples")
    return task
