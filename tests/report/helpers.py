"""Fixed run directories in the engine's format (run.json + records.jsonl with batch markers)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

PRESETS = {
    "pgd": {"kind": "image", "method": "pgd", "backend": "ours", "norm": "linf", "eps_unit": "pixel", "steps": 10},
    "fgsm": {"kind": "image", "method": "fgsm", "backend": "ours", "norm": "linf", "eps_unit": "pixel", "steps": 1},
    "square": {
        "kind": "image",
        "method": "square",
        "backend": "torchattacks",
        "norm": "linf",
        "eps_unit": "pixel",
        "steps": 10,
        "queries": 1000,
    },
}


def _method_of(model: str) -> str | None:
    """The tuning method a fixture model's name stands for ("prompt-vqa", "pt_vqa", "ft-x"), as its checkpoint
    would declare it to the engine (the report itself never guesses a method from a name)."""
    import re

    from robust_pt.report.load import METHOD_NAMES, normalise_method

    return next((m for tok in re.split(r"[-_.\s/]+", model) if (m := normalise_method(tok)) in METHOD_NAMES), None)


def write_run(
    path: Path,
    model: str,
    correct: dict,
    clean: list,
    *,
    task: str = "shapes-vqa",
    attack: str = "pgd",
    spec: dict | None = None,
    batch_size: int = 8,
    ids: list | None = None,
    extra: dict | None = None,
    model_cfg: dict | None = None,
    answers=("red", "blue"),
    samples: int = 0,
    surrogates: list | None = None,
    model_meta: dict | None = None,
) -> Path:
    """correct: {eps: [bool per example]}; clean: [bool per example]. Returns the run dir. `model_meta`: run.json's
    model_meta as the engine copies it from the checkpoint (e.g. {"adversarial": {...}, "base_adversarial": {...}})."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    n = len(clean)
    ids = ids or [f"ex{i:03d}" for i in range(n)]
    eps = sorted(correct)
    sp = {"name": attack, **(spec or PRESETS.get(attack, PRESETS["pgd"]))}
    config = {
        "model": {
            "name": model,
            "class": "MiniOFA",
            "trained_task": task,
            "state_sha256": "0" * 64,
            **({"method": _method_of(model)} if _method_of(model) else {}),
            **(model_cfg or {}),
        },
        "task": {"name": task, "split": "test", "seed": 0, "n": n, "image_size": 32, "kind": "closed"},
        "attack": sp,
        "eps": eps,
        "batch_size": batch_size,
        "seed": 0,
    }
    if surrogates:  # a transfer run, crafted on these (labels); a label naming the run's own method is the target
        own = config["model"].get("method")
        config["surrogates"] = [
            {
                "label": x,
                "class": "MiniOFA",
                "state_sha256": config["model"]["state_sha256"] if x == own else hashlib.sha256(x.encode()).hexdigest(),
            }
            for x in surrogates
        ]
    fp = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
    meta = {
        "format": "robust-pt-run/1",
        "fingerprint": fp,
        "config": config,
        "model_name": model,
        "checkpoint": {"path": f"/nonexistent/{model}"},
        "status": "complete",
        "summary": [{"metric": "accuracy"}],
        **({"model_meta": model_meta} if model_meta is not None else {}),
    }
    (path / "run.json").write_text(json.dumps(meta, indent=1))
    lines = []
    for b, s in enumerate(range(0, n, batch_size)):
        for e in eps:
            for i in range(s, min(n, s + batch_size)):
                ok = bool(correct[e][i])
                rec = {
                    "batch": b,
                    "index": i,
                    "id": ids[i],
                    "eps": e,
                    "clean_correct": bool(clean[i]),
                    "clean_score": float(clean[i]),
                    "correct": ok,
                    "score": float(ok),
                    "clean_pred": answers[0] if clean[i] else answers[1],
                    "pred": answers[0] if ok else answers[1],
                    "linf": 0.0 if ok else e,
                    "l2": 0.0 if ok else 3 * e,
                    "steps": 10,
                    "queries": None,
                    "attacked": bool(clean[i]),
                    "backend": sp.get("backend"),
                    "unknown_extra_column": [1, 2],
                }
                if extra:
                    rec.update({k: v(i, e) if callable(v) else v for k, v in extra.items()})
                lines.append(json.dumps(rec, sort_keys=True))
        lines.append(json.dumps({"batch_done": b}))
    (path / "records.jsonl").write_text("\n".join(lines) + "\n")
    if samples:
        write_samples(path, ids, eps, correct, samples)
    return path


def write_samples(path: Path, ids: list, eps: list, correct: dict, k: int) -> None:
    """clean | adversarial | amplified difference PNGs named like the engine's."""
    from PIL import Image

    folder = path / "samples"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for e in eps:
        tag = "eps-" + (f"{round(e * 255)}-255" if abs(e * 255 - round(e * 255)) < 1e-6 else f"{e:g}")
        for i in range(k):
            clean = rng.random((16, 16, 3))
            adv = np.clip(clean + rng.uniform(-e, e, clean.shape), 0, 1)
            diff = 0.5 + (adv - clean) / (2 * max(e, 1e-9))
            gap = np.ones((16, 2, 3))
            arr = (np.concatenate([clean, gap, adv, gap, diff], 1) * 255).round().astype(np.uint8)
            status = "robust" if correct[e][i] else "broken"
            Image.fromarray(arr).resize((arr.shape[1] * 8, 16 * 8), Image.NEAREST).save(
                folder / f"{tag}_{ids[i]}_{status}.png"
            )


def sweep(clean: np.ndarray, breaks_at: np.ndarray, eps: list[float]) -> dict:
    """Correctness per eps for examples that break at eps index breaks_at (>= len(eps): never)."""
    return {e: [bool(c) and j < b for c, b in zip(clean, breaks_at)] for j, e in enumerate(eps)}


# ----------------------------------------------------------------------------- the golden runs

N = 20
IDS = [f"ex{i:03d}" for i in range(N)]
E1, E4 = 1 / 255, 4 / 255


def right_except(wrong: set, n: int = N) -> list:
    return [i not in wrong for i in range(n)]


FT_CLEAN = right_except({0, 1})
FT = {E1: right_except(set(range(6))), E4: right_except(set(range(12)))}
PT_CLEAN = right_except({0})
PT = {E1: right_except({0, 2, 3}), E4: right_except({0, 2, 3, 4, 5, 6, 7, 15})}


def golden_runs(root: Path, **kw) -> tuple[Path, Path]:
    """A finetuned and a prompt-tuned model under PGD at 1/255 and 4/255, 20 examples each."""
    ft = write_run(root / "ft-pgd", "finetune-shapes-vqa", FT, FT_CLEAN, **kw)
    pt = write_run(root / "pt-pgd", "prompt-shapes-vqa", PT, PT_CLEAN, **kw)
    return ft, pt


def gate_runs(
    root: Path, pt_wrong_at_8: int = 30, n: int = 100, clean_wrong: int = 10, spec: dict | None = None
) -> list[Path]:
    """100 examples at 2/255 and 8/255; finetuning breaks far more than prompt tuning (unless degraded).
    `spec`: the attack's settings (PGD-10 by default)."""
    e2, e8 = 2 / 255, 8 / 255
    wrong = set(range(n - clean_wrong, n))
    clean = right_except(wrong, n)
    ft = {e2: right_except(set(range(40)) | wrong, n), e8: right_except(set(range(70)) | wrong, n)}
    pt = {e2: right_except(set(range(15)) | wrong, n), e8: right_except(set(range(pt_wrong_at_8)) | wrong, n)}
    return [
        write_run(root / "ft", "finetune-shapes-vqa", ft, clean, spec=spec),
        write_run(root / "pt", "prompt-shapes-vqa", pt, clean, spec=spec),
    ]
