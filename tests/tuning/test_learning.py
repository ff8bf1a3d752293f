"""The tiny preset really learns: well above what the question alone allows."""

from collections import Counter

from robust_pt.models.predict import evaluate_clean

from ..conftest import count_task


def test_tiny_model_learns_counting_well_above_chance(tiny_vqa):
    task = count_task(tiny_vqa.image_size, n=96)
    acc = evaluate_clean(tiny_vqa, task)["accuracy"]
    majority = max(Counter(ex.target for ex in task).values()) / len(task)
    # counting is decided by the image only: a blind model cannot beat the majority answer
    assert acc >= majority + 0.15, (acc, majority)
