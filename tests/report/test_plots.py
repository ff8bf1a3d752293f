"""Report figures: one colour per tuning method everywhere, bars grouped by task, gallery rows that say what
was asked. Offline and deterministic (fixed summary frames, the helpers' run directories)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd

from robust_pt.report import plots
from robust_pt.report.load import load_run
from robust_pt.tasks import load_task

from .helpers import PT, PT_CLEAN, write_run

TASKS = ["shapes-vqa", "shapes-ve", "shapes-ground"]
# deliberately not in method order, with two prompt-tuned models, a method without a fixed colour and a
# model of unknown method: the colours must still follow the method
MODELS = [
    ("lora", "lora-{t}"),
    ("prompt", "prompt-L4-{t}"),
    ("finetune", "finetune-{t}"),
    ("ia3", "ia3-{t}"),
    ("prompt", "prompt-L16-{t}"),
    ("adapter", "adapter-{t}"),
    ("bitfit", "bitfit-{t}"),
    ("unknown", "mystery-model"),
]
EPS = [(1 / 255, "1/255"), (4 / 255, "4/255"), (8 / 255, "8/255")]


def summary_frame(tasks=TASKS, models=MODELS, attack: str = "pgd") -> pd.DataFrame:
    rows = []
    rng = np.random.default_rng(0)
    for t, (method, model), (e, lab) in itertools.product(tasks, models, EPS):
        drop = float(rng.uniform(0.05, 0.6))
        clean, robust = 0.9, 0.9 * (1 - drop)
        rows.append(
            {
                "task": t,
                "model": model.format(t=t),
                "method": method,
                "attack": attack,
                "eps": e,
                "eps_label": lab,
                "metric": "accuracy",
                "clean": clean,
                "clean_lo": 0.85,
                "clean_hi": 0.95,
                "robust": robust,
                "robust_lo": robust - 0.05,
                "robust_hi": robust + 0.05,
                "rel_drop": drop,
                "rel_drop_lo": drop - 0.04,
                "rel_drop_hi": drop + 0.04,
            }
        )
    return pd.DataFrame(rows)


def bars(fig) -> list[tuple[int, str, str, str, float, tuple]]:
    """(panel, task, series, model, x, facecolour) of every bar of a degradation figure."""
    out = []
    for k, ax in enumerate(fig.axes):
        for p in ax.patches:
            if p.get_gid():
                task, series, model = p.get_gid().split("|")
                out.append((k, task, series, model, p.get_x() + p.get_width() / 2, p.get_facecolor()))
    return out


def test_method_colours_do_not_depend_on_the_checkpoints_or_their_order():
    s = summary_frame()
    colours = plots.method_colours(s)
    assert colours["finetune"] == plots.PALETTE["finetune"] and colours["prompt"] == plots.PALETTE["prompt"]
    assert len(set(colours.values())) == len(colours)  # ia3 and the unknown model get colours of their own
    assert list(colours)[:5] == ["finetune", "prompt", "adapter", "bitfit", "lora"]
    alone = plots.method_colours(s[s["method"] == "prompt"])
    assert alone == {"prompt": plots.PALETTE["prompt"]}


def test_degradation_bars_one_colour_per_method_grouped_by_task():
    s = summary_frame()
    fig = plots.degradation_figure(s, "pgd")
    got = bars(fig)
    assert len(got) == len(TASKS) * len(MODELS) * len(EPS)
    colours = plots.method_colours(s)
    per_series: dict[str, set] = {}
    for _panel, _task, series, _model, _x, fc in got:
        per_series.setdefault(series, set()).add(tuple(np.round(fc, 4)))
    # the same colour for a method in every task and every panel, and it is the method's colour
    assert all(len(c) == 1 for c in per_series.values()), per_series
    from matplotlib.colors import to_rgba

    for series, c in per_series.items():
        assert next(iter(c)) == tuple(np.round(to_rgba(colours[series]), 4)), series
    assert len({next(iter(c)) for c in per_series.values()}) == len(per_series)
    order = ["finetune", "prompt", "adapter", "bitfit", "lora", "ia3", "mystery-model"]
    for panel in range(len(EPS)):
        mine = sorted((x, task, series, model) for p, task, series, model, x, _ in got if p == panel)
        tasks_along_x = [t for t, _ in itertools.groupby(m[1] for m in mine)]
        assert tasks_along_x == TASKS  # one contiguous group per task
        for task in TASKS:
            seq = [(series, model) for _, t, series, model in mine if t == task]
            assert [s_ for s_, _ in seq] == sorted((s_ for s_, _ in seq), key=order.index)
            assert [m for s_, m in seq if s_ == "prompt"] == [f"prompt-L4-{task}", f"prompt-L16-{task}"]
    # one legend for the figure, none in the panels; methods in order, then the CI whisker
    assert len(fig.legends) == 1 and all(ax.get_legend() is None for ax in fig.axes)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["Finetuning", "Prompt tuning", "Adapter", "BitFit", "LoRA", "IA3", "mystery-model", "95% CI"]


def test_degradation_names_the_models_of_a_method_with_several(tmp_path):
    layout = plots.degradation_layout(summary_frame(), "pgd")
    variants = {(b["task"], b["model"]): b["variant"] for b in layout["bars"]}
    assert variants[("shapes-ve", "prompt-L16-shapes-ve")] == "L16"
    assert variants[("shapes-ve", "finetune-shapes-ve")] == ""
    path = plots.degradation(summary_frame(), "pgd", tmp_path / "d.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_metric_vs_eps_uses_the_same_colours(tmp_path):
    from matplotlib.colors import to_hex

    s = summary_frame()
    colours = plots.method_colours(s)
    fig = plots.metric_vs_eps_figure(s, "shapes-vqa")
    lines = [ln for ax in fig.axes for ln in ax.get_lines()]
    assert lines
    by_label = {
        "Finetuning": "finetune",
        "Prompt tuning (L4)": "prompt",
        "Prompt tuning (L16)": "prompt",
        "Adapter": "adapter",
        "BitFit": "bitfit",
        "LoRA": "lora",
        "IA3": "ia3",
        "mystery-model": "mystery-model",
    }
    assert {ln.get_label() for ln in lines} == set(by_label)
    for ln in lines:
        assert to_hex(ln.get_color()) == colours[by_label[ln.get_label()]], ln.get_label()
    l4, l16 = (next(ln for ln in lines if ln.get_label() == f"Prompt tuning ({v})") for v in ("L4", "L16"))
    assert (l4.get_linestyle(), l4.get_marker()) != (l16.get_linestyle(), l16.get_marker())
    assert len(fig.legends) == 1 and all(ax.get_legend() is None for ax in fig.axes)
    assert plots.metric_vs_eps(s, "shapes-vqa", tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"


# ----------------------------------------------------------------------------- gallery


def _samples(run: Path, ids: list[str], eps: float) -> None:
    """Sample PNGs named as the engine names them (ids made file-safe)."""
    from PIL import Image

    folder = run / "samples"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in (2, 3):
        arr = (rng.random((16, 50, 3)) * 255).astype(np.uint8)
        Image.fromarray(arr).resize((400, 128), Image.NEAREST).save(
            folder / f"eps-{round(eps * 255)}-255_{plots._safe(ids[i])}_broken.png"
        )


def test_gallery_rows_show_the_question_regenerated_from_the_id(tmp_path):
    """Image attacks keep no input text in their records: the built-in task's example gives it back."""
    ids = [f"shapes-vqa:test:0:{i}" for i in range(len(PT_CLEAN))]
    task = load_task("shapes-vqa", seed=0, size=32)  # the helpers' runs are at 32 px
    answers = {"clean_pred": lambda i, e: task[i].target}  # a model right on clean inputs names the target
    path = write_run(tmp_path / "run", "prompt-shapes-vqa", PT, PT_CLEAN, ids=ids, extra=answers)
    e = max(PT)
    _samples(path, ids, e)
    run = load_run(path)
    assert run.image_size == 32
    items = plots.samples(run, 6)
    assert {s["id"] for s in items} == {ids[2], ids[3]}
    for s in items:
        ex = task[int(s["id"].rsplit(":", 1)[1])]
        assert s["text"] == ex.text and s["target"] == ex.target
        assert s["clean_pred"] == ex.target and s["pred"] == "blue"  # matched to its record
        lines = [t for t, _, _ in plots._sample_lines(s, run)]
        assert f"Question: {ex.text}" in lines and "Adversarial prediction: blue" in lines
    out = plots.gallery(run, items, tmp_path / "g.png")
    from PIL import Image

    with Image.open(out) as im:
        assert im.width >= 400 + 420  # the image (whole-factor scale: 1 here), then the text column


def test_gallery_leaves_out_a_regenerated_text_that_contradicts_the_record(tmp_path):
    """Clean-correct with another answer than the regenerated target: not the example that was attacked (e.g. the
    generator changed since the run), so no question is shown rather than a wrong one."""
    ids = [f"shapes-vqa:test:0:{i}" for i in range(len(PT_CLEAN))]
    task = load_task("shapes-vqa", seed=0, size=32)
    wrong = {"clean_pred": lambda i, e: "purple" if task[i].target != "purple" else "red"}
    path = write_run(tmp_path / "run", "prompt-shapes-vqa", PT, PT_CLEAN, ids=ids, extra=wrong)
    _samples(path, ids, max(PT))
    run = load_run(path)
    items = plots.samples(run, 6)
    assert items and all(s["text"] is None and s["target"] is None for s in items)
    assert not any(t.startswith("Question") for t, _, _ in plots._sample_lines(items[0], run))


def test_gallery_prefers_the_records_text_and_wraps_it(tmp_path):
    long = "is the " + " ".join(["very"] * 40) + " large circle left of the square?"
    path = write_run(
        tmp_path / "run", "prompt-shapes-ve", PT, PT_CLEAN, task="shapes-ve", ids=None, extra={"text": long}
    )
    ids = [f"ex{i:03d}" for i in range(len(PT_CLEAN))]
    _samples(path, ids, max(PT))
    run = load_run(path)
    items = plots.samples(run, 6)
    assert items and all(s["text"] == long for s in items)
    assert plots._sample_lines(items[0], run)[2][0] == f"Hypothesis: {long}"
    from PIL import Image, ImageDraw

    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    font = plots._fonts()["text"]
    wrapped = plots._wrap(draw, long, font, 300)
    assert len(wrapped) > 3 and all(draw.textlength(w, font=font) <= 300 for w in wrapped)
    assert " ".join(wrapped) == long
    plots.gallery(run, items, tmp_path / "g.png")


def test_ground_answers_read_as_boxes():
    assert plots._answer_text("<bin_0> <bin_0> <bin_31> <bin_31>", 64).startswith("box (")
    assert plots._answer_text("red", 64) == "red"


def test_axes_read_in_percent_for_shares_and_points_otherwise():
    """Readers expect accuracy in %, not "(x100)"; a graded metric such as CIDEr x100 is in points."""
    assert plots.metric_axis("accuracy") == "accuracy (%)" and plots.metric_axis("acc@0.5") == "acc@0.5 (%)"
    assert plots.metric_axis("cider") == "cider (points)"
    fig = plots.metric_vs_eps_figure(summary_frame(), "shapes-vqa")
    assert {ax.get_ylabel() for ax in fig.axes} == {"accuracy (%)"}
