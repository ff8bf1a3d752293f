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

Every value is read by the type its declaring dataclass gives it (attacks/params.py): the
method's parameters (attacks/methods.py) or AttackSpec's common fields; a key the method
does not declare is refused, whether in a preset, an override or a recipe entry. The run
fingerprint (`AttackSpec.identity`) of the settings the first methods had is what it always
was (`legacy_identity`), so committed runs resume; tests/assets/attack_identities.json pins it.
"""

from __future__ import annotations

from dataclasses import Field, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Iterable

from ..errors import AttackError, ConfigError
from . import methods as _methods
from . import params as _params
from .params import parse_eps, parse_eps_value  # noqa: F401  (presets.parse_eps: one definition)

KINDS = ("image", "embedding", "text", "joint")
METHODS = _methods.names()
BACKENDS = ("ours", "torchattacks", "foolbox", "textattack")
NORMS = ("linf", "l2")
EPS_UNITS = ("pixel", "rms", "abs", "words")


def text_methods() -> tuple[str, ...]:
    """The TextAttack recipes (attacks/text/recipes.py), registered in attacks/methods.py as the gradient
    methods are; asked live, so a recipe registered later counts."""
    return _methods.names("text")


def joint_methods() -> tuple[str, ...]:
    """The joint orders (attacks/joint.py), registered in attacks/methods.py."""
    return _methods.names("joint")


def needing(resource: str) -> tuple[str, ...]:
    """The text recipes that read `resource` (embeddings: --embeddings, mlm: --mlm)."""
    return tuple(n for n in text_methods() if resource in _methods.get("text", n).resources)


# (kind, method) -> backends that implement it (joint orders: the image part runs on our PGD)
SUPPORT: dict[tuple[str, str], tuple[str, ...]] = _methods.backend_table()
# gradient methods that need logits over candidates (a closed-answer task or a plain classifier)
NEEDS_LOGITS = tuple(
    n
    for n in _methods.names()
    if any(m.needs_logits and m.kind in ("image", "embedding") for m in _methods.all_named(n))
)


@dataclass(frozen=True)
class AttackSpec:
    """A fully resolved attack preset (what run.json records).

    The common fields (COMMON_KEYS) apply to every method; the settings the first methods
    had (steps ... target_classes, text_method ... mlm) stay fields because their values
    are the run fingerprint (`identity`), but a preset may set only those its method's
    parameter dataclass declares (attacks/methods.py; `params` is that typed view). A new
    method's own settings live in `settings`, so adding one changes no field here.

    kind: image (perturb [0,1] pixels), embedding (perturb Embeds.image and Embeds.text),
    text, joint, or a registered threat model's kind (corruption, ...).
    method: a method registered for the kind (attacks/methods.py).
    backend: ours (robust-pt's batched implementation), torchattacks or foolbox.
    norm: linf or l2.  eps_unit: pixel (image attacks: eps in [0,1] pixel units),
    rms (embedding attacks: eps in units of each example's embedding RMS, per modality)
    or abs (embedding attacks: absolute embedding units).
    steps: gradient iterations (apgd/cw/autoattack: iterations of the library attack).
    step_ratio: step size alpha = step_ratio * eps, unless `alpha` (absolute) is given.
    random_start, restarts: PGD-style random initialisation and extra random restarts.
    queries: the query budget (square and square inside autoattack; text and joint: the
    candidate texts a text attack may score).
    early_stop: stop attacking an example as soon as it is misclassified (closed tasks).
    eps: the default eps grid when none is given (text attacks: word budgets, see above).
    text_method (joint): the TextAttack recipe of the text part.
    max_words_fraction (joint): the text part's word budget.
    embeddings (textfooler, textbugger): counter-fitted word vectors, a text file of
    "word v1 v2 ..." lines.  mlm (bert-attack, bae): a local Hugging Face masked-LM dir.
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
    embeddings: str = _params.setting("", path=True)
    mlm: str = _params.setting("", path=True)
    # targeted attacks (attacks/targeted.py): an answer, random, least-likely, a caption or a box
    target: str = ""
    # the settings of a method's parameters that are not fields above (sorted (name, value) pairs)
    settings: tuple[tuple[str, Any], ...] = ()
    path: str = ""  # where the preset was read from (informational)

    def to_dict(self) -> dict:
        """What run.json records as the preset (settings only when the method has some of its own)."""
        d = asdict(self)
        d["eps"] = list(self.eps)
        d.pop("settings")
        if self.settings:
            d = {**{k: v for k, v in d.items() if k != "path"}, "settings": dict(self.settings), "path": self.path}
        return d

    @property
    def params(self) -> Any:
        """The method's own typed parameters (its dataclass in attacks/methods.py), or None."""
        m = method_of(self.kind, self.method)
        return m.params(self) if m is not None else None

    def step_size(self, eps: float) -> float:
        if self.alpha is not None:
            return float(self.alpha)
        m = _methods.get(self.kind, self.method)
        if m is not None and m.one_step:
            return float(eps)
        return float(self.step_ratio if self.step_ratio is not None else 0.25) * float(eps)

    @property
    def identity(self) -> dict:
        """What determines the records: the run fingerprint's attack part (legacy_identity)."""
        return legacy_identity(self)

    @property
    def text_recipe(self) -> str:
        """The TextAttack recipe this attack runs ("" for image and embedding attacks)."""
        return self.method if self.kind == "text" else self.text_method if self.kind == "joint" else ""


TEXT_KEYS = ("text_method", "max_words_fraction", "embeddings", "mlm", "target")
# AttackSpec's fields before methods declared their parameters, in their order: the fingerprint
LEGACY_KEYS: tuple[str, ...] = tuple(f.name for f in fields(AttackSpec) if f.name not in ("settings", "path"))


def legacy_identity(spec: AttackSpec) -> dict:
    """The run fingerprint's attack part, exactly as it always was: every legacy field but the
    description (eps as a list), the text and target fields left out while unset, and a new
    method's own settings (`settings`) only when it has some, so no existing run id moves."""
    d = {k: getattr(spec, k) for k in LEGACY_KEYS if k != "description"}
    d["eps"] = list(spec.eps)
    for key in TEXT_KEYS:
        if d[key] in ("", None):
            d.pop(key)
    method = _methods.get(spec.kind, spec.method)
    speed = {f.name for f in fields(method.params_class) if f.metadata.get("speed")} if method else set()
    settings = {k: v for k, v in spec.settings if k not in speed}  # params.setting(speed=True): not what, how fast
    if settings:
        d["settings"] = settings
    return d


ALLOWED_KEYS: tuple[str, ...] = LEGACY_KEYS  # a preset of a kind without registered methods
# keys every preset may set, whatever its method; the method's parameters come on top
COMMON_KEYS = ("name", "description", "kind", "method", "backend", "norm", "eps_unit", "early_stop", "eps", "target")
DEFINING = ("name", "description", "kind", "method")  # what an override may not change
# CLI / API overrides may set these (not the identity fields name/kind/method)
OVERRIDABLE: tuple[str, ...] = tuple(k for k in ALLOWED_KEYS if k not in DEFINING)


def method_of(kind: str, method: str):
    """The registered method (attacks/methods.py) of a kind, loading a lazily built-in kind's module
    (its corruptions register there); None when there is none."""
    m = _methods.get(kind, method)
    if m is None and kind not in KINDS and isinstance(kind, str):
        _threat_of(kind)
        m = _methods.get(kind, method)
    return m


def keys_of(m) -> tuple[str, ...]:
    """The keys a preset of method `m` may set (every legacy key when no method is registered)."""
    if m is None:
        return ALLOWED_KEYS
    return COMMON_KEYS + tuple(f.name for f in fields(m.params_class) if f.name not in COMMON_KEYS)


def option_names() -> tuple[str, ...]:
    """Every key an override or a recipe attack entry may set for some method (the built-in kinds beyond
    KINDS register theirs when imported: certification's sigma, n0, n; none of them imports torch)."""
    import importlib

    from .core import BUILTIN

    for kind, where in BUILTIN.items():
        if kind not in KINDS:
            importlib.import_module(where.split(":")[0])
    return tuple(k for k in COMMON_KEYS if k not in DEFINING) + _methods.setting_names()


# ----------------------------------------------------------------------------- eps checks (parsing: params.py)


def _threat_of(kind: str):
    """The threat model of a kind that is not one of KINDS (registered, or built in lazily such as
    corruption), or None."""
    from .core import BUILTIN, registered, threat_model

    return registered(kind) or (threat_model(kind) if kind in BUILTIN else None)


def validate_eps(spec: AttackSpec, eps: Iterable[float]) -> list[float]:
    """Sorted, de-duplicated eps list; AttackError for eps <= 0 (0 where the threat model declares
    `zero_eps`) or (L-inf pixels) eps > 1, and what the threat model of any other kind refuses
    (corruption: severities 1-5; certification: negative radii)."""
    vals = sorted(set(float(e) for e in eps))
    if not vals:
        raise AttackError(f"no eps given for attack {spec.name} and its preset has no default; pass --eps")
    threat = _threat_of(spec.kind) if spec.kind not in KINDS else None
    if threat is not None:
        threat.check_eps(spec, vals)
    zero_ok = bool(getattr(threat, "zero_eps", False))  # certification: radius 0 is the smoothed accuracy
    for e in vals:
        if e < 0 or (e == 0 and not zero_ok):
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


def _declared(m, key: str) -> tuple[Any, Field | None]:
    """(the type, the field) that declares `key`: the method's parameters, else AttackSpec's field."""
    if m is not None and key in _params.hints(m.params_class):
        return _params.hints(m.params_class)[key], {f.name: f for f in fields(m.params_class)}[key]
    return _params.hints(AttackSpec)[key], {f.name: f for f in fields(AttackSpec)}[key]


def _setting_of(key: str) -> str:
    """ " (KEY is a setting of image cw)": the methods that do declare a key another refuses."""
    others = sorted({f"{o.kind} {o.name}" for o in _methods._methods.values() if key in _params.hints(o.params_class)})
    return f" ({key} is a setting of {', '.join(others[:4])}{', ...' if len(others) > 4 else ''})" if others else ""


def _unknown_key(key: str, m, where: str, allowed: tuple[str, ...]) -> ConfigError:
    of = f" (those of {m.kind} {m.name})" if m is not None else ""
    return ConfigError(f"unknown key {key!r} in {where}{_setting_of(key)}; allowed keys: {', '.join(allowed)}{of}")


def _coerce(spec_dict: dict, where: str, m=None) -> tuple[dict, dict]:
    """Check key names against method `m`'s parameters and read each value by its declared type:
    (AttackSpec fields, the method's own settings)."""
    allowed = keys_of(m)
    out: dict[str, Any] = {}
    own: dict[str, Any] = {}
    spec_fields = {f.name for f in fields(AttackSpec)}
    for key, value in spec_dict.items():
        if key not in allowed:
            raise _unknown_key(key, m, where, allowed)
        annotation, f = _declared(m, key)
        if value is None and not _params.allows_none(annotation):
            continue  # `key:` with no value: the default
        (out if key in spec_fields else own)[key] = _params.coerce(key, value, annotation, f, where)
    return out, own


def _check_params(spec: AttackSpec, m) -> None:
    """The ranges and choices the method's parameter fields declare (attacks/params.py)."""
    p = m.params(spec)
    for f in fields(m.params_class):
        _params.check_range(f.name, getattr(p, f.name), f, f"attack {spec.name}")


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
        if (m := method_of(spec.kind, spec.method)) is not None:
            _check_params(spec, m)
            if m.check is not None:
                m.check(spec)  # the combinations this method refuses
        return _check_budgets(spec)
    known = tuple(dict.fromkeys(n for k in KINDS for n in _methods.names(k)))  # live: registered since import
    if spec.method not in known:
        raise AttackError(f"attack {spec.name}: unknown method {spec.method!r}; use one of {', '.join(known)}")
    if spec.backend not in BACKENDS:
        raise AttackError(f"attack {spec.name}: unknown backend {spec.backend!r}; use one of {', '.join(BACKENDS)}")
    if spec.norm not in NORMS:
        raise AttackError(f"attack {spec.name}: unknown norm {spec.norm!r}; use linf or l2")
    supported = _methods.backend_table().get((spec.kind, spec.method))
    if supported is None:
        hint = {
            "text": f"text attacks are {', '.join(text_methods())}",
            "joint": f"joint attacks are {' or '.join(joint_methods())} (with text_method: RECIPE)",
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
    method = _methods.get(spec.kind, spec.method)
    _check_params(spec, method)  # the ranges its parameters declare
    _check_budgets(spec)
    if method.check is not None:
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
        if recipe not in text_methods():
            raise AttackError(
                f"attack {spec.name}: a joint attack needs text_method, one of {', '.join(text_methods())}"
            )
        if spec.max_words_fraction is None:
            raise AttackError(
                f"attack {spec.name}: a joint attack needs its text budget max_words_fraction (e.g. 0.25)"
            )
    elif spec.text_method or spec.max_words_fraction is not None:
        raise AttackError(
            f"attack {spec.name}: a text attack's word budget is its eps (e.g. eps: [0.25]); "
            f"text_method and max_words_fraction belong to joint attacks"
        )
    if spec.embeddings and recipe not in needing("embeddings"):
        raise AttackError(
            f"attack {spec.name}: {recipe} uses no word embeddings (only "
            f"{' and '.join(needing('embeddings'))} do); drop --embeddings"
        )
    if spec.mlm and recipe not in needing("mlm"):
        raise AttackError(
            f"attack {spec.name}: {recipe} uses no masked language model (only "
            f"{' and '.join(needing('mlm'))} do); drop --mlm"
        )


def load_preset(path: Path) -> AttackSpec:
    """Read and validate one preset file: every key checked against its method's parameters."""
    path = Path(path)
    raw = _read_yaml(path)
    m = method_of(str(raw.get("kind", "image")), str(raw.get("method", "pgd")))
    data, own = _coerce(raw, f"attack preset {path}", m)
    data.setdefault("name", path.stem)
    spec = AttackSpec(**data, settings=tuple(sorted(own.items())), path=str(path))
    if m is not None and m.default_queries and "queries" not in raw:
        spec = replace(spec, queries=m.default_queries)
    if spec.kind == "text":  # what a text preset means when it leaves them out
        spec = replace(spec, eps_unit=raw.get("eps_unit", "words"), backend=raw.get("backend", "textattack"))
    return check_spec(spec)


def _preset(ref: str) -> AttackSpec:
    """A preset name or a path to a preset file -> its AttackSpec."""
    files = preset_files()
    p = Path(ref).expanduser()
    if ref in files:
        return load_preset(files[ref])
    if p.suffix in (".yaml", ".yml") or p.is_file() or "/" in ref:
        if not p.is_file():
            raise AttackError(f"attack preset file {p} does not exist; known presets: {', '.join(files) or '(none)'}")
        return load_preset(p)
    raise AttackError(
        f"unknown attack {ref!r}; known presets: {', '.join(files) or '(none)'} (or pass a path to a preset .yaml)"
    )


def resolve(preset_or_path: str | Path | AttackSpec, **overrides) -> AttackSpec:
    """A preset name, a path to a preset file, or an AttackSpec, plus overrides -> AttackSpec.
    Overrides are checked against the method's parameters as a preset's keys are."""
    spec = preset_or_path if isinstance(preset_or_path, AttackSpec) else _preset(str(preset_or_path))
    ov = {k: v for k, v in overrides.items() if v is not None}
    m = method_of(spec.kind, spec.method)
    allowed = tuple(k for k in keys_of(m) if k not in DEFINING)
    for key in ov:
        if key in DEFINING:
            raise ConfigError(
                f"{key!r} cannot be overridden (it defines the attack); write a preset file "
                f"instead; overridable: {', '.join(allowed)}"
            )
        if key not in allowed and not (key == "steps" and m is not None and m.black_box):
            of = f" for {m.kind} {m.name}" if m is not None else ""
            raise ConfigError(f"unknown attack option {key!r}{of}{_setting_of(key)}; allowed: {', '.join(allowed)}")
    if "steps" in ov and m is not None and m.black_box and "queries" not in ov:
        # the one budget knob of a black-box attack is its number of queries
        ov["queries"] = ov.pop("steps")
    data, own = _coerce(ov, f"the overrides of attack {spec.name}", m)
    settings = tuple(sorted({**dict(spec.settings), **own}.items()))
    return check_spec(replace(spec, **data, settings=settings))
