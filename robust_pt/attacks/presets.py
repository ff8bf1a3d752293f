"""Attack presets: the YAML files in the top-level attacks/ folder, resolved into `AttackSpec`s.

A preset names an attack and every setting it runs with, so a run directory can record
the attack fully resolved and `--attack pgd` means the same thing on every machine.
Users can pass a path to their own preset file; unknown keys are refused (a typo must
not silently fall back to a default).

eps values may be written as numbers or fractions ("8/255"), in YAML and on the CLI.

Text attacks (kind: text) have no eps-ball: their "eps" is the word budget, the largest
fraction of the question's words the attack may change (at least one word), so a text
preset's default grid is a single pseudo-eps row such as [0.25], and `--eps 0.1,0.25,0.5`
sweeps the budget with the same survivors-only logic as an image eps sweep. Joint
attacks (kind: joint) sweep the image eps as usual and carry the text budget in
`max_words_fraction` and `queries`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable

from ..errors import AttackError, ConfigError
from . import methods as _methods

KINDS = ("image", "embedding", "text", "joint")
# TextAttack recipes (robust_pt/attacks/text/recipes.py) and the two joint orders (joint.py)
TEXT_METHODS = ("deepwordbug", "pwws", "textbugger", "textfooler", "bert-attack", "bae", "pruthi")
JOINT_METHODS = ("text-image", "image-text", "sga")
METHODS = _methods.names() + TEXT_METHODS + JOINT_METHODS  # gradient methods: attacks/methods.py
BACKENDS = ("ours", "torchattacks", "foolbox", "textattack")
NORMS = ("linf", "l2")
EPS_UNITS = ("pixel", "rms", "abs", "words")
# text-attack resources given by path (--embeddings, --mlm)
NEEDS_EMBEDDINGS = ("textbugger", "textfooler")
NEEDS_MLM = ("bert-attack", "bae")

# (kind, method) -> backends that implement it (gradient methods from their registry)
SUPPORT: dict[tuple[str, str], tuple[str, ...]] = {
    **_methods.backend_table(),
    **{("text", m): ("textattack",) for m in TEXT_METHODS},
    **{("joint", m): ("ours",) for m in JOINT_METHODS},  # the image part runs on our PGD
}
# methods that need logits over candidates (a closed-answer task or a plain classifier), as registered today
NEEDS_LOGITS = tuple(n for n in _methods.names() if any(m.needs_logits for m in _methods.all_named(n)))


@dataclass(frozen=True)
class AttackSpec:
    """A fully resolved attack preset (what run.json records).

    kind: image (perturb [0,1] pixels) or embedding (perturb Embeds.image and Embeds.text).
    method: pgd, fgsm, apgd, square, cw or autoattack.
    backend: ours (robust-pt's batched implementation), torchattacks or foolbox.
    norm: linf or l2.  eps_unit: pixel (image attacks: eps in [0,1] pixel units),
    rms (embedding attacks: eps in units of each example's embedding RMS, per modality)
    or abs (embedding attacks: absolute embedding units).
    steps: gradient iterations (apgd/cw/autoattack: iterations of the library attack).
    step_ratio: step size alpha = step_ratio * eps, unless `alpha` (absolute) is given.
    random_start, restarts: PGD-style random initialisation and extra random restarts.
    queries: black-box query budget (square; square inside autoattack).
    early_stop: stop attacking an example as soon as it is misclassified (closed tasks).
    eps: the default eps grid when none is given (text attacks: word budgets, see above).
    text_method (joint): the TextAttack recipe of the text part.
    max_words_fraction (joint): the text part's word budget.
    embeddings (textfooler, textbugger): counter-fitted word vectors, a text file of
    "word v1 v2 ..." lines.  mlm (bert-attack, bae): a local Hugging Face masked-LM dir.
    queries (text, joint): the text attack's query budget (candidate texts scored).
    target: a targeted attack's target (attacks/targeted.py): an answer of a closed task,
    random or least-likely; a caption; a box "x0,y0,x1,y1" in pixels. Empty: untargeted.
    """

    name: str
    description: str = ""
    kind: str = "image"
    method: str = "pgd"
    backend: str = "ours"
    norm: str = "linf"
    eps_unit: str = "pixel"
    steps: int = 10
    step_ratio: float | None = 0.25
    alpha: float | None = None
    random_start: bool = False
    restarts: int = 1
    queries: int | None = None
    early_stop: bool = True
    eps: tuple[float, ...] = field(default_factory=tuple)
    # method-specific
    loss: str = "ce"  # apgd: ce or dlr; square: margin or ce
    p_init: float = 0.8  # square
    c: float = 1.0  # cw
    kappa: float = 0.0  # cw
    lr: float = 0.01  # cw
    version: str = "standard"  # autoattack
    target_classes: int = 9  # autoattack: APGD-T / FAB-T target classes (reference: 9)
    # text and joint attacks (left out of `identity` while unset, so image run ids stay as they were)
    text_method: str = ""
    max_words_fraction: float | None = None
    embeddings: str = ""
    mlm: str = ""
    # targeted attacks (attacks/targeted.py): an answer, random, least-likely, a caption or a box
    target: str = ""
    path: str = ""  # where the preset was read from (informational)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["eps"] = list(self.eps)
        return d

    def step_size(self, eps: float) -> float:
        if self.alpha is not None:
            return float(self.alpha)
        m = _methods.get(self.kind, self.method)
        if m is not None and m.one_step:
            return float(eps)
        return float(self.step_ratio if self.step_ratio is not None else 0.25) * float(eps)

    @property
    def identity(self) -> dict:
        """What determines the records (everything but the description and where it came from)."""
        d = self.to_dict()
        d.pop("description")
        d.pop("path")
        for key in TEXT_KEYS:
            if d[key] in ("", None):
                d.pop(key)
        return d

    @property
    def text_recipe(self) -> str:
        """The TextAttack recipe this attack runs ("" for image and embedding attacks)."""
        return self.method if self.kind == "text" else self.text_method if self.kind == "joint" else ""


TEXT_KEYS = ("text_method", "max_words_fraction", "embeddings", "mlm", "target")


ALLOWED_KEYS: tuple[str, ...] = tuple(f.name for f in fields(AttackSpec) if f.name != "path")
# CLI / API overrides may set these (not the identity fields name/kind/method)
OVERRIDABLE: tuple[str, ...] = tuple(k for k in ALLOWED_KEYS if k not in ("name", "description", "kind", "method"))


# ----------------------------------------------------------------------------- eps parsing


def parse_eps_value(value: Any) -> float:
    """8/255, "8/255", 0.03, "0.03" -> float; ConfigError on anything else."""
    if isinstance(value, bool):
        raise ConfigError(f"bad eps value {value!r}; write numbers or fractions such as 8/255")
    if isinstance(value, (int, float)):
        v = float(value)
    else:
        s = str(value).strip()
        try:
            if "/" in s:
                num, den = s.split("/", 1)
                v = float(Fraction(num.strip())) / float(Fraction(den.strip()))
            else:
                v = float(s)
        except (ValueError, ZeroDivisionError):
            raise ConfigError(
                f"bad eps value {s!r}; write numbers or fractions such as 8/255, "
                f"separated by commas (e.g. 1/255,2/255,0.03)"
            ) from None
    if not math.isfinite(v):
        raise ConfigError(f"bad eps value {value!r}; eps must be a finite number")
    return v


def parse_eps(value: Any) -> list[float]:
    """A comma-separated string, a number or a list of them -> a list of floats (unsorted)."""
    if value is None:
        return []
    if hasattr(value, "tolist") and not isinstance(value, str):  # numpy arrays and scalars, tensors
        value = value.tolist()
    if isinstance(value, str):
        parts = [p for p in value.split(",") if p.strip()]
        if not parts:
            raise ConfigError(f"bad eps value {value!r}; write numbers or fractions such as 8/255")
        return [parse_eps_value(p) for p in parts]
    if isinstance(value, (list, tuple)):
        out: list[float] = []
        for v in value:
            out += parse_eps(v) if isinstance(v, str) else [parse_eps_value(v)]
        return out
    try:  # numpy scalars, tensors
        return [parse_eps_value(float(value))]
    except (TypeError, ValueError):
        raise ConfigError(f"bad eps value {value!r}; write numbers or fractions such as 8/255") from None


def _threat_of(kind: str):
    """The threat model of a kind that is not one of KINDS (registered, or built in lazily such as
    corruption), or None."""
    from .core import BUILTIN, registered, threat_model

    return registered(kind) or (threat_model(kind) if kind in BUILTIN else None)


def validate_eps(spec: AttackSpec, eps: Iterable[float]) -> list[float]:
    """Sorted, de-duplicated eps list; AttackError for eps <= 0 or (L-inf pixels) eps > 1, and what the
    threat model of any other kind refuses (corruption: severities 1-5)."""
    vals = sorted(set(float(e) for e in eps))
    if not vals:
        raise AttackError(f"no eps given for attack {spec.name} and its preset has no default; pass --eps")
    threat = _threat_of(spec.kind) if spec.kind not in KINDS else None
    if threat is not None:
        threat.check_eps(spec, vals)
    for e in vals:
        if e <= 0:
            raise AttackError(f"eps must be > 0, got {e:g}")
        if spec.kind == "text" and e > 1:
            raise AttackError(
                f"the eps of the text attack {spec.name} is its word budget, the largest fraction of "
                f"words it may change; it must lie in (0, 1], got {e:g}"
            )
        if spec.kind in ("image", "joint") and spec.norm == "linf" and e > 1:
            raise AttackError(
                f"eps {e:g} is larger than 1, the whole [0,1] pixel range, for the L-inf attack "
                f"{spec.name}; write e.g. 8/255"
            )
    return vals


# ----------------------------------------------------------------------------- presets


def preset_folder() -> Path:
    from ..paths import preset_dir

    return preset_dir("attacks")


def preset_files() -> dict[str, Path]:
    """name -> file of every shipped preset."""
    folder = preset_folder()
    if not folder.is_dir():
        return {}
    files = sorted(list(folder.glob("*.yaml")) + list(folder.glob("*.yml")))
    return {p.stem: p for p in files}


def list_presets() -> list[AttackSpec]:
    """Every shipped preset, resolved (sorted by name)."""
    return [load_preset(p) for _, p in sorted(preset_files().items())]


def _read_yaml(path: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"cannot read attack preset {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0] if str(err) else "syntax error"
        raise ConfigError(f"attack preset {path} is not valid YAML ({first})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"attack preset {path} must be a mapping of keys (name, kind, method, ...)")
    return data


def _coerce(spec_dict: dict, where: str) -> dict:
    """Check key names and value types of a preset / override mapping."""
    out: dict[str, Any] = {}
    for key, value in spec_dict.items():
        if key not in ALLOWED_KEYS:
            raise ConfigError(f"unknown key {key!r} in {where}; allowed keys: {', '.join(ALLOWED_KEYS)}")
        if value is None and key not in ("alpha", "step_ratio", "queries", "max_words_fraction"):
            continue
        if key == "eps":
            out[key] = tuple(parse_eps(value))
        elif key in ("steps", "restarts", "queries", "target_classes"):
            if value is None:
                out[key] = None
                continue
            if hasattr(value, "item") and not isinstance(value, bool):
                value = value.item()  # numpy / torch scalars
            if isinstance(value, bool) or not isinstance(value, int):
                try:
                    if isinstance(value, float) and value.is_integer():
                        value = int(value)
                    elif isinstance(value, str):
                        value = int(value)
                    else:
                        raise ValueError
                except ValueError:
                    raise ConfigError(f"{key} must be an integer in {where}, got {value!r}") from None
            out[key] = int(value)
        elif key in ("step_ratio", "alpha", "p_init", "c", "kappa", "lr", "max_words_fraction"):
            if value is None:
                out[key] = None
                continue
            try:
                out[key] = parse_eps_value(value)
            except ConfigError:
                raise ConfigError(f"{key} must be a number in {where}, got {value!r}") from None
        elif key in ("embeddings", "mlm"):
            out[key] = str(Path(str(value).strip()).expanduser().resolve()) if str(value).strip() else ""
        elif key in ("random_start", "early_stop"):
            if not isinstance(value, bool):
                raise ConfigError(f"{key} must be true or false in {where}, got {value!r}")
            out[key] = value
        else:
            out[key] = str(value).strip()
    return out


def check_spec(spec: AttackSpec) -> AttackSpec:
    """Validate values and their combination; AttackError says what fits. A kind registered as a
    threat model (attacks/core.py) is validated by its threat model."""
    from .core import kinds
    from .targeted import check_spec as check_target

    check_target(spec)  # a target only for the attacks that can aim (image / embedding pgd and fgsm, ours)
    if spec.kind not in KINDS:
        threat = _threat_of(spec.kind)
        if threat is None:
            known = list(KINDS) + [k for k in kinds() if k not in KINDS]
            raise AttackError(f"attack {spec.name}: unknown kind {spec.kind!r}; use one of {', '.join(known)}")
        threat.check_spec(spec)
        return _check_budgets(spec)
    known = _methods.names() + TEXT_METHODS + JOINT_METHODS  # live: methods registered since import count
    if spec.method not in known:
        raise AttackError(f"attack {spec.name}: unknown method {spec.method!r}; use one of {', '.join(known)}")
    if spec.backend not in BACKENDS:
        raise AttackError(f"attack {spec.name}: unknown backend {spec.backend!r}; use one of {', '.join(BACKENDS)}")
    if spec.norm not in NORMS:
        raise AttackError(f"attack {spec.name}: unknown norm {spec.norm!r}; use linf or l2")
    supported = {**SUPPORT, **_methods.backend_table()}.get((spec.kind, spec.method))
    if supported is None:
        hint = {
            "text": f"text attacks are {', '.join(TEXT_METHODS)}",
            "joint": f"joint attacks are {' or '.join(JOINT_METHODS)} (with text_method: RECIPE)",
        }.get(spec.kind, f"{spec.kind} attacks are {_or(_methods.names(spec.kind))}")
        raise AttackError(f"attack {spec.name}: method {spec.method} does not exist for {spec.kind} attacks; {hint}")
    if spec.backend not in supported:
        raise AttackError(
            f"attack {spec.name} ({spec.kind} {spec.method}) has no {spec.backend} backend; "
            f"use --backend {' or '.join(supported)}"
        )
    if spec.kind in ("text", "joint"):
        _check_text(spec)
    elif spec.text_method or spec.max_words_fraction is not None or spec.embeddings or spec.mlm:
        raise AttackError(
            f"attack {spec.name}: text_method, max_words_fraction, embeddings and mlm belong to text "
            f"and joint attacks, not {spec.kind} attacks"
        )
    if spec.kind == "text":
        if spec.eps_unit != "words":
            raise AttackError(f"attack {spec.name}: text attacks take eps in words (eps_unit: words), the word budget")
    elif spec.kind == "embedding":
        if spec.eps_unit not in ("rms", "abs"):
            raise AttackError(f"attack {spec.name}: embedding attacks take eps_unit rms or abs, not {spec.eps_unit!r}")
        if spec.norm != "linf":
            raise AttackError(f"attack {spec.name}: embedding attacks are L-inf (signed-gradient) attacks")
    elif spec.eps_unit != "pixel":
        raise AttackError(f"attack {spec.name}: image attacks take eps in pixel units (eps_unit: pixel)")
    _check_budgets(spec)
    if spec.alpha is not None and spec.alpha <= 0:
        raise AttackError(f"alpha must be > 0, got {spec.alpha}")
    if spec.step_ratio is not None and spec.step_ratio <= 0:
        raise AttackError(f"step_ratio must be > 0, got {spec.step_ratio}")
    if spec.target_classes <= 0:
        raise AttackError(f"target_classes must be a positive integer, got {spec.target_classes}")
    method = _methods.get(spec.kind, spec.method)
    if method is not None and method.check is not None:
        method.check(spec)  # the combinations this method refuses (attacks/methods.py)
    return spec


def _or(names) -> str:
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _check_budgets(spec: AttackSpec) -> AttackSpec:
    if spec.steps is None or spec.steps <= 0:
        raise AttackError(f"steps must be a positive integer, got {spec.steps}")
    if spec.restarts <= 0:
        raise AttackError(f"restarts must be a positive integer, got {spec.restarts}")
    if spec.queries is not None and spec.queries <= 0:
        raise AttackError(f"queries must be a positive integer, got {spec.queries}")
    return spec


def _check_text(spec: AttackSpec) -> None:
    """Text and joint presets: the recipe, the word and query budgets, which resource fits which recipe.

    Whether a needed resource (--embeddings, --mlm) was given is checked when the attack
    runs (robust_pt.attacks.text.recipes.check_resources), so `list attacks` can show every preset.
    """
    recipe = spec.text_recipe
    if spec.kind == "joint":
        if recipe not in TEXT_METHODS:
            raise AttackError(f"attack {spec.name}: a joint attack needs text_method, one of {', '.join(TEXT_METHODS)}")
        if spec.max_words_fraction is None:
            raise AttackError(
                f"attack {spec.name}: a joint attack needs its text budget max_words_fraction (e.g. 0.25)"
            )
    elif spec.text_method or spec.max_words_fraction is not None:
        raise AttackError(
            f"attack {spec.name}: a text attack's word budget is its eps (e.g. eps: [0.25]); "
            f"text_method and max_words_fraction belong to joint attacks"
        )
    if spec.max_words_fraction is not None and not 0 < spec.max_words_fraction <= 1:
        raise AttackError(f"max_words_fraction must lie in (0, 1], got {spec.max_words_fraction:g}")
    if spec.queries is not None and spec.queries <= 0:
        raise AttackError(f"the query budget must be a positive integer, got {spec.queries}")
    if spec.embeddings and recipe not in NEEDS_EMBEDDINGS:
        raise AttackError(
            f"attack {spec.name}: {recipe} uses no word embeddings (only "
            f"{' and '.join(NEEDS_EMBEDDINGS)} do); drop --embeddings"
        )
    if spec.mlm and recipe not in NEEDS_MLM:
        raise AttackError(
            f"attack {spec.name}: {recipe} uses no masked language model (only "
            f"{' and '.join(NEEDS_MLM)} do); drop --mlm"
        )


def load_preset(path: Path) -> AttackSpec:
    """Read and validate one preset file."""
    path = Path(path)
    raw = _read_yaml(path)
    data = _coerce(raw, f"attack preset {path}")
    data.setdefault("name", path.stem)
    spec = AttackSpec(**data, path=str(path))
    m = _methods.get(spec.kind, spec.method)
    if m is not None and m.default_queries and "queries" not in raw:
        spec = replace(spec, queries=m.default_queries)
    if spec.kind == "text":  # what a text preset means when it leaves them out
        spec = replace(spec, eps_unit=raw.get("eps_unit", "words"), backend=raw.get("backend", "textattack"))
    return check_spec(spec)


def resolve(preset_or_path: str | Path | AttackSpec, **overrides) -> AttackSpec:
    """A preset name, a path to a preset file, or an AttackSpec, plus overrides -> AttackSpec."""
    if isinstance(preset_or_path, AttackSpec):
        spec = preset_or_path
    else:
        ref = str(preset_or_path)
        files = preset_files()
        p = Path(ref).expanduser()
        if ref in files:
            spec = load_preset(files[ref])
        elif p.suffix in (".yaml", ".yml") or p.is_file() or "/" in ref:
            if not p.is_file():
                raise AttackError(
                    f"attack preset file {p} does not exist; known presets: {', '.join(files) or '(none)'}"
                )
            spec = load_preset(p)
        else:
            raise AttackError(
                f"unknown attack {ref!r}; known presets: {', '.join(files) or '(none)'} "
                f"(or pass a path to a preset .yaml)"
            )
    ov = {k: v for k, v in overrides.items() if v is not None}
    for key in ov:
        if key not in OVERRIDABLE:
            allowed = ", ".join(OVERRIDABLE)
            if key in ALLOWED_KEYS:
                raise ConfigError(
                    f"{key!r} cannot be overridden (it defines the attack); write a preset file "
                    f"instead; overridable: {allowed}"
                )
            raise ConfigError(f"unknown attack option {key!r}; allowed: {allowed}")
    m = _methods.get(spec.kind, spec.method)
    if "steps" in ov and m is not None and m.query_budget and "queries" not in ov:
        # the one budget knob of a black-box attack is its number of queries
        ov["queries"] = ov.pop("steps")
    ov = _coerce(ov, f"the overrides of attack {spec.name}")
    return check_spec(replace(spec, **ov))
