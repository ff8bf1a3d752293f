"""Experiment recipes: base x tasks x tuning methods x attacks x eps, in one YAML file.

    robust-pt run recipes/demo.yaml [--out reports/demo]

A recipe is validated whole before any work starts (unknown keys, unknown tasks or
attacks, eps grids that are not increasing, a missing base: one line each). Running it
tunes what is missing (a checkpoint whose config matches is reused), runs every attack
through the engine (each run directory resumes), then writes the report. Interrupting
it at any point and running it again therefore ends with the same report.

`nproc: N` (top level, or per attack entry) runs each attack on N local processes
(torch.distributed; robust_pt/runtime/distributed.py); the report is the same as with one.
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from .errors import CheckpointError, ConfigError

RECIPE_KEYS = {
    "name",
    "description",
    "base",
    "tasks",
    "tuning",
    "attacks",
    "examples",
    "task_examples",
    "seed",
    "batch_size",
    "attack_batch",
    "split",
    "zoo",
    "nproc",
    "evaluate_on",
}
#: Keys of an attack entry besides the attack's options, which come from the attack methods' registry
#: (attacks.presets.option_names(); build() then checks them against the entry's method).
ATTACK_ENTRY_KEYS = frozenset({"attack", "eps", "tag", "examples", "nproc", "tasks", "surrogate", "tuning"})
_TRAIN_FIELDS = ("steps", "batch_size", "lr", "train_size", "eval_size")
#: Keys of every tuning entry; each method adds its own options (tuning/registry.py, tuning_keys).
TUNING_ENTRY_KEYS = frozenset({"method", "name", "tasks", "base", "adversarial", "noise_sigma", *_TRAIN_FIELDS})
#: Keys of a tuning entry's `adversarial:` mapping (tuning/adversarial.py AdversarialConfig; the CLI's --adv-*).
ADVERSARIAL_KEYS = ("attack", "eps", "steps", "step_size", "loss", "beta", "ratio")


# `method: none` in a recipe's tuning list attacks the base itself, untuned: nothing is
# trained, so its numbers do not depend on training being bit-reproducible across CPUs
# (what CI's dogfood gate needs, recipes/ci-smoke.yaml).
UNTUNED = "none"


@dataclass(frozen=True)
class TuningEntry:
    name: str
    tuning: Any  # TuningConfig (an HFTrainConfig on a Hugging Face base), or None for the untuned base
    train: Any  # TrainConfig, or None for the untuned base and on a Hugging Face base
    tasks: tuple[str, ...] | None = None  # the recipe's tasks it is tuned on (default: all)
    adversarial: Any = None  # an AdversarialConfig: tuned on the engine's attacks (tuning/adversarial.py)
    base: str | None = None  # the base it is tuned from, where not the recipe's (built-in bases)
    noise_sigma: float | None = None  # tuned on x + N(0, sigma^2) (tuning/noise.py), for randomized smoothing

    def base_of(self, recipe_base: str) -> str:
        return self.base or recipe_base

    def adversarial_record(self) -> dict | None:
        """What its checkpoint's meta and its runs' model_meta say of its adversarial tuning (None: clean)."""
        return None if self.adversarial is None else self.adversarial.record()


@dataclass(frozen=True)
class AttackEntry:
    attack: str
    eps: tuple[float, ...] | None
    tag: str
    overrides: tuple[tuple[str, Any], ...]
    examples: int | None
    nproc: int | None = None  # processes for this attack (default: the recipe's nproc)
    tasks: tuple[str, ...] | None = None  # the recipe's tasks this attack runs on (default: all)
    surrogate: tuple[str, ...] | None = None  # transfer: the tuning entries it is crafted on (several: an ensemble)
    tuning: tuple[str, ...] | None = None  # the tuning entries it attacks (default: all; an expensive attack on a few)

    @property
    def label(self) -> str:
        source = f"-from-{'+'.join(self.surrogate)}" if self.surrogate else ""
        return self.attack + (f"-{self.tag}" if self.tag else "") + source


class Run(NamedTuple):
    """One attack run of a recipe: the task it attacks, the tuning and attack entries, its directory name,
    and the task the model was tuned on (another only with `evaluate_on`: novel classes)."""

    task: str
    tuning: TuningEntry
    attack: AttackEntry
    name: str
    trained: str


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    base: str
    tasks: tuple[str, ...]
    tuning: tuple[TuningEntry, ...]
    attacks: tuple[AttackEntry, ...]
    examples: int
    seed: int
    batch_size: int
    split: str
    zoo: str | None
    path: Path | None = field(default=None, compare=False)
    nproc: int = 1  # processes per attack run (torch.distributed, robust_pt/runtime/distributed.py)
    task_examples: tuple[tuple[str, int], ...] = ()  # examples per task where it differs from `examples`
    attack_batch: int | str = "auto"  # examples attacked together (EvalRequest.attack_batch); not in a run's identity
    # tuned task -> the tasks its models are attacked on, where not itself (zero-shot classification: base and
    # novel classes); a run on another task is named by that task
    evaluate_on: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def attacked_on(self, task: str) -> tuple[str, ...]:
        """The tasks the models tuned on `task` are attacked on."""
        return dict(self.evaluate_on).get(task, (task,))

    @property
    def hf_base(self) -> bool:
        """Whether the base is a Hugging Face model directory (tuned by robust_pt/tuning/hf_train.py)."""
        from .tuning.hf_train import is_hf_dir

        return not str(self.base).startswith("builtin:") and is_hf_dir(self.base)

    def examples_for(self, task: str, a: "AttackEntry") -> int:
        """The examples of one run: the attack entry's, else the task's, else the recipe's."""
        return a.examples or dict(self.task_examples).get(task) or self.examples

    def checkpoints(self) -> list[tuple[str, TuningEntry]]:
        """Every (task, tuning entry) the recipe tunes: an entry's `tasks` limits it."""
        return [(task, t) for task in self.tasks for t in self.tuning if t.tasks is None or task in t.tasks]

    def only(self, names) -> "Recipe":
        """The recipe with only the tuning entries called `names` (an unknown name: one line)."""
        from dataclasses import replace

        have = [t.name for t in self.tuning]
        if not names:
            raise ConfigError(f"--only names no tuning entry of recipe {self.name}; its entries: {', '.join(have)}")
        bad = [n for n in names if n not in have]
        if bad:
            raise ConfigError(f"recipe {self.name} has no tuning entry {bad[0]!r}; its entries: {', '.join(have)}")
        return replace(self, tuning=[t for t in self.tuning if t.name in names])

    def runs(self) -> list[Run]:
        """Every attack run (an attack entry's `tasks` name tuned tasks). A model whose classes are fixed by its
        tuning (a linear probe) is attacked, and crafts transfer inputs, on its own task only: it has no zero-shot
        to other class sets."""
        from .tasks.named import slug

        named = {e.name: e for e in self.tuning}
        return [
            Run(on, t, a, f"{slug(on)}_{t.name}_{a.label}", task)
            for task, t in self.checkpoints()
            for on in self.attacked_on(task)
            for a in self.attacks
            if (a.tasks is None or task in a.tasks) and (a.tuning is None or t.name in a.tuning)
            if on == task or not any(_closed_classes(e) for e in [t, *(named.get(s) for s in a.surrogate or ())] if e)
        ]


def _closed_classes(t: TuningEntry) -> bool:
    """Whether the entry's method scores only the classes it was tuned on (TuningMethod.task_classes)."""
    spec = getattr(t.tuning, "spec", None)
    return spec is not None and spec.task_classes is not None


def tuning_keys(method: str, hf: bool = False) -> set[str]:
    """The keys a tuning entry of `method` accepts: the shared ones and the method's own options
    (on a Hugging Face base, `hf`: the options it reads there)."""
    from .tuning import registry

    if hf:
        return set(TUNING_ENTRY_KEYS) | set(registry.hf_method(method).hf.options)
    return set(TUNING_ENTRY_KEYS) | set(registry.builtin_method(method).option_names)


def _adversarial(value):
    """A tuning entry's `adversarial:` mapping -> AdversarialConfig (None when absent); bad keys or values: one line."""
    if value is None:
        return None
    from .tuning.adversarial import AdversarialConfig

    if not isinstance(value, dict) or "attack" not in value or "eps" not in value:
        raise ConfigError(
            f"adversarial must be a mapping with attack and eps (e.g. {{attack: pgd, eps: 4/255}}), got {value!r}"
        )
    _unknown("adversarial", value, set(ADVERSARIAL_KEYS))
    return AdversarialConfig(**value)


def _tuning_entry(where: str, entry: dict, seed: int, hf: Path | None = None):
    """(tuning config, train config, adversarial config, noise sigma) of one tuning entry: a TuningConfig and a
    TrainConfig, or on a Hugging Face base (`hf`, its directory) an HFTrainConfig (method, options and schedule)
    and None; unknown keys, bad values and a method that cannot tune that base: one line."""
    from .tuning import registry
    from .tuning.config import TrainConfig, TuningConfig
    from .tuning.noise import check_sigma

    find = registry.hf_method if hf else registry.builtin_method
    try:
        spec = find(entry["method"])
    except ConfigError as err:
        raise ConfigError(f"{where}: {err} (or {UNTUNED}: the untuned base)") from None
    where = f"{where} ({entry.get('name', spec.name)})"
    allowed = tuning_keys(spec.name, hf is not None)
    extra = sorted(set(entry) - allowed)
    if extra:
        owner = [m.name for m in registry.methods() if extra[0] in m.option_names]
        hint = f" ({extra[0]} is an option of {' and '.join(owner)}, not of {spec.name})" if owner else ""
        if hf and spec.name in owner:
            hint = f" ({extra[0]} is an option of {spec.name} on the built-in model, not read on Hugging Face bases)"
        raise ConfigError(f"{where}: unknown key {extra[0]!r}{hint}; allowed keys: {', '.join(sorted(allowed))}")
    hyper = {k: v for k, v in entry.items() if k in spec.option_names}
    sched = {k: v for k, v in entry.items() if k in _TRAIN_FIELDS}
    try:
        if isinstance(sched.get("lr"), str):  # YAML reads 3e-3 (no dot) as a string
            try:
                sched["lr"] = float(sched["lr"])
            except ValueError:
                raise ConfigError(f"lr must be a number, got {sched['lr']!r}") from None
        adv = _adversarial(entry.get("adversarial"))
        noise = check_sigma(entry.get("noise_sigma"), adv, "noise_sigma")
        if hf:
            from .models.loading import architecture_of
            from .tuning.hf_train import HFTrainConfig, check_method

            check_method(spec.name, architecture_of(Path(hf)), hf)  # before any entry trains
            cfg = HFTrainConfig(method=spec.name, seed=seed, options=hyper, adversarial=adv, noise_sigma=noise, **sched)
            return cfg, None, adv, noise
        return TuningConfig(spec.name, **hyper), TrainConfig(seed=seed, **sched), adv, noise
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


def _own_base(where: str, entry: dict, hf_base: Path | None, path: Path) -> str | None:
    """A tuning entry's own `base:` (tuned or untuned entries; built-in bases only), checked to exist."""
    base = entry.get("base")
    if base is None:
        return None
    if hf_base is not None:
        raise ConfigError(f"{where}: an entry's own base is for built-in bases; on {hf_base} every entry tunes it")
    _check_base(str(base), path)
    return str(base)


def _check_adversarial(where: str, t: TuningEntry, probes: dict, tasks: list) -> None:
    """An adversarial entry's settings against each task it is tuned on (TRADES needs candidate answers)."""
    from .tuning.adversarial import check_task

    for task in t.tasks or tasks:
        try:
            check_task(t.adversarial, probes[task])
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from None


def _unknown(where: str, data: dict, allowed: set) -> None:
    extra = sorted(set(data) - allowed)
    if extra:
        raise ConfigError(f"{where}: unknown key {extra[0]!r}; allowed keys: {', '.join(sorted(allowed))}")


def _positive(where: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ConfigError(f"{where} must be a positive integer, got {v!r}")
    return v


def recorded_task(task: str) -> str:
    """The task name a run of a recipe's task records in run.json (tasks/named.py's recorded_task)."""
    from .tasks.named import recorded_task as recorded

    return recorded(task)


def _probe_tasks(where: str, tasks: list, split: str) -> dict:
    """{task: a one-example probe (its kind and answers)} of a recipe's tasks: any registered task a victim
    can judge, or a dataset in a registered format as `--task` takes it ("vqav2:DIR"); else one line."""
    from .errors import TaskError
    from .tasks import formats, load_task, named

    choices = [n for n in named.names() if named.attackable(n)]
    formats_line = ", ".join(f"{f}:DIR" for f in formats.names())
    for t in tasks:
        if not isinstance(t, str) or not (formats.is_real(t) or named.attackable(t)):
            raise ConfigError(
                f"{where}: unknown task {t!r}; choose from {', '.join(choices)}, or a dataset in its official "
                f"format: {formats_line}"
            )
    try:
        return {t: load_task(t, split=split if formats.is_real(t) else "test", limit=1) for t in tasks}
    except TaskError as err:
        raise ConfigError(f"{where}: {err}") from None


def find_recipe(name_or_path: str | Path) -> Path:
    """A path to a recipe file, or the name of a shipped one (recipes/NAME.yaml)."""
    from .paths import preset_dir

    p = Path(name_or_path)
    if p.is_file():
        return p
    shipped = preset_dir("recipes") / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    known = sorted(q.stem for q in preset_dir("recipes").glob("*.yaml"))
    raise ConfigError(f"no recipe file {name_or_path}; pass a path or one of: {', '.join(known) or '(none)'}")


def _read_yaml(path: Path) -> dict:
    """A recipe file's mapping (not YAML, or not a mapping: one line)."""
    import yaml

    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"recipe {path} is not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"recipe {path} must be a mapping of keys such as tasks, tuning, attacks")
    return raw


def load_recipe(name_or_path: str | Path) -> Recipe:
    """Read and validate a recipe (everything is checked before any training starts)."""
    path = find_recipe(name_or_path)
    raw = _read_yaml(path)
    where = f"recipe {path.name}"
    _unknown(where, raw, RECIPE_KEYS)
    for key in ("tasks", "tuning", "attacks"):
        if not isinstance(raw.get(key), list) or not raw[key]:
            raise ConfigError(f"{where}: '{key}' must be a non-empty list")
    probes = _probe_tasks(where, raw["tasks"], str(raw.get("split", "test")))  # kinds, answers

    def subset(what: str, tasks) -> tuple[str, ...] | None:
        if tasks is not None and (
            not isinstance(tasks, list)
            or not tasks
            or not all(isinstance(t, str) for t in tasks)
            or set(tasks) - set(raw["tasks"])
        ):
            raise ConfigError(
                f"{where}: {what} tasks must be a non-empty list of the recipe's tasks "
                f"({', '.join(raw['tasks'])}), got {tasks!r}"
            )
        return None if tasks is None else tuple(tasks)

    base = str(raw.get("base", "builtin:base-small"))
    hf_base = _hf_base(base, path)
    if hf_base is None:
        _check_base(base, path)
    else:
        base = str(hf_base)
    tunings = _tuning_entries(where, raw, path, hf_base, subset, probes)
    if hf_base is None:
        _check_fits(where, base, tunings, raw["tasks"], probes)
    names = [t.name for t in tunings]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: two tuning entries share a name; give each a distinct 'name'")
    attacks = [
        a
        for i, entry in enumerate(raw["attacks"])
        for a in _attack_entries(where, i, entry, raw, probes, subset, tunings)
    ]
    labels = [a.label for a in attacks]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{where}: two attack entries would share a run; give one a distinct 'tag'")
    return Recipe(
        name=str(raw.get("name", path.stem)),
        description=str(raw.get("description", "")),
        base=base,
        tasks=tuple(raw["tasks"]),
        tuning=tuple(tunings),
        attacks=tuple(attacks),
        examples=_positive(f"{where}: examples", raw.get("examples", 256)),
        task_examples=_task_examples(where, raw.get("task_examples"), raw["tasks"]),
        seed=int(raw.get("seed", 0)),
        batch_size=_positive(f"{where}: batch_size", raw.get("batch_size", 64)),
        split=str(raw.get("split", "test")),
        zoo=raw.get("zoo"),
        path=path,
        nproc=_positive(f"{where}: nproc", raw.get("nproc", 1)),
        attack_batch=_attack_batch(where, raw.get("attack_batch", "auto")),
        evaluate_on=_evaluate_on(where, raw.get("evaluate_on"), raw["tasks"], probes, str(raw.get("split", "test"))),
    )


def _evaluate_on(where: str, value, tasks: list, probes: dict, split: str) -> tuple:
    """`evaluate_on: {TUNED_TASK: [TASK, ...]}`: tasks of a kind with open classes (zero-shot classification),
    none of them another task the recipe tunes on (its runs would share a name); else one line."""
    from .tasks.kinds import get as task_kind

    if value is None:
        return ()
    if not isinstance(value, dict) or not all(isinstance(v, list) and v for v in value.values()):
        raise ConfigError(f"{where}: evaluate_on must map a recipe task to a non-empty list of tasks")
    out = []
    for task, targets in value.items():
        if task not in tasks:
            raise ConfigError(f"{where}: evaluate_on: {task!r} is not one of the recipe's tasks ({', '.join(tasks)})")
        extra = _probe_tasks(where, [t for t in targets if t not in probes], split)
        for t in targets:
            kind = (probes.get(t) or extra[t]).kind
            if t != task and (t in tasks or kind != probes[task].kind or not task_kind(kind).open_classes):
                why = "is tuned on itself" if t in tasks else f"is not a {probes[task].kind} task with open classes"
                raise ConfigError(f"{where}: evaluate_on: {task} -> {t}: {t} {why}; a model is attacked on its "
                                  f"own task, or on another class set of a zero-shot classification task")  # fmt: skip
        out.append((task, tuple(dict.fromkeys(targets))))
    named_twice = [t for t in {t for _, ts in out for t in ts} if sum(t in ts for _, ts in out) > 1]
    if named_twice:
        raise ConfigError(f"{where}: evaluate_on: {named_twice[0]} is listed under two tuned tasks; their runs would "
                          f"share a name, so list it under one")  # fmt: skip
    return tuple(out)


def _attack_batch(where: str, value) -> int | str:
    from .runtime.memory import parse_batch_size

    return parse_batch_size(value, f"{where}: attack_batch")


def _tuning_entries(where: str, raw: dict, path: Path, hf_base: Path | None, subset, probes: dict) -> list[TuningEntry]:
    """The recipe's tuning entries, each validated (an untuned base, or a method with its options, schedule,
    own base and adversarial settings)."""
    tunings = []
    for i, entry in enumerate(raw["tuning"]):
        if not isinstance(entry, dict) or "method" not in entry:
            raise ConfigError(f"{where}: tuning[{i}] must be a mapping with a 'method'")
        if entry["method"] == UNTUNED:
            _unknown(
                f"{where}: tuning[{i}] (method: none, the untuned base)", entry, {"method", "name", "tasks", "base"}
            )
            base = _own_base(f"{where}: tuning[{i}]", entry, hf_base, path)
            tunings.append(
                TuningEntry(
                    str(entry.get("name", "base")),
                    None,
                    None,
                    subset(f"tuning[{i}] (method: none)", entry.get("tasks")),
                    base=base,
                )
            )
            continue
        tc, train, adv, noise = _tuning_entry(f"{where}: tuning[{i}]", entry, int(raw.get("seed", 0)), hf_base)
        name = entry.get("name", tc.method)
        own_base = _own_base(f"{where}: tuning[{i}] ({name})", entry, hf_base, path)
        t = TuningEntry(name, tc, train, subset(f"tuning[{i}] ({name})", entry.get("tasks")), adv, own_base, noise)
        _check_adversarial(f"{where}: tuning[{i}] ({name})", t, probes, raw["tasks"])
        tunings.append(t)
    return tunings


def _attack_entries(where: str, i: int, entry, raw: dict, probes: dict, subset, tunings: list) -> list[AttackEntry]:
    """The runs' attack entries of one item of a recipe's `attacks` (one per transfer source), validated."""
    from .attacks import build
    from .attacks.presets import option_names, parse_eps
    from .tasks.kinds import get as task_kind

    out = []
    if isinstance(entry, str):
        entry = {"attack": entry}
    if not isinstance(entry, dict) or "attack" not in entry:
        raise ConfigError(f"{where}: attacks[{i}] must be a preset name or a mapping with 'attack'")
    _unknown(f"{where}: attacks[{i}]", entry, ATTACK_ENTRY_KEYS | set(option_names()))
    eps = None
    if "eps" in entry:
        eps = parse_eps(entry["eps"])
        if any(b <= a for a, b in zip(eps, eps[1:])):
            raise ConfigError(
                f"{where}: attacks[{i}] ({entry['attack']}) eps grid {entry['eps']} is not "
                f"increasing; list eps from smallest to largest"
            )
    overrides = tuple(sorted((k, v) for k, v in entry.items() if k not in ATTACK_ENTRY_KEYS))
    try:
        atk = build(entry["attack"], **dict(overrides))  # unknown attack / bad values fail here
    except ConfigError as err:  # say which entry of which recipe
        raise ConfigError(f"{where}: attacks[{i}] ({entry['attack']}): {err}") from None
    atk.eps_grid(eps)
    tasks = subset(f"attacks[{i}] ({entry['attack']})", entry.get("tasks"))
    for t in tasks or raw["tasks"]:
        if not task_kind(probes[t].kind).candidates and atk.needs_logits:
            raise ConfigError(
                f"{where}: attacks[{i}] ({atk.describe()}) needs logits over candidate answers, "
                f"which the {probes[t].kind} task {t} does not have; list the tasks it runs on with "
                f"`tasks: [...]`"
            )
    if atk.spec.target:  # a target the task lacks, or a targeted transfer: refused before any training
        from .attacks.targeted import check_task as check_target

        if entry.get("surrogate"):
            raise ConfigError(
                f"{where}: attacks[{i}] ({entry['attack']}): a targeted attack runs white-box; drop its surrogate"
            )
        for t in tasks or raw["tasks"]:
            check_target(atk.spec, probes[t])
    for source in _sources(f"{where}: attacks[{i}] ({entry['attack']})", entry.get("surrogate"), tunings, atk):
        out.append(
            AttackEntry(
                entry["attack"],
                None if eps is None else tuple(eps),
                str(entry.get("tag", "")),
                overrides,
                entry.get("examples"),
                _positive(f"{where}: attacks[{i}] nproc", entry["nproc"]) if "nproc" in entry else None,
                tasks,
                source,
                _entry_names(f"{where}: attacks[{i}] ({entry['attack']}) tuning", entry.get("tuning"), tunings),
            )
        )
    return out


def _entry_names(where: str, value, tunings: list) -> tuple[str, ...] | None:
    """An attack entry's `tuning: [names]`: the tuning entries it runs on (an expensive attack on a few models)."""
    if value is None:
        return None
    names = [t.name for t in tunings]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a non-empty list of tuning entry names, got {value!r}")
    bad = [v for v in value if v not in names]
    if bad:
        raise ConfigError(f"{where}: {bad[0]!r} is not a tuning entry; the entries: {', '.join(names)}")
    return tuple(value)


def _task_examples(where: str, value, tasks: list) -> tuple[tuple[str, int], ...]:
    """`task_examples: {shapes-caption: 128}`: fewer (or more) examples for some tasks (e.g. generative ones)."""
    if value is None:
        return ()
    if not isinstance(value, dict) or set(value) - set(tasks):
        raise ConfigError(f"{where}: task_examples must map some of the recipe's tasks to a number, got {value!r}")
    return tuple((t, _positive(f"{where}: task_examples {t}", n)) for t, n in value.items())


def _sources(where: str, value, tunings: list, atk) -> list[tuple[str, ...] | None]:
    """An attack entry's `surrogate`: none (white-box); a tuning entry's name, or "a+b" (an ensemble);
    or a list of those: one transfer run per source, each judged on every tuning entry."""
    if value is None:
        return [None]
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, str) and v.strip("+") for v in items):
        raise ConfigError(f"{where}: surrogate must be a tuning entry's name, 'a+b' or a list of them, got {value!r}")
    names = [t.name for t in tunings]
    out = []
    for v in items:
        source = tuple(v.split("+"))
        bad = [n for n in source if n not in names]
        if bad:
            raise ConfigError(f"{where}: surrogate {bad[0]!r} is not a tuning entry; the entries: {', '.join(names)}")
        from .attacks.transfer import check_attack

        check_attack(atk.spec, len(source))
        out.append(source)
    return out


def _hf_base(base: str, recipe_path: Path) -> Path | None:
    """The Hugging Face model directory `base` names (as given, beside the recipe, or inside robust-pt's
    package, e.g. robust_pt/assets/tiny-llava), or None when it names a built-in checkpoint; an unsupported
    architecture there is one line."""
    from .models.loading import architecture_of
    from .tuning.hf_train import is_hf_dir

    package_root = Path(__file__).resolve().parents[1]  # robust_pt/assets/... in a clone and in a wheel
    for d in (Path(base), recipe_path.parent / base, package_root / base):
        if is_hf_dir(d):
            if not (d / "config.json").exists():
                raise ConfigError(
                    f"recipe {recipe_path.name}: base {base} is an adapter or delta; name the model directory it is on"
                )
            architecture_of(d)
            return d.resolve()
    return None


def _check_fits(where: str, base: str, tunings: list, tasks: list, probes: dict) -> None:
    """Each built-in tuning entry's method tunes its base's architecture, for each of its tasks' kinds, and the
    base serves them (CoOp on the OFA, a classification task on the OFA: one line before any work)."""
    from .models.miniclip import MiniCLIP
    from .models.ofa import MiniOFA
    from .tasks.kinds import refusal
    from .tuning import checkpoint as ckpt

    classes = {MiniOFA.architecture: MiniOFA, MiniCLIP.architecture: MiniCLIP}
    for t in tunings:
        own = t.base_of(base)
        config = ckpt.checkpoint_dir(own) / ckpt.CONFIG
        arch = (ckpt._read_json(config) if config.exists() else {}).get("architecture", MiniOFA.architecture)
        model = classes.get(arch)
        for task in t.tasks or tasks:
            why = refusal(model, probes[task]) if model is not None else None
            if why is None and t.tuning is not None and arch not in t.tuning.spec.architectures:
                why = f"tuning method {t.tuning.method} tunes {' and '.join(t.tuning.spec.architectures)} bases"
            if why is None and t.tuning is not None:
                try:
                    t.tuning.spec.check_task(probes[task])
                except ConfigError as err:
                    why = str(err)
            if why is not None:
                raise ConfigError(f"{where}: tuning entry {t.name} on {task} (base {own}, {arch}): {why}")


def _check_base(base: str, recipe_path: Path) -> None:
    from .tuning import checkpoint as ckpt

    if not base.startswith(ckpt.BUILTIN_PREFIX) and not Path(base).exists():
        raise CheckpointError(
            f"recipe {recipe_path.name}: base checkpoint {base} is missing (not a robust-pt checkpoint, nor a Hugging "
            f"Face model directory as given, beside the recipe or in robust-pt's package); make it with "
            f"`robust-pt pretrain --out {base}` or point 'base' at an existing one"
        )
    if not (ckpt.checkpoint_dir(base) / ckpt.WEIGHTS).exists():
        raise CheckpointError(
            f"recipe {recipe_path.name}: base checkpoint {base} is missing; make it with "
            f"`robust-pt pretrain --out {base}` or point 'base' at an existing one"
        )


def check_outputs(r: Recipe, out: Path | None) -> None:
    """That everything the recipe writes can be written (robust_pt/outputs.py), before anything is tuned or
    attacked: the report directory `out` (None: not written), its runs/ and report files, and the zoo's
    checkpoint directories. Creates nothing."""
    from .outputs import require_writable_dir
    from .tuning.zoo import entry_dir

    if out is not None:
        from .report import check_out

        check_out(Path(out))
        require_writable_dir(Path(out) / "runs", "runs directory")
    for task, t in r.checkpoints():
        if t.tuning is not None:
            d = entry_dir(task, t.name, r.name, Path(r.zoo) if r.zoo else None)
            require_writable_dir(d, "checkpoint directory", "zoo: directory (or ROBUST_PT_CACHE)")


def run_recipe(recipe: Recipe | str | Path, out: Path | None = None, log=print, only=None) -> Path:
    """Tune what is missing, attack everything (resumable), write the report; returns its dir.

    only: names of tuning entries: tune and attack just those (e.g. a method added to a recipe
    whose other runs are done, without rebuilding their checkpoints); the report holds
    every run of the recipe found in the report directory."""
    from .runtime.locking import hold

    r = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    part = r if only is None else r.only(only)
    out = Path(out) if out is not None else Path("reports") / r.name
    check_outputs(part, out)
    with hold(out, "report directory"):  # a second `robust-pt run` into it: LockedError, exit 2
        return _run_locked(r, part, out, log)


def _other_runs(r: Recipe, part: Recipe, runs_dir: Path, log) -> list[Path]:
    """--only: the runs of the entries not selected that are in the report directory, each complete and
    made with its entry's tuning (a run of an entry edited since is refused, one line)."""
    import json

    mine = {t.name for t in part.tuning}
    found = []
    for task, t, _a, name, trained in r.runs():
        p = runs_dir / name
        if t.name in mine or not (p / "run.json").exists():
            continue
        meta = json.loads((p / "run.json").read_text())
        model_meta = meta.get("model_meta") or {}
        tuning = model_meta.get("tuning")
        want = tuning_record(t, trained)
        edited = want is not None and (
            tuning != want
            or model_meta.get("adversarial") != t.adversarial_record()
            or model_meta.get("noise_sigma") != t.noise_sigma
            or not _schedule_kept(model_meta, t, r, trained)
        )
        stale = meta.get("status") != "complete" or edited
        if stale or (meta.get("config") or {}).get("task", {}).get("name") != recorded_task(task):
            raise ConfigError(
                f"{p} is not a complete run of the recipe's entry {t.name!r} as it stands (status "
                f"{meta.get('status')!r}, tuning {tuning}); run without --only to redo it, or delete it"
            )
        found.append(p)
    missing = len(r.runs()) - len(part.runs()) - len(found)
    if missing:
        log(f"[{r.name}] {missing} runs of the other entries are missing; the report leaves them out")
    return found


def _run_locked(r: Recipe, part: Recipe, out: Path, log) -> Path:
    from .engine.request import EvalRequest
    from .engine.run import execute
    from .report import build
    from .tuning.zoo import build_zoo

    runs_dir = out / "runs"
    t0 = time.time()
    others = _other_runs(r, part, runs_dir, log) if part is not r else None
    kept = {run.name for run in part.runs() if _finished(r, run, runs_dir / run.name)}
    if kept:
        log(f"[{r.name}] {len(kept)} runs complete in {runs_dir} and made as the recipe says: kept as they are")
    ckpts = build_zoo(part, log=log, only=_needed(part, kept))
    log(f"[{r.name}] checkpoints ready after {time.time() - t0:.0f} s")
    for task, t, a, name, trained in part.runs():
        run = runs_dir / name
        if name in kept:
            continue
        t1 = time.time()
        request = EvalRequest(
            ckpts[(trained, t.name)][0],
            task,
            attack=a.attack,
            eps=None if a.eps is None else list(a.eps),
            seed=r.seed,
            out=run,
            limit=r.examples_for(task, a),
            split=r.split,
            batch_size=r.batch_size,
            attack_batch=r.attack_batch,
            nproc=a.nproc or r.nproc,
            **_transfer_args(a, trained, ckpts, out),
            overrides=dict(a.overrides),
        )
        execute(request, progress=True)
        log(f"[{r.name}] {run.name}: {time.time() - t1:.0f} s")
    run_paths = [runs_dir / run.name for run in r.runs()]
    if others is not None:  # --only: the selected entries' runs and the others' that are there, in recipe order
        keep = set(others) | {runs_dir / run.name for run in part.runs()}
        run_paths = [p for p in run_paths if p in keep]
    build(run_paths, out, allow_mixed=len({run.task for run in r.runs()}) > 1, title=f"robust-pt: {r.name}")
    log(f"[{r.name}] finished in {time.time() - t0:.0f} s; report in {out}")
    return out


def _finished(r: Recipe, which: Run, run: Path) -> bool:
    """A complete run made with this entry's tuning, attack, eps, examples, seed and batch size (and, for runs
    whose run.json records the checkpoint's identity, its training schedule), whose checkpoint (absent from
    a fresh clone) need not be rebuilt to resume it. Older runs do not record the schedule: a run of an
    entry whose steps or rate changed since is kept (delete it to redo it)."""
    import json

    from .attacks import build
    from .attacks.transfer import CRAFTING

    task, t, a = which.task, which.tuning, which.attack
    try:
        meta = json.loads((run / "run.json").read_text())
    except (OSError, ValueError):
        return False
    cfg = meta.get("config") or {}
    atk = build(a.attack, **{**dict(a.overrides), **(CRAFTING if a.surrogate else {})})
    want = {
        "task": recorded_task(task),
        "n": r.examples_for(task, a),
        "attack": atk.spec.identity,
        "eps": atk.eps_grid(None if a.eps is None else list(a.eps)),
        "seed": r.seed,
        "batch_size": r.batch_size,
        "tuning": tuning_record(t, which.trained),
        "adversarial": t.adversarial_record(),
        "noise_sigma": t.noise_sigma,
        "trained": None if t.tuning is None else recorded_task(which.trained),
    }
    task_cfg = cfg.get("task") or {}
    have = {
        "task": task_cfg.get("name"),
        "n": task_cfg.get("n"),
        "attack": cfg.get("attack"),
        "eps": cfg.get("eps"),
        "seed": cfg.get("seed"),
        "batch_size": cfg.get("batch_size"),
        "tuning": (meta.get("model_meta") or {}).get("tuning"),
        "adversarial": (meta.get("model_meta") or {}).get("adversarial"),
        "noise_sigma": (meta.get("model_meta") or {}).get("noise_sigma"),
        "trained": None if t.tuning is None else recorded_task((meta.get("model_meta") or {}).get("task") or task),
    }
    if t.tuning is None:  # an untuned base: the one its entry names now (how it was pretrained, a side file's tuning)
        if r.hf_base:
            want["tuning"], want["adversarial"] = have["tuning"], have["adversarial"]
        else:
            from .tuning import checkpoint as ckpt

            base = ckpt.read_meta(ckpt.checkpoint_dir(t.base_of(r.base)))
            want["adversarial"] = base.get("adversarial")
            want["weights"] = _builtin_sha(t.base_of(r.base))  # a base rebuilt in place (make robust-base): stale
            have["weights"] = ((meta.get("checkpoint") or {}).get("sha256") or {}).get(ckpt.WEIGHTS)
    entries = {e.name: e for e in r.tuning}
    made = [(meta.get("model_meta"), t)] + [
        (info, entries.get(name)) for name, info in zip(a.surrogate or (), meta.get("surrogates") or [])
    ]
    as_made = all(
        _schedule_kept(info, e, r, which.trained) for info, e in made
    )  # the target's checkpoint and surrogates'
    return meta.get("status") == "complete" and have == want and as_made


def tuning_record(t: TuningEntry, trained: str) -> dict | None:
    """What the checkpoint of entry `t` tuned on `trained` records as its tuning: the entry's method and options,
    with the task's classes where the method is sized by them (a linear probe; tuning/train.py fills them)."""
    if t.tuning is None:
        return None
    from .tuning.config import with_task_classes

    return with_task_classes(t.tuning, trained).relevant()  # train and train_hf fill them the same way


def _schedule_kept(info: dict | None, entry: TuningEntry | None, r: Recipe | None = None, task: str = "") -> bool:
    """False only when run.json records how a checkpoint was made (`identity`, runs since 2026-12-02) and
    its tuning entry's schedule is no longer that one."""
    identity = (info or {}).get("identity") or {}
    if entry is not None and identity.get("kind") == "hf-tune" and entry.tuning is not None:
        # a Hugging Face base's tuning (hf_train.py): the same schedule, task and base (path and weights)
        same_base = r is None or (
            identity.get("base") == r.base and identity.get("base_sha256") == _weights_sha(r.base)
        )
        from .tuning.config import with_task_classes

        made_as = with_task_classes(entry.tuning, task).identity() if task else entry.tuning.identity()
        return identity.get("config") == made_as and identity.get("task") in (task, None) and same_base
    made = identity.get("train")
    if made is None or entry is None or entry.train is None:
        return True
    base_sha = identity.get("base_sha256")  # the base it was tuned from (a built-in base that changed: stale)
    same_base = r is None or base_sha is None or base_sha == _builtin_sha(entry.base_of(r.base))
    return made == asdict(entry.train) and same_base


def _builtin_sha(base: str) -> str | None:
    from .tuning import checkpoint as ckpt

    p = ckpt.checkpoint_dir(base) / ckpt.WEIGHTS
    if not p.exists():
        return None
    st = p.stat()
    return _sha_cached(str(p), st.st_mtime_ns, st.st_size)


def _weights_sha(base: str) -> str | None:
    """sha256 of a Hugging Face base's model.safetensors (what hf_train records), cached per file state."""
    p = Path(base) / "model.safetensors"
    if not p.exists():
        return None
    st = p.stat()
    return _sha_cached(str(p), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=8)
def _sha_cached(path: str, mtime: int, size: int) -> str:
    from .tuning.checkpoint import sha256_file

    return sha256_file(Path(path))


def _needed(r: Recipe, kept: set) -> set:
    """The (task, tuning entry) checkpoints the runs still to do need: their targets and surrogates."""
    out = set()
    for _task, t, a, name, trained in r.runs():
        if name not in kept:
            out |= {(trained, t.name)} | {(trained, s) for s in a.surrogate or ()}
    return out


def _transfer_args(a: AttackEntry, task: str, ckpts: dict, out: Path) -> dict:
    """evaluate's surrogate and crafted arguments for a transfer entry (crafted inputs shared by its targets)."""
    if not a.surrogate:
        return {}
    missing = [s for s in a.surrogate if (task, s) not in ckpts]
    if missing:
        raise ConfigError(
            f"attack {a.label}: surrogate {missing[0]} is not tuned on {task}; add {task} to its tasks or list "
            f"the attack's tasks"
        )
    return {"surrogate": {s: ckpts[(task, s)][0] for s in a.surrogate}, "crafted": out / "crafted"}


def list_recipes() -> list[tuple[str, str]]:
    from .paths import preset_dir

    out = []
    for p in sorted(preset_dir("recipes").glob("*.yaml")):
        try:
            out.append((p.stem, load_recipe(p).description))
        except Exception as err:  # a broken shipped recipe still shows up, with why
            out.append((p.stem, f"(invalid: {err})"))
    return out
