"""Real dataset formats from local files (robust_pt/tasks/formats/).

Each test writes a tiny dataset in the official format (images generated here and saved
as JPEG or PNG with PIL) and checks loading, splits, the seeded subsample, the resize
and box transforms and the metrics (VQA soft accuracy, Acc@0.5, CIDEr-D, BLEU-4)
against hand computations; bad files give one line naming the first offending record.
The `write_*` helpers are reused by tests/test_hf_models.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from robust_pt.errors import TaskError
from robust_pt.tasks import load_task
from robust_pt.tasks.formats import normalize_answer, transform_box, vqa_accuracy
from robust_pt.tasks.metrics import bleu4, box_to_tokens, cider_per_example

RED, BLUE, GREEN = (230, 20, 20), (20, 20, 230), (20, 200, 20)


def image(w: int, h: int, split_colours=(RED, BLUE)) -> "object":
    """A PIL image: left half one colour, right half another, with a green square in the middle-top."""
    from PIL import Image

    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2] = split_colours[0]
    a[:, w // 2 :] = split_colours[1]
    a[: h // 4, w // 2 - 2 : w // 2 + 2] = GREEN
    return Image.fromarray(a)


# ----------------------------------------------------------------------------- writers (official formats)

VQA_HUMANS = {  # question_id -> the ten annotators' answers
    11: ["red", "red", "blue", "blue", "blue", "blue", "green", "yellow", "yellow", "the yellow"],
    12: ["two", "2", "2", "3", "two", "2", "2", "2", "two", "2"],
    21: ["yes"] * 9 + ["no"],
    22: ["circle"] * 2 + ["square"] * 8,
    31: ["no"] * 10,
}


def write_vqav2(root: Path, subtype: str = "val2014", drop: tuple[int, str] | None = None) -> Path:
    """questions + annotations JSON (VQAv2's layout) and COCO_<subtype>_<id>.jpg images in root/<subtype>/."""
    (root / subtype).mkdir(parents=True, exist_ok=True)
    for iid, (w, h) in {1: (40, 30), 2: (32, 32), 3: (24, 36)}.items():
        image(w, h).save(root / subtype / f"COCO_{subtype}_{iid:012d}.jpg", quality=95)
    qs = [
        (11, 1, "what color is the circle?"),
        (12, 1, "how many objects are there?"),
        (21, 2, "is there a circle?"),
        (22, 2, "what shape is the object?"),
        (31, 3, "is it red?"),
    ]
    questions = [{"image_id": iid, "question": q, "question_id": qid} for qid, iid, q in qs]
    if drop is not None:
        del questions[drop[0]][drop[1]]
    types = {11: "other", 12: "number", 21: "yes/no", 22: "other", 31: "yes/no"}
    mc = {11: "blue", 12: "2", 21: "yes", 22: "square", 31: "no"}
    anns = [
        {
            "question_type": "what",
            "multiple_choice_answer": mc[qid],
            "image_id": iid,
            "answer_type": types[qid],
            "question_id": qid,
            "answers": [
                {"answer": a, "answer_confidence": "yes", "answer_id": k + 1} for k, a in enumerate(VQA_HUMANS[qid])
            ],
        }
        for qid, iid, _ in qs
    ]
    info = {"description": "fixture"}
    (root / f"v2_OpenEnded_mscoco_{subtype}_questions.json").write_text(
        json.dumps(
            {
                "info": info,
                "task_type": "Open-Ended",
                "data_type": "mscoco",
                "license": {},
                "data_subtype": subtype,
                "questions": questions,
            }
        )
    )
    (root / f"v2_mscoco_{subtype}_annotations.json").write_text(
        json.dumps({"info": info, "license": {}, "data_subtype": subtype, "annotations": anns})
    )
    return root


def write_snli_ve(root: Path, split: str = "test", drop_line: int | None = None) -> Path:
    (root / "flickr30k_images").mkdir(parents=True, exist_ok=True)
    for fid in (1000092795, 10002456):
        image(36, 28).save(root / "flickr30k_images" / f"{fid}.jpg", quality=95)
    rows = [
        (1000092795, "two young guys are outside", "entailment"),
        (1000092795, "the men are sleeping", "contradiction"),
        (10002456, "a man is wearing a hat", "neutral"),
    ]
    lines = []
    for n, (fid, hyp, gold) in enumerate(rows):
        rec = {
            "annotator_labels": [gold],
            "captionID": f"{fid}.jpg#0",
            "gold_label": gold,
            "pairID": f"{fid}.jpg#0r{n}",
            "sentence1": "two men stand outside",
            "sentence2": hyp,
            "Flickr30K_ID": str(fid),
        }
        if drop_line == n:
            del rec["gold_label"]
        lines.append(json.dumps(rec))
    (root / f"snli_ve_{split}.jsonl").write_text("\n".join(lines) + "\n")
    return root


def write_refcoco(root: Path, as_json: bool = True, drop: str | None = None) -> Path:
    """refs(unc).json (or the distributed refs(unc).p pickle, which must be refused), instances.json, PNGs."""
    (root / "images" / "train2014").mkdir(parents=True, exist_ok=True)
    image(40, 20).save(root / "images" / "train2014" / "COCO_train2014_000000000007.png")
    image(32, 32).save(root / "images" / "train2014" / "COCO_train2014_000000000008.png")
    refs = [
        {
            "ref_id": 1,
            "ann_id": 100,
            "image_id": 7,
            "split": "testA",
            "category_id": 1,
            "sent_ids": [1, 2],
            "file_name": "COCO_train2014_000000000007_100.jpg",
            "sentences": [
                {"sent": "left red part", "raw": "Left red part", "sent_id": 1, "tokens": []},
                {"sent": "the red one", "raw": "the red one", "sent_id": 2, "tokens": []},
            ],
        },
        {
            "ref_id": 2,
            "ann_id": 101,
            "image_id": 8,
            "split": "testB",
            "category_id": 1,
            "sent_ids": [3],
            "file_name": "COCO_train2014_000000000008_101.jpg",
            "sentences": [{"sent": "blue half", "raw": "blue half", "sent_id": 3, "tokens": []}],
        },
        {
            "ref_id": 3,
            "ann_id": 101,
            "image_id": 8,
            "split": "train",
            "category_id": 1,
            "sent_ids": [4],
            "file_name": "COCO_train2014_000000000008_101.jpg",
            "sentences": [{"sent": "right side", "raw": "right side", "sent_id": 4, "tokens": []}],
        },
    ]
    if drop:
        del refs[1][drop]
    instances = {
        "images": [
            {"id": 7, "file_name": "COCO_train2014_000000000007.png", "width": 40, "height": 20},
            {"id": 8, "file_name": "COCO_train2014_000000000008.png", "width": 32, "height": 32},
        ],
        "annotations": [
            {"id": 100, "image_id": 7, "bbox": [4, 2, 16, 10], "category_id": 1},
            {"id": 101, "image_id": 8, "bbox": [16, 0, 16, 32], "category_id": 1},
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    (root / "instances.json").write_text(json.dumps(instances))
    if as_json:
        (root / "refs(unc).json").write_text(json.dumps(refs))
    else:
        (root / "refs(unc).p").write_bytes(b"not read")
    return root


CAPTIONS = {
    1: ["a red circle on green grass", "red circle on the grass"],
    2: ["two blue squares near water", "blue squares beside the water"],
    3: ["a small yellow triangle", "yellow triangle"],
}


def write_karpathy(root: Path, drop: str | None = None) -> Path:
    (root / "val2014").mkdir(parents=True, exist_ok=True)
    images = []
    for cid, split in ((1, "test"), (2, "test"), (3, "restval")):
        name = f"COCO_val2014_{cid:012d}.jpg"
        image(30 + cid, 30).save(root / "val2014" / name, quality=95)
        images.append(
            {
                "filepath": "val2014",
                "filename": name,
                "imgid": cid - 1,
                "split": split,
                "cocoid": cid,
                "sentids": [10 * cid, 10 * cid + 1],
                "sentences": [
                    {"tokens": s.split(), "raw": s.capitalize() + ".", "imgid": cid - 1, "sentid": 10 * cid + k}
                    for k, s in enumerate(CAPTIONS[cid])
                ],
            }
        )
    if drop:
        del images[1][drop]
    (root / "dataset_coco.json").write_text(json.dumps({"images": images, "dataset": "coco"}))
    return root


# ----------------------------------------------------------------------------- VQAv2


def test_vqa_soft_accuracy_by_hand():
    humans = VQA_HUMANS[11]
    # red: 2 humans -> 2/3; green: 1 -> 1/3; blue: 4 -> 1; yellow: 2 + "the yellow" -> 3 -> 1; purple: 0
    assert vqa_accuracy("red", humans) == pytest.approx(2 / 3)
    assert vqa_accuracy("green", humans) == pytest.approx(1 / 3)
    assert vqa_accuracy("blue", humans) == 1.0
    assert vqa_accuracy("Yellow.", humans) == 1.0
    assert vqa_accuracy("purple", humans) == 0.0
    assert vqa_accuracy("2", VQA_HUMANS[12]) == 1.0 and vqa_accuracy("3", VQA_HUMANS[12]) == pytest.approx(1 / 3)
    assert normalize_answer("  The Two!") == "2" and normalize_answer("don't") == "don't"


def test_vqav2_loads_and_scores(tmp_path):
    root = write_vqav2(tmp_path / "vqa")
    t = load_task(f"vqav2:{root}", split="val", size=32)
    assert (t.name, t.kind, t.metric, t.split, len(t)) == ("vqav2", "closed", "vqa-accuracy", "val2014", 5)
    # candidates: the normalised consensus answers of the file
    assert t.answers == sorted({"blue", "2", "yes", "square", "no"})
    ex = t[0]
    assert ex.image.shape == (3, 32, 32) and ex.image.dtype == np.float32
    assert 0.0 <= ex.image.min() and ex.image.max() <= 1.0
    assert (ex.id, ex.text, ex.target, ex.qtype) == ("11", "what color is the circle?", "blue", "other")
    assert t.answers[ex.label] == "blue" and len(ex.human_answers) == 10
    # soft accuracy per prediction, by hand: q11 predicts "blue" (4 humans) -> 1; q12 "no" -> 0;
    # q21 "yes" -> 1; q22 "blue" -> 0; q31 "no" -> 1
    a = t.answers.index
    preds = [a("blue"), a("no"), a("yes"), a("blue"), a("no")]
    exs = [t[i] for i in range(5)]
    assert t.example_scores(exs, preds).tolist() == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert t.corpus_metrics(exs, preds) == {"vqa-accuracy": pytest.approx(3 / 5)}
    # q22: square has 8 humans, circle 2 -> predicting "square" scores 1


def test_vqav2_answer_list_and_partial_credit(tmp_path):
    root = write_vqav2(tmp_path / "vqa")
    (root / "answer_list.json").write_text(json.dumps(["red", "green", "circle", "Yes", "no", "2"]))
    t = load_task(f"vqav2:{root}", split="val", size=32)
    assert t.answers == ["red", "green", "circle", "yes", "no", "2"]
    exs = [t[i] for i in range(5)]
    # q11's consensus "blue" is no candidate: the label is the best-scoring candidate (red, 2/3)
    assert t.answers[exs[0].label] == "red"
    scores = t.example_scores(exs, [t.answers.index(x) for x in ("red", "2", "yes", "circle", "no")])
    assert scores.tolist() == pytest.approx([2 / 3, 1.0, 1.0, 2 / 3, 1.0])


def test_vqav2_candidates_are_the_most_frequent_answers(tmp_path, monkeypatch):
    import robust_pt.tasks.formats as formats

    monkeypatch.setattr(formats.vqav2, "VQA_VOCAB", 2)
    root = write_vqav2(tmp_path / "vqa")
    t = load_task(f"vqav2:{root}", split="val", size=32)
    assert t.answers == ["2", "blue"]  # each consensus answer occurs once: ties go alphabetically
    ex = t[2]  # "is there a circle?": yes x9, no x1 -> no candidate matches
    assert ex.label == -1 and t.example_scores([ex, ex], [0, 1]).tolist() == [0.0, 0.0]


def test_vqav2_seeded_subsample(tmp_path):
    root = write_vqav2(tmp_path / "vqa")
    a = [load_task(f"vqav2:{root}", split="val", limit=3, seed=s, size=32) for s in (0, 0, 1, 2, 3)]
    ids = [[ex.id for ex in t] for t in a]
    assert ids[0] == ids[1] and len(ids[0]) == 3
    assert all(x == sorted(x, key=int) for x in ids)  # file order
    assert len({tuple(x) for x in ids}) > 1  # other seeds, other subsets
    assert a[0].answers == load_task(f"vqav2:{root}", split="val", size=32).answers  # candidates do not depend on it


def test_vqav2_missing_field_names_the_record(tmp_path):
    root = write_vqav2(tmp_path / "vqa", drop=(1, "image_id"))
    with pytest.raises(TaskError, match=r"question 1 \(question_id 12\) has no 'image_id' field"):
        load_task(f"vqav2:{root}", split="val", size=32)


def test_vqav2_missing_image(tmp_path):
    root = write_vqav2(tmp_path / "vqa")
    (root / "val2014" / "COCO_val2014_000000000002.jpg").unlink()
    with pytest.raises(TaskError, match="COCO_val2014_000000000002.jpg not found"):
        load_task(f"vqav2:{root}", split="val", size=32)


# ----------------------------------------------------------------------------- SNLI-VE


def test_snli_ve(tmp_path):
    root = write_snli_ve(tmp_path / "ve")
    t = load_task(f"snli-ve:{root}", split="test", size=32)
    assert (t.name, t.kind, t.answers, len(t)) == ("snli-ve", "closed", ["yes", "no", "maybe"], 3)
    assert [(ex.text, ex.target, ex.qtype) for ex in t] == [
        ('does the image describe " two young guys are outside "?', "yes", "entailment"),
        ('does the image describe " the men are sleeping "?', "no", "contradiction"),
        ('does the image describe " a man is wearing a hat "?', "maybe", "neutral"),
    ]
    assert [ex.label for ex in t] == [0, 1, 2] and t[2].id == "10002456.jpg#0r2"
    assert t.corpus_metrics(list(t), [0, 0, 2]) == {"accuracy": pytest.approx(2 / 3)}
    # val reads the dev file
    write_snli_ve(root, split="dev")
    assert load_task(f"snli-ve:{root}", split="val", size=32).split == "dev"


def test_snli_ve_missing_field(tmp_path):
    root = write_snli_ve(tmp_path / "ve", drop_line=1)
    with pytest.raises(
        TaskError, match=r"snli_ve_test.jsonl: line 2 \(pairID 1000092795.jpg#0r1\) has no 'gold_label'"
    ):
        load_task(f"snli-ve:{root}", size=32)


# ----------------------------------------------------------------------------- RefCOCO


def test_box_transforms_by_hand():
    # 40x20 image to 32: squash scales x by 0.8 and y by 1.6
    assert transform_box((4, 2, 20, 12), (40, 20), 32, "squash") == pytest.approx((3.2, 3.2, 16.0, 19.2))
    # crop: shortest edge 20 -> 32 (x1.6), 64x32, centre crop drops 16 px on the left (clipped at 0)
    assert transform_box((4, 2, 20, 12), (40, 20), 32, "crop") == pytest.approx((0.0, 3.2, 16.0, 19.2))


def test_refcoco_loads_boxes_and_acc05(tmp_path):
    root = write_refcoco(tmp_path / "ref")
    t = load_task(f"refcoco:{root}", split="test", size=32)
    assert (t.name, t.kind, t.metric, len(t)) == ("refcoco", "ground", "acc@0.5", 3)  # testA (2 sentences) + testB
    ex0, ex1, ex2 = t[0], t[1], t[2]
    assert ex0.text == 'which region does the text " left red part " describe?' and ex0.id == "1:1"
    assert ex0.box == pytest.approx((3.2, 3.2, 16.0, 19.2)) and ex0.target == box_to_tokens(ex0.box, 32)
    assert ex2.box == pytest.approx((16.0, 0.0, 32.0, 32.0))  # 32x32 image: unchanged
    assert ex0.image.shape == (3, 32, 32)
    # the image: red left half, blue right half (squashed horizontally: still left/right halves)
    assert ex0.image[0, 20, 4] > 0.7 and ex0.image[2, 20, 4] < 0.3
    assert ex0.image[2, 20, 28] > 0.7 and ex0.image[0, 20, 28] < 0.3
    # Acc@0.5 by hand. ex0 gt (3.2, 3.2, 16, 19.2): bins 3,3,16,19 decode to centres (3.5, 3.5, 16.5, 19.5):
    # IoU = 12.5*15.7 / (12.8*16 + 13*16 - 12.5*15.7) = 196.25 / 216.55 = 0.906 -> 1.
    # ex2 gt (16, 0, 32, 32); prediction bins 0,0,15,31 -> (0.5, 0.5, 15.5, 31.5): no overlap -> 0.
    preds = ["<bin_3> <bin_3> <bin_16> <bin_19>", "garbage", "<bin_0> <bin_0> <bin_15> <bin_31>"]
    assert t.example_scores([ex0, ex1, ex2], preds).tolist() == [1.0, 0.0, 0.0]
    # a half-overlapping box: (16.5, 0.5, 31.5, 15.5) vs (16, 0, 32, 32): 15*15 / 512 = 0.44 -> 0
    assert t.example_scores([ex2], ["<bin_16> <bin_0> <bin_31> <bin_15>"]).tolist() == [0.0]
    assert t.corpus_metrics([ex0, ex2], [preds[0], preds[2]]) == {"acc@0.5": 0.5}
    # splits: testA only; train
    assert len(load_task(f"refcoco:{root}", split="testA", size=32)) == 2
    assert [e.qtype for e in load_task(f"refcoco:{root}", split="train", size=32)] == ["train"]


def test_refcoco_crop_mode(tmp_path):
    root = write_refcoco(tmp_path / "ref")
    t = load_task(f"refcoco:{root}", split="testA", size=32, resize="crop")
    ex = t[0]
    assert ex.box == pytest.approx((0.0, 3.2, 16.0, 19.2))
    # the crop keeps original x in [10, 30): red for x < 20, blue after
    assert ex.image[0, 20, 4] > 0.7 and ex.image[2, 20, 28] > 0.7


def test_refcoco_missing_field_and_pickles_are_never_loaded(tmp_path):
    root = write_refcoco(tmp_path / "ref", drop="ann_id")
    with pytest.raises(TaskError, match=r"refs\(unc\).json: ref 1 \(ref_id 2\) has no 'ann_id' field"):
        load_task(f"refcoco:{root}", split="test", size=32)
    bad = write_refcoco(tmp_path / "bad", as_json=False)
    (bad / "refs(unc).p").write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")  # would run code if unpickled
    with pytest.raises(TaskError, match="never unpickles files; convert it to JSON"):
        load_task(f"refcoco:{bad}", split="test", size=32)


# ----------------------------------------------------------------------------- COCO captions (Karpathy)


def test_cider_and_bleu_by_hand():
    # Two images with disjoint vocabularies: every n-gram has df = 1 of N = 2 images, so a
    # hypothesis equal to its only reference has identical tf-idf vectors (cosine 1 for
    # n = 1..4), no length penalty, CIDEr-D = 10 * mean(1, 1, 1, 1) = 10; a hypothesis
    # sharing nothing scores 0.
    refs = [["a red circle on green grass"], ["two blue squares near water"]]
    assert cider_per_example(refs, ["a red circle on green grass", "x y z w"]).tolist() == pytest.approx([10.0, 0.0])
    assert bleu4(refs, ["a red circle on green grass", "two blue squares near water"]) == pytest.approx(1.0)


def test_karpathy_loads_and_scores(tmp_path):
    root = write_karpathy(tmp_path / "coco")
    t = load_task(f"coco-captions:{root}", split="test", size=32)
    assert (t.name, t.kind, t.metric, len(t)) == ("coco-captions", "caption", "cider", 2)
    ex = t[0]
    assert ex.text == "what does the image describe?" and ex.id == "1"
    assert ex.refs == ("A red circle on green grass.", "Red circle on the grass.") and ex.target == ex.refs[0]
    # captions equal to a reference of their own image: CIDEr-D by hand over two references per
    # image is not 10 (the second reference differs), but a caption sharing no n-gram scores 0 and
    # CIDEr is the mean of per-example scores
    s = t.example_scores([t[0], t[1]], ["a red circle on green grass", "qq rr ss tt"])
    assert s[1] == 0.0 and s[0] > 5.0
    m = t.corpus_metrics([t[0], t[1]], ["a red circle on green grass", "qq rr ss tt"])
    assert m["cider"] == pytest.approx(s.mean()) and 0.0 < m["bleu4"] < 1.0
    assert [e.id for e in load_task(f"coco-captions:{root}", split="train", size=32)] == ["3"]  # restval


def test_karpathy_missing_field(tmp_path):
    root = write_karpathy(tmp_path / "coco", drop="sentences")
    with pytest.raises(TaskError, match=r"dataset_coco.json: image 1 \(cocoid 2\) has no 'sentences' field"):
        load_task(f"coco-captions:{root}", split="test", size=32)


# ----------------------------------------------------------------------------- names and errors


def test_unknown_format_and_missing_dir(tmp_path):
    with pytest.raises(TaskError, match="unknown dataset format 'imagenet'"):
        load_task(f"imagenet:{tmp_path}")
    with pytest.raises(TaskError, match="does not exist"):
        load_task(f"vqav2:{tmp_path / 'nope'}")
    with pytest.raises(TaskError, match="vqav2:DIR"):
        load_task("vqa-v2")
