"""Read run directories for reports: run.json + records.jsonl, nothing else.

The reader is tolerant where a report can still be honest and strict where it cannot:

* extra columns and unknown run.json keys are ignored;
* a corrupt line (not JSON, not an object, or lacking `id`, `eps` and a score) is skipped,
  counted and named (its line number) in `RunData.bad_lines`; the report shows it and the
  CLI prints a warning line;
* records of a batch without its `{"batch_done": b}` marker (a run still going, or one
  killed mid-batch) are left out and counted, as the store does when it resumes; a file
  with no markers at all (written by another tool) is read whole;
* a missing or empty directory, a directory without run.json, an unreadable run.json or a
  run without a single valid record raise RunDirError (the CLI prints one line, exit 2);
* runs of different tasks raise MixedRunsError unless `allow_mixed` is set.

What a run is (nested or not, binary or graded verdict, eps unit, white-box / black-box /
transfer / corruption, metric, text label, the method's sanity roles) is read from run.json's
`declares` block (attacks/declarations.py), never from an attack's, method's or task's name;
a run written before the block existed gets it once here, derived from its config through the
same registries (`declarations.derive`), so old and new runs read alike. records.jsonl is read
by the store's reader (runformat.read_records) with the report's rule for a valid record.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..attacks.declarations import derive
from ..errors import RobustPTError, RunDirError
from ..runformat import MARKER, RECORDS, RUN_JSON, SAMPLES, at_eps, eps_label  # noqa: F401  (eps_label re-exported)
from ..runformat import read_records as _read_records
from ..tuning import registry

#: Tuning methods, and how reports name them in sentences and legends: the registered methods'
#: display names (read from robust_pt/tuning/registry.py on every access), plus names other tools' runs use.
OTHER_METHOD_NAMES = {"pretrain": "the pretrained base", "prefix": "prefix tuning"}
METHOD_NAMES = registry.Live(lambda: {**{m.name: m.display for m in registry.methods()}, **OTHER_METHOD_NAMES})
METHOD_ALIASES = registry.Live(
    lambda: {**{a: m.name for m in registry.methods() for a in m.aliases}, "base": "pretrain"}
)
REFERENCE = registry.REFERENCE


def method_rank(method: str) -> int:
    """A method's place in report order: the reference, then the registered methods with a fixed colour
    (registry.report_order); 99 for any other method."""
    order = registry.report_order()
    return order.index(method) if method in order else 99


UNKNOWN = "unknown"
#: The variant part of a run tuned from an adversarially pretrained base (RunData.variant).
ROBUST_BASE = "robust base"
#: The reference mode that compares each adversarially tuned run with its clean partner (tables.reference_runs).
CLEAN = "clean"


def variant_rank(variant: str) -> tuple:
    """A training variant's place in report order: clean from the plain base (no variant), adversarial from it,
    clean from the robust base, adversarial from it; the adversarial schedules by name. Why: a study's four
    ways of tuning one method read best in the order it builds them up."""
    robust = variant == ROBUST_BASE or variant.endswith(", " + ROBUST_BASE)
    return (robust, variant not in ("", ROBUST_BASE), variant)


#: the access of natural corruptions (attacks/declarations.py): not attacks
CORRUPTION = "corruption"


class ReportError(RobustPTError):
    """Bad input to a report, baseline or check (the message says what to do)."""


class MixedRunsError(ReportError):
    """Runs of different tasks given together without allow_mixed."""


@dataclass
class RunData:
    """One run directory as the report sees it."""

    path: Path
    meta: dict
    task: str
    task_kind: str
    metric: str
    model: str  # display / key name of the model
    method: str  # tuning method (finetune, prompt, ...) or "unknown"
    attack: str  # attack label (the preset name, plus the differing settings when two runs share it)
    attack_spec: dict  # kind, method, norm, eps_unit, steps, queries, ...
    eps: list[float]
    records: Any  # pandas.DataFrame
    bad_lines: list[int] = field(default_factory=list)
    unfinished: int = 0  # records of batches without a batch_done marker (left out)
    duplicates: int = 0  # (id, eps) records seen twice (the first kept)
    status: str = ""
    source: str | None = None  # transfer runs: the surrogate(s) crafted on ("finetune", "finetune+prompt")
    attack_base: str = ""  # the label before settings are added (attack_labels): "pgd", "pgd from pretrain"
    declares: dict = field(default_factory=dict)  # what the run declares (attacks/declarations.py)
    adversarial: str = ""  # how its checkpoint was tuned beyond clean: "adversarial 4/255", "noise 0.25"; "" if clean
    robust_base: bool = False  # tuned from an adversarially pretrained base (model_meta.base_adversarial)
    trained: str = ""  # the task its checkpoint was tuned on (model_meta.task), "" for an untuned model

    @property
    def variant(self) -> str:
        """How the checkpoint was trained beyond its method, as reports name it: "adversarial 4/255",
        "robust base", "TRADES 4/255, robust base"; "" for clean tuning from a plain base. Why: four
        prompt-tuned models of one study (clean or adversarial, plain or robust base) are different models,
        compared with the reference of their own variant and named apart."""
        return ", ".join(p for p in (self.adversarial, ROBUST_BASE if self.robust_base else "") if p)

    @property
    def target(self) -> str:
        """A targeted run's target (attacks/targeted.py), "" for an untargeted one."""
        return str(self.attack_spec.get("target") or "")

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def samples_dir(self) -> Path:
        return self.path / SAMPLES

    @property
    def attack_name(self) -> str:
        return str(self.attack_spec.get("name") or self.attack)

    @property
    def attack_method(self) -> str:
        return str(self.attack_spec.get("method") or self.attack_name)

    @property
    def attack_kind(self) -> str:
        return str(self.attack_spec.get("kind") or "image")

    @property
    def norm(self) -> str:
        return str(self.attack_spec.get("norm") or "linf")

    @property
    def eps_unit(self) -> str:
        return str(self.declares.get("eps_unit") or "pixel")

    @property
    def nested(self) -> bool:
        """Its eps sets are nested balls (else, e.g. corruption severities, the metric need not fall with eps)."""
        return bool(self.declares.get("nested", True))

    @property
    def access(self) -> str:
        """white-box, black-box, transfer or corruption (a natural corruption: not an attack)."""
        return str(self.declares.get("access") or "white-box")

    @property
    def corruption(self) -> bool:
        return self.access == CORRUPTION

    @property
    def roles(self) -> tuple[str, ...]:
        """The attack method's roles in the gradient-masking checks (sanity.py)."""
        return tuple(self.declares.get("sanity_roles") or ())

    @property
    def eps_axis(self) -> str:
        """What a plot calls its eps axis: severities for a unit of severities, the radius of a certification, else eps."""
        if self.declares.get("access") == "certified":
            return "certified L2 radius"
        return "severity (0: clean)" if self.eps_unit == "severity" else "eps"

    @property
    def text_label(self) -> str:
        return str(self.declares.get("text_label") or "Text")

    def eps_label(self, eps: float) -> str:
        """eps as this run's unit writes it (runformat.eps_label)."""
        return eps_label(eps, self.eps_unit)

    @property
    def image_size(self) -> int | None:
        v = (self.meta.get("config") or {}).get("task", {}).get("image_size")
        return int(v) if isinstance(v, (int, float)) else None

    @property
    def binary(self) -> bool:
        """Per-example correctness is 0/1 (closed and grounding tasks), so McNemar applies."""
        c = self.records["correct"]
        return bool(c.notna().all()) and self.declares.get("verdict", "binary") == "binary"

    @property
    def score_is_correctness(self) -> bool:
        """The per-example score is the 0/1 correctness, so a gap in the metric is (b - c) / n and McNemar's
        interval applies to it (not to graded scores such as VQAv2's soft accuracy)."""
        return self.binary and bool((self.records["score"] == self.records["correct"].astype(float)).all())

    def warnings(self) -> list[str]:
        out = []
        if self.bad_lines:
            out.append(
                f"{self.path / RECORDS}: {len(self.bad_lines)} corrupt line(s) skipped "
                f"(line {_ranges(self.bad_lines)}); the report uses the {len(self.records)} valid records"
            )
        if self.unfinished:
            out.append(
                f"{self.path / RECORDS}: {self.unfinished} record(s) of unfinished batches left out "
                f"(the run is still going or was interrupted; re-run the attack command to resume it)"
            )
        if self.duplicates:
            out.append(f"{self.path / RECORDS}: {self.duplicates} duplicated (id, eps) record(s) ignored")
        if self.status and self.status != "complete" and not self.unfinished:
            out.append(f"{self.path}: run status is {self.status!r}, not complete")
        return out


def _ranges(lines: list[int], limit: int = 12) -> str:
    """[3, 4, 5, 9] -> '3-5, 9'; long lists end with '... (N in all)'."""
    parts: list[str] = []
    start = prev = None
    for x in sorted(lines):
        if start is None:
            start = prev = x
        elif x == prev + 1:
            prev = x
        else:
            parts.append(f"{start}-{prev}" if prev != start else str(start))
            start = prev = x
    if start is not None:
        parts.append(f"{start}-{prev}" if prev != start else str(start))
    if len(parts) > limit:
        return ", ".join(parts[:limit]) + f", ... ({len(lines)} in all)"
    return ", ".join(parts)


# ----------------------------------------------------------------------------- records


def _as_float(v) -> float:
    if v is None or isinstance(v, bool):
        return float(v) if isinstance(v, bool) else math.nan
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f


def _as_bool(v) -> float:
    """True/False/1/0 -> 1.0/0.0, None -> nan."""
    if v is None:
        return math.nan
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)):
        return float(bool(v))
    return math.nan


def _valid(obj) -> bool:
    if not isinstance(obj, dict) or "id" not in obj or "eps" not in obj:
        return False
    if isinstance(obj["eps"], bool) or not math.isfinite(_as_float(obj["eps"])):
        return False
    has_score = obj.get("score") is not None and math.isfinite(_as_float(obj.get("score")))
    has_correct = isinstance(obj.get("correct"), (bool, int, float)) and obj.get("correct") is not None
    return has_score or has_correct


def read_records(path: Path) -> tuple[list[dict], list[int], int]:
    """(valid records, 1-based numbers of corrupt lines, records of unfinished batches): the store's reader
    (runformat.read_records), with a record valid when it has an id, a finite eps and a score or a verdict."""
    return _read_records(path, _valid)


def records_frame(records: list[dict]):
    """A DataFrame with the columns reports use, normalised (extra columns kept)."""
    import pandas as pd

    df = pd.DataFrame.from_records(records) if records else pd.DataFrame(columns=["id", "eps"])
    df["id"] = df["id"].astype(str)
    df["eps"] = [_as_float(v) for v in df["eps"]]
    for col in ("correct", "clean_correct"):
        df[col] = [_as_bool(v) for v in df[col]] if col in df.columns else math.nan
    for col in ("score", "clean_score"):
        df[col] = [_as_float(v) for v in df[col]] if col in df.columns else math.nan
    # a score where only correctness was recorded, and the other way round
    df["score"] = df["score"].where(df["score"].notna(), df["correct"])
    df["clean_score"] = df["clean_score"].where(df["clean_score"].notna(), df["clean_correct"])
    for col in ("linf", "l2", "queries", "steps", "words_changed"):
        if col in df.columns:
            df[col] = [_as_float(v) for v in df[col]]
    for col in ("pred", "clean_pred"):
        if col not in df.columns:
            df[col] = None
    return df


def _clean_score_by_id(df):
    """Examples missing clean_score take it from another eps of the same example (same clean pass)."""
    if df["clean_score"].isna().any() and len(df):
        fill = df.groupby("id")["clean_score"].transform("first")
        df["clean_score"] = df["clean_score"].where(df["clean_score"].notna(), fill)
    return df


# ----------------------------------------------------------------------------- run.json


def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text())
    except OSError as err:
        raise RunDirError(f"{path} is unreadable ({err.strerror}); check its permissions") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunDirError(
            f"{path} is not valid JSON ({err.msg} at line {err.lineno}); re-run the attack into a fresh directory"
        ) from None
    if not isinstance(obj, dict):
        raise RunDirError(f"{path} is not a robust-pt run.json (not an object); re-run the attack")
    return obj


def normalise_method(name: Any) -> str | None:
    if not isinstance(name, str) or not name.strip():
        return None
    s = name.strip().lower()
    s = METHOD_ALIASES.get(s, s)
    return s


def _checkpoint_meta(meta: dict, run_dir: Path) -> dict:
    ck = meta.get("checkpoint") or {}
    p = ck.get("path") if isinstance(ck, dict) else None
    if not p:
        return {}
    for cand in (Path(p), run_dir.parent / p, run_dir.parent.parent / p):
        f = cand / "meta.json"
        try:
            if f.is_file():
                obj = json.loads(f.read_text())
                return obj if isinstance(obj, dict) else {}
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            return {}
    return {}


def model_identity(meta: dict, run_dir: Path) -> tuple[str, str]:
    """(model name, tuning method) of a run, from the first place that says."""
    cfg = meta.get("config") or {}
    model_cfg = cfg.get("model") if isinstance(cfg.get("model"), dict) else {}
    name = (
        meta.get("model_name")
        or model_cfg.get("name")
        or (cfg.get("model") if isinstance(cfg.get("model"), str) else None)
        or "model"
    )
    candidates = [
        model_cfg.get("method"),
        (model_cfg.get("meta") or {}).get("method"),
        (model_cfg.get("tuning") or {}).get("method") if isinstance(model_cfg.get("tuning"), dict) else None,
        (meta.get("model_meta") or {}).get("method") if isinstance(meta.get("model_meta"), dict) else None,
        meta.get("method"),
    ]
    method = next((normalise_method(m) for m in candidates if normalise_method(m)), None)
    if method is None:
        method = normalise_method(_checkpoint_meta(meta, run_dir).get("method"))
    return str(name), method or UNKNOWN


def training_variant(meta: dict) -> tuple[str, bool]:
    """(adversarial label, robust base) of a run: what run.json's model_meta declares about how the checkpoint
    was trained (engine/prepare.py copies it from the checkpoint's meta), never guessed from a model's or a
    directory's name. The label is tuning/adversarial.py's ("adversarial 4/255"); a record it cannot read still
    says the checkpoint was trained adversarially ("adversarial"). A checkpoint tuned on noisy inputs
    (tuning/noise.py) is the variant "noise 0.25" in the same place."""
    from ..tuning.adversarial import label

    mm = meta.get("model_meta")
    if not isinstance(mm, dict):
        return "", False
    adv = mm.get("adversarial")
    name = ""
    if isinstance(adv, dict) and adv:
        try:
            name = label(adv) or "adversarial"
        except (KeyError, TypeError, ValueError):
            name = "adversarial"
    sigma = mm.get("noise_sigma")
    if not name and isinstance(sigma, (int, float)) and sigma > 0:  # Gaussian data augmentation (tuning/noise.py)
        from ..tuning.noise import label as noise_label

        name = noise_label(float(sigma))
    base = mm.get("base_adversarial")
    return name, bool(isinstance(base, dict) and base)


def load_run(path: str | Path) -> RunData:
    """One run directory; RunDirError when it is missing, empty or holds no valid record."""
    p = Path(path)
    if not p.exists():
        raise RunDirError(f"run directory {p} does not exist; pass directories made by `robust-pt attack`")
    if not p.is_dir():
        raise RunDirError(f"{p} is not a directory; pass run directories made by `robust-pt attack`")
    if not (p / RUN_JSON).exists():
        if not any(p.iterdir()):
            raise RunDirError(f"run directory {p} is empty; run `robust-pt attack --out {p} ...` first")
        raise RunDirError(f"{p} is not a run directory (no {RUN_JSON}); pass directories made by `robust-pt attack`")
    meta = _read_json(p / RUN_JSON)
    cfg = meta.get("config")
    if not isinstance(cfg, dict):
        raise RunDirError(f"{p / RUN_JSON} has no config; it was not written by robust-pt (re-run the attack)")
    rec_path = p / RECORDS
    if not rec_path.exists():
        raise RunDirError(f"{p} has no {RECORDS} yet (the run has not finished a batch); run or resume it first")
    records, bad, unfinished = read_records(rec_path)
    if not records:
        what = f"{len(bad)} corrupt line(s)" if bad else "no records"
        raise RunDirError(f"{rec_path} holds no valid record ({what}); re-run the attack into a fresh directory")

    task_cfg = cfg.get("task") if isinstance(cfg.get("task"), dict) else {"name": cfg.get("task")}
    task = str(task_cfg.get("name") or "task")
    kind = str(task_cfg.get("kind") or "closed")
    summary = meta.get("summary") or []
    metric = next((r.get("metric") for r in summary if isinstance(r, dict) and r.get("metric")), None)
    declares = meta.get("declares")
    if not isinstance(declares, dict):  # a run written before run.json held its declarations
        declares = derive(cfg, metric)
    metric = str(metric or declares.get("metric") or "score")
    spec = cfg.get("attack") if isinstance(cfg.get("attack"), dict) else {"name": str(cfg.get("attack") or "attack")}
    spec = dict(spec)
    spec.setdefault("name", "attack")
    model, method = model_identity(meta, p)
    source = transfer_source(cfg)
    df = _clean_score_by_id(records_frame(records))
    n0 = len(df)
    df = df.drop_duplicates(["id", "eps"], keep="first").reset_index(drop=True)
    eps = cfg.get("eps")
    eps_list = sorted({float(e) for e in eps}) if isinstance(eps, list) and eps else sorted(set(df["eps"]))
    label = base_label(spec, source)  # settings join it where two runs differ (_label_attacks)
    adversarial, robust_base = training_variant(meta)
    return RunData(
        path=p,
        meta=meta,
        task=task,
        task_kind=kind,
        metric=metric,
        model=model,
        method=method,
        attack=label,
        attack_base=label,
        attack_spec=spec,
        eps=eps_list,
        records=df,
        bad_lines=bad,
        unfinished=unfinished,
        duplicates=n0 - len(df),
        status=str(meta.get("status") or ""),
        source=source,
        declares=declares,
        adversarial=adversarial,
        robust_base=robust_base,
        trained=str(meta["model_meta"].get("task") or "") if isinstance(meta.get("model_meta"), dict) else "",
    )


def base_label(spec: dict, source: str | None = None) -> str:
    """An attack's label before its settings: the preset name, its source for transfer runs, its target."""
    return str(spec.get("name") or "attack") + (f" from {source}" if source else "") + _aim(spec)


def _aim(spec: dict) -> str:
    """A targeted run's label suffix: ' (target red)' (empty for untargeted runs)."""
    return f" (target {spec['target']})" if spec.get("target") else ""


def transfer_source(cfg: dict) -> str | None:
    """The surrogates a transfer run crafted on, as methods joined by '+' (None for a white-box run)."""
    sur = cfg.get("surrogates")
    if not isinstance(sur, list) or not sur:
        return None
    labels = [str(s.get("label") if isinstance(s, dict) else s) for s in sur]
    return "+".join(normalise_method(x) or x for x in labels)


def expand(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories from the arguments: a run directory, or a folder of run directories."""
    out: list[Path] = []
    for a in paths:
        p = Path(a)
        if p.is_dir() and not (p / RUN_JSON).exists():
            subs = sorted(d for d in p.iterdir() if d.is_dir() and (d / RUN_JSON).exists())
            if subs:
                out += subs
                continue
        out.append(p)
    return out


#: spec keys that are not part of an attack's identity in its label (the eps grid is a column of its own)
LABEL_FREE = ("eps", "description", "path")


def attack_settings(spec: dict) -> dict:
    """The settings that make an attack what it is: its spec without the eps grid and the prose, a method's
    own settings (`settings`) side by side with the others (labels read "smoothing[sigma=0.25]")."""
    own = spec.get("settings") if isinstance(spec.get("settings"), dict) else {}
    return {**{k: v for k, v in spec.items() if k not in LABEL_FREE and k != "settings"}, **own}


def _same(a, b) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def attack_labels(items: list[tuple[str, dict]]) -> list[str]:
    """The attack label of each (base label, settings): the base label ("pgd"), plus the settings in which
    items of that base label differ ("pgd[steps=10]", "pgd[steps=50]").

    Why one function: the report labels its runs with it, and `robust-pt check` labels the baseline's
    attacks and the runs' together with it, so a PGD-50 run is never matched to a PGD-10 baseline."""
    out = [name for name, _ in items]
    by_name: dict[str, list[int]] = {}
    for i, (name, _) in enumerate(items):
        by_name.setdefault(name, []).append(i)
    for name, idx in by_name.items():
        specs = [items[i][1] for i in idx]
        keys = sorted({k for s in specs for k in s if any(not _same(t.get(k), specs[0].get(k)) for t in specs)})
        if keys:
            for i in idx:
                out[i] = f"{name}[" + ",".join(f"{k}={items[i][1].get(k)}" for k in keys) + "]"
    return out


def _label_attacks(runs: list[RunData]) -> None:
    """Two runs of one preset name (and source) with different settings get the differing settings in their label."""
    labels = attack_labels([(r.attack_base or r.attack, attack_settings(r.attack_spec)) for r in runs])
    for r, label in zip(runs, labels):
        r.attack = label


def _label_models(runs: list[RunData]) -> None:
    """Runs of one model name with different training variants get the variant in their model name
    ("prompt-shapes-vqa (adversarial 4/255)"). Why: `robust-pt train` names a checkpoint METHOD-TASK however it
    was trained, and tables, figures, gaps and the CI gate tell models apart by name."""
    variants: dict[str, set[str]] = {}
    for r in runs:
        variants.setdefault(r.model, set()).add(r.variant)
    for r in runs:
        if r.variant and len(variants[r.model]) > 1:
            r.model = f"{r.model} ({r.variant})"


def load_runs(paths: Iterable[str | Path], allow_mixed: bool = False) -> list[RunData]:
    """Every run, checked to be one task (unless allow_mixed) and free of duplicates."""
    dirs = expand(paths)
    if not dirs:
        raise RunDirError("no run directory given; pass one or more directories made by `robust-pt attack`")
    runs = [load_run(d) for d in dirs]
    seen: dict[str, Path] = {}
    uniq = []
    for r in runs:
        key = str(r.path.resolve())
        if key in seen:
            continue
        seen[key] = r.path
        uniq.append(r)
    runs = uniq
    tasks = sorted({r.task for r in runs})
    if len(tasks) > 1 and not allow_mixed:
        first = {t: next(str(r.path) for r in runs if r.task == t) for t in tasks}
        listing = "; ".join(f"{t}: {first[t]}" for t in tasks)
        raise MixedRunsError(
            f"runs of {len(tasks)} different tasks given ({listing}); report one task at a time "
            f"or pass --allow-mixed to report them side by side"
        )
    keys: dict[tuple, Path] = {}
    for r in runs:
        fp = r.meta.get("fingerprint") or json.dumps(r.meta.get("config"), sort_keys=True, default=str)
        k = (fp, r.model, r.task)
        if k in keys:
            raise ReportError(f"{r.path} and {keys[k]} hold the same run; pass each run once")
        keys[k] = r.path
    _label_models(runs)
    _label_attacks(runs)
    return runs


def per_eps(run: RunData, eps: float):
    """The run's records at one eps, indexed by example id."""
    d = run.records
    d = d[at_eps(d["eps"].to_numpy(dtype=float), eps)]
    return d.set_index("id")
