"""The run directory's format, shared by the store (writes it), the engine (summarises it)
and the report (reads it). Imports no torch: reports and CI gates read runs without it.

    runs/<id>/run.json        config (its sha256 is the run's identity), versions, hashes,
                              status, the summary when complete, and `declares`: what the
                              threat model, attack method and task declare, which the report
                              reads instead of names (attacks/declarations.py)
    runs/<id>/records.jsonl   one JSON record per (example, eps), RECORD_COLUMNS, appended
                              batch by batch, each batch followed by {"batch_done": b}
    runs/<id>/summary.csv     one row per eps, SUMMARY_COLUMNS (+ text / caption columns)
    runs/<id>/samples/        eps-<tag>_<id>_<broken|robust>.png (sample_name)

Each definition below exists once; the engine's run summary and the report's summary rows
both use them, so a run's summary.csv and a report's summary.csv agree on every column
they share. records.jsonl has one reader (`read_records`), used by the store and the report:
the same lines count as corrupt and the same batches as unfinished for both.

* eps labels (`eps_label(eps, unit)`): pixel eps as typed when short (0.25, 0.2, 1),
  else k/255 for multiples of 1/255 (8/255), else the number; other units (rms, abs,
  words) as the number. (The report used to write 51/255 for a pixel eps of 0.2, where
  the run's summary wrote 0.2; the engine ignored the unit, writing 4/255 for an rms eps
  of 4/255 where the report wrote 0.0156863.)
* broken (`broken_mask`): binary verdicts: right on the clean input, wrong on the
  perturbed one; graded verdicts (captions): the score fell below the clean score at
  all (tolerance 0: the rule the victim applies during the sweep, attacks/victim.py,
  which sets each record's broken_at; the report used to allow 1e-12).
* per-eps statistics (`eps_stats`): success rate over the examples that could break
  (clean-correct ones; every example for graded verdicts); perturbation sizes (linf, l2)
  and words changed over broken examples (TextAttack's convention; the report used to
  average words over every record, zeros of unattacked examples included); queries and
  steps over attacked examples (TextAttack's convention).
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable

import numpy as np

FORMAT = "robust-pt-run/1"
RUN_JSON, RECORDS, SUMMARY, SAMPLES = "run.json", "records.jsonl", "summary.csv", "samples"
MARKER = "batch_done"  # {"batch_done": b} ends batch b's records in records.jsonl

#: Records of one run, in this order (extra fields follow, sorted).
RECORD_COLUMNS = [
    "batch",
    "index",
    "id",
    "eps",
    "attacked",
    "clean_correct",
    "correct",
    "clean_score",
    "score",
    "clean_pred",
    "pred",
    "linf",
    "l2",
    "steps",
    "queries",
    "broken_at",
    "early_stop",
    "backend",
    "qtype",
    "image_decides",
    "adv_text",
    "words_changed",
    "words_fraction",
    "max_words",
]
#: A run's summary (run.json "summary", summary.csv), in this order; text attacks add TEXT_SUMMARY_COLUMNS,
#: captioning adds bleu4_clean and bleu4_robust.
SUMMARY_COLUMNS = [
    "model",
    "task",
    "attack",
    "eps",
    "eps_label",
    "n",
    "metric",
    "clean",
    "robust",
    "drop",
    "rel_drop",
    "success_rate",
    "mean_linf",
    "mean_l2",
    "n_attacked",
    "n_broken",
    "mean_steps",
    "backend",
    "norm",
    "kind",
    "early_stop",
    "seed",
]
TEXT_SUMMARY_COLUMNS = ["mean_words_changed", "mean_words_fraction", "mean_queries"]

#: Two eps values closer than this are the same eps.
EPS_ATOL = 1e-12

#: The unit of eps of each attack kind, for a config that does not say.
KIND_EPS_UNIT = {"image": "pixel", "joint": "pixel", "embedding": "rms", "text": "words"}


# ----------------------------------------------------------------------------- names


def eps_unit(spec: dict) -> str:
    """The eps unit of an attack spec (a run's config["attack"])."""
    kind = str(spec.get("kind") or "image")
    return str(spec.get("eps_unit") or KIND_EPS_UNIT.get(kind, "rms"))


def eps_label(eps: float, unit: str = "pixel") -> str:
    """How eps is written everywhere (summaries, reports, sample names).

    Pixel eps: short decimals as they are (0.25, 0.2, 1), other multiples of 1/255 as
    8/255, else the number. Other units (rms, abs, words): the number.
    """
    short = f"{eps:g}"
    if unit != "pixel" or len(short) <= 4:
        return short
    k = eps * 255
    if abs(k - round(k)) < 1e-6 and round(k) >= 1:
        return f"{int(round(k))}/255"
    return short


def safe_id(s: Any) -> str:
    """An example id as part of a file name (samples/): other characters become _, at most 60."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(s))[:60]


def slug(s: Any) -> str:
    """A name (task, attack, run) as a file or directory name: other characters become -."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in str(s)).strip("-") or "x"


def sample_tag(eps: float, unit: str = "pixel") -> str:
    """eps-8-255: the eps part of a sample's file name."""
    return "eps-" + eps_label(eps, unit).replace("/", "-")


def sample_name(eps: float, ident: Any, broken: bool, unit: str = "pixel") -> str:
    """eps-8-255_<id>_broken.png: one clean | adversarial | difference image in samples/."""
    return f"{sample_tag(eps, unit)}_{safe_id(ident)}_{'broken' if broken else 'robust'}.png"


#: A sample's file name, parsed: its eps tag (after eps-), its safe_id and whether it broke.
SAMPLE_RE = re.compile(r"^eps-(?P<eps>.+?)_(?P<id>.+)_(?P<status>broken|robust)\.png$")


# ----------------------------------------------------------------------------- reading records.jsonl


def read_records(path, valid: Callable[[Any], bool] | None = None) -> tuple[list[dict], list[int], int]:
    """The one reader of a records file, for the store and the report: (records, 1-based numbers of corrupt
    lines, records of unfinished batches).

    Blank lines are skipped; a line that is not JSON, a marker whose batch is not a number, and a record
    that `valid` refuses (default: any JSON object passes) are corrupt (skipped, counted). Where the file
    has batch markers, the records of a batch without its marker (a run still going, or one killed
    mid-batch) are left out and counted, and records that name no batch are kept; a file with no markers
    at all (written by another tool) is read whole. Records keep their file order. An unreadable file
    raises RunDirError."""
    import json
    from pathlib import Path

    from .errors import RunDirError

    ok = valid or (lambda obj: isinstance(obj, dict))
    bad: list[int] = []
    items: list[dict] = []
    markers: set[int] = set()
    try:
        with open(Path(path), "rb") as fh:
            for i, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    bad.append(i)
                    continue
                if isinstance(obj, dict) and MARKER in obj and len(obj) == 1:
                    b = _batch(obj[MARKER])
                    (bad.append(i) if b is None else markers.add(b))
                elif ok(obj):
                    items.append(obj)
                else:
                    bad.append(i)
    except OSError as err:
        raise RunDirError(
            f"{path} is unreadable ({err.strerror}); check its permissions or re-run the attack"
        ) from None
    if not markers:
        return items, bad, 0
    records = [obj for obj in items if obj.get("batch") is None or _batch(obj.get("batch")) in markers | {None}]
    return records, bad, len(items) - len(records)


def _batch(v) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


# ----------------------------------------------------------------------------- records


def at_eps(values, eps: float) -> np.ndarray:
    """Which of these eps values are `eps`."""
    return np.isclose(np.asarray(values, dtype=float), eps, rtol=0, atol=EPS_ATOL)


def records_frame(records: list[dict], model: str, task: str, attack: str):
    """A run's records as a DataFrame in a fixed column order, sorted by example and eps (fresh or read back
    from records.jsonl), with model, task and attack in front."""
    import pandas as pd

    df = pd.DataFrame(records)
    cols = [c for c in RECORD_COLUMNS if c in df.columns] + sorted(c for c in df.columns if c not in RECORD_COLUMNS)
    df = df[cols]
    if len(df):
        df = df.sort_values(["index", "eps"], kind="stable").reset_index(drop=True)
        df.insert(0, "attack", attack)
        df.insert(0, "task", task)
        df.insert(0, "model", model)
    return df


def _is(col, value: int) -> np.ndarray:
    """Which entries are the flag `value` (1: True/1/1.0, 0: False/0/0.0); None, nan and text are neither."""
    return np.array(
        [isinstance(v, (bool, int, float, np.bool_, np.integer, np.floating)) and bool(v == value) for v in col],
        dtype=bool,
    )


def _num(col):
    import pandas as pd

    return pd.to_numeric(col, errors="coerce")


def could_break(d, binary: bool):
    """The records at one eps that an attack could break: clean-correct ones (binary verdicts), all (graded)."""
    import pandas as pd

    if binary:
        return pd.Series(_is(d["clean_correct"], 1), index=d.index, dtype=bool)
    return pd.Series(np.ones(len(d), dtype=bool), index=d.index, dtype=bool)


def broken_mask(d, binary: bool):
    """The records at one eps whose example the attack broke. Binary verdicts: right on the clean input and
    wrong on the perturbed one. Graded: the score is below the clean score (tolerance 0, as the victim decides)."""
    import pandas as pd

    if not len(d):
        return pd.Series(np.zeros(0, dtype=bool), index=d.index, dtype=bool)
    if binary:
        return could_break(d, binary) & pd.Series(_is(d["correct"], 0), index=d.index, dtype=bool)
    return pd.Series((_num(d["score"]) < _num(d["clean_score"])).to_numpy(dtype=bool), index=d.index, dtype=bool)


def attacked_mask(d):
    """The records at one eps that were attacked (all of them when the records do not say)."""
    import pandas as pd

    if "attacked" not in d:
        return pd.Series(np.ones(len(d), dtype=bool), index=d.index, dtype=bool)
    return pd.Series(_is(d["attacked"], 1), index=d.index, dtype=bool)


def rel_drop(clean: float, robust: float) -> float:
    """1 - robust / clean (nan when clean is 0)."""
    return (clean - robust) / clean if clean and math.isfinite(clean) else math.nan


def _mean_over(d, mask, col: str) -> float:
    if col not in d or not mask.any():
        return math.nan
    return float(_num(d.loc[np.asarray(mask, dtype=bool), col]).mean())


def target_rate(d) -> float:
    """A targeted attack's success at one eps: the share of the examples it aimed at (those with a target)
    whose prediction is the target."""
    if not len(d) or "target" not in d:
        return math.nan
    aimed = d["target"].notna().to_numpy(bool)
    if not aimed.any():
        return math.nan
    return float(d.loc[aimed, "target_success"].astype(bool).mean())


def eps_stats(d, binary: bool) -> dict:
    """The attack statistics of a run's records at one eps (a DataFrame): success_rate, perturbation sizes,
    attacked and broken counts, steps, queries and words changed (nan where the records lack the field)."""
    broken = broken_mask(d, binary)
    nb = int(broken.sum())
    denom = int(could_break(d, binary).sum())
    attacked = attacked_mask(d)
    q = _num(d.loc[attacked.to_numpy(), "queries"]).dropna() if "queries" in d else []
    return {
        "success_rate": nb / denom if denom else math.nan,
        "mean_linf": _mean_over(d, broken, "linf"),
        "mean_l2": _mean_over(d, broken, "l2"),
        "n_attacked": int(attacked.sum()),
        "n_broken": nb,
        "mean_steps": _mean_over(d, attacked, "steps") if attacked.any() else 0.0,
        "mean_words_changed": _mean_over(d, broken, "words_changed"),
        "mean_words_fraction": _mean_over(d, broken, "words_fraction"),
        "mean_queries": float(q.mean()) if len(q) else math.nan,
    }
