"""The ImageFolder format (`imagefolder:DIR`): classes from folders and CoOp's classnames.txt, the template, and
what it refuses (an empty or duplicated class list, a template without one {}, a folder with no name)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from robust_pt.errors import TaskError
from robust_pt.tasks import load_task


def _folder(root, classes=("n001", "n002"), per=3, names=None, template=None):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(per):
                img = (rng.random((20, 30, 3)) * 255).astype(np.uint8)
                Image.fromarray(img).save(root / split / c / f"{i}.png")
    if names is not None:
        (root / "classnames.txt").write_text("".join(f"{c} {n}\n" for c, n in names.items()))
    if template is not None:
        (root / "template.txt").write_text(template)
    return root


def test_classes_come_from_classnames_and_the_template_from_its_file(tmp_path):
    root = _folder(tmp_path, names={"n001": "red circle", "n002": "blue square"}, template="a picture of a {}")
    task = load_task(f"imagefolder:{root}", split="test", size=48)
    assert task.kind == "classify" and task.answers == ["red circle", "blue square"] and len(task) == 6
    ex = task[4]
    assert ex.text == "a picture of a {}" and task.answers[ex.label] == ex.target == "blue square"
    assert ex.image.shape == (3, 48, 48) and 0 <= ex.image.min() and ex.image.max() <= 1
    assert len(load_task(f"imagefolder:{root}", split="train", size=48, limit=4)) == 4


def test_without_classnames_the_folder_is_the_name(tmp_path):
    root = _folder(tmp_path, classes=("golden_retriever", "tabby_cat"))
    task = load_task(f"imagefolder:{root}", split="test", size=32)
    assert task.answers == ["golden retriever", "tabby cat"] and task[0].text == "a photo of a {}."


@pytest.mark.parametrize(
    "kw, needle",
    [
        (dict(names={"n001": "dog", "n002": "Dog"}), "appears twice"),
        (dict(names={"n001": "dog"}), "has no line for folder 'n002'"),
        (dict(template="a photo of a dog"), "exactly one {}"),
    ],
)
def test_bad_class_lists_and_templates_are_refused(tmp_path, kw, needle):
    root = _folder(tmp_path, **kw)
    with pytest.raises(TaskError, match=needle):
        load_task(f"imagefolder:{root}", split="test", size=32)


def test_a_directory_without_class_folders_is_refused(tmp_path):
    (tmp_path / "test").mkdir()
    with pytest.raises(TaskError, match="holds no class folders"):
        load_task(f"imagefolder:{tmp_path}", split="test", size=32)
