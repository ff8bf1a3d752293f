"""Tuning methods: one TuningMethod object per method, registered by name (as peft's register_peft_method).

A method says what it is (name, display name, default learning rate), which options it
takes (a small frozen dataclass of its own, with defaults), how it changes the built-in
model (`apply`) and/or which peft config it is on a Hugging Face base (`hf`), and what it
can do (`delta`: its checkpoints keep only the trained tensors plus the base's hash;
`prompt_like` and `factors`: it is a prompt method whose options the prompt-factor
figures vary; `colour`: a fixed colour and place in every report). Everything else asks
the registry: the CLI's `robust-pt train --method ... --OPTION ...` options, the keys a
recipe's tuning entry accepts, the built-in and Hugging Face training paths, and the
reports' names, order and colours. Callers test capabilities, never method names.

Adding a method is one module plus one registration:

    # robust_pt/tuning/mymethod.py
    @dataclass(frozen=True)
    class MyOptions:
        my_rank: int = field(default=4, metadata={"help": "rank of the update"})

    def apply(model, o: MyOptions) -> None:     # freeze the backbone, add modules, mark what trains
        ...

    METHOD = register(TuningMethod("mymethod", "my method", MyOptions, apply=apply, lr=3e-3))

and its name in BUILTIN below (or `register(...)` from your own code, e.g. a test).

Method modules are imported whenever the CLI starts or a report is written, so they
import torch and peft only inside their functions (the nn.Modules they add live in
tuning/layers.py).
"""

from __future__ import annotations

import importlib
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields, is_dataclass
from typing import Any, Callable, Iterator

from ..errors import ConfigError

REFERENCE = "finetune"  # what every other method is compared against
BUILTIN = (
    "finetune",
    "prompt",
    "adapter",
    "bitfit",
    "lora",
    "ia3",
    "apt",
    "coop",
    "vpt",
    "maple",
    "linear_probe",
)  # robust_pt/tuning/<name>.py, in this order
# names an option may not take: the training schedule, recipe-entry and CLI keys every method shares
RESERVED = frozenset(
    {
        "method",
        "options",
        "name",
        "tasks",
        "steps",
        "batch_size",
        "lr",
        "warmup",
        "weight_decay",
        "seed",
        "train_size",
        "eval_size",
        "threads",
        "device",
        "base",
        "task",
        "out",
        "overwrite",
    }
)
_TYPES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


@dataclass(frozen=True)
class NoOptions:
    """The options of a method that has none (finetuning, BitFit, IA3)."""


@dataclass(frozen=True)
class Factor:
    """An option the prompt-factor figures vary (report/factors.py): its axis title, the order of its
    values (a sort key; default the value) and their tick labels (default str)."""

    option: str
    title: str
    order: Callable[[Any], Any] | None = None
    label: Callable[[Any], str] | None = None

    def sort_key(self, value):
        return value if self.order is None else self.order(value)

    def value_label(self, value) -> str:
        return str(value) if self.label is None else self.label(value)


@dataclass(frozen=True)
class HFContext:
    """What a method's peft config may depend on: the architecture, the transformers model and its
    peft target modules by role ("lora", "ia3", "ia3_feedforward"); `family`, what the architecture's
    family declares it supports (models/loading.py's HFFamily: prompt_tuning, attention_site, ...)."""

    arch: str
    net: Any
    targets: Mapping[str, list[str]]
    family: Any  # models/loading.py's HFFamily of `arch` (models/hf/delta.py's context builds all of this)
    tokenizer: Any = None  # the base's tokenizer (a method that starts from words: CoOp's context)


@dataclass(frozen=True)
class OnHF:
    """A method on Hugging Face bases (tuning/hf_train.py).

    lr: its default peak learning rate there. options: the options it reads there (also what the
    run's identity records). peft_config: (options, HFContext) -> a peft config (get_peft_model,
    saved as a peft adapter). attach: (options, HFContext) -> None, for a method peft does not
    have: adds its modules to HFContext.net in place and leaves exactly its own parameters
    trainable; saved as a robust-pt delta on the base (models/hf/delta.py). Neither: every
    weight trains and the model is saved with save_pretrained. needs: the capability a family must
    declare for it (an HFFamily attribute, e.g. "attention_site"; None: every family robust-pt
    loads); a base whose family lacks it is refused in one line before anything is loaded;
    check: a finer rule on the architecture (raises one line), also applied before anything is
    loaded (tuning/hf_train.py check_method, recipes)."""

    lr: float
    options: tuple[str, ...] = ()
    peft_config: Callable[[Any, HFContext], Any] | None = None
    attach: Callable[[Any, HFContext], None] | None = None
    needs: str | None = None  # an HFFamily capability: "prompt_tuning", "attention_site", "label_head"
    check: Callable[[str], None] | None = None  # (architecture) -> None, or a one-line ConfigError
    later: tuple[str, ...] = ()  # options read since a later version: recorded only away from their default

    def __post_init__(self):
        if self.peft_config is not None and self.attach is not None:
            raise ConfigError("OnHF: give peft_config (a peft method) or attach (robust-pt's own), not both")

    @property
    def full(self) -> bool:
        """Every weight trains (so a ViLT head may grow new answers)."""
        return self.peft_config is None and self.attach is None


@dataclass(frozen=True)
class TuningMethod:
    """One tuning method (see the module docstring)."""

    name: str
    display: str  # in report sentences and legends: "prompt tuning", "BitFit"
    options: type = NoOptions  # frozen dataclass; its fields are the CLI options and the recipe keys
    apply: Callable[[Any, Any], None] | None = None  # (MiniOFA, options): add modules, mark what trains
    lr: float | None = None  # default peak learning rate on the built-in model
    hf: OnHF | None = None  # how it runs on Hugging Face bases; None: built-in model only
    delta: bool = True  # checkpoints keep only the trained tensors + the base's sha256 (False: every weight)
    prompt_like: bool = False  # a prompt method: its models appear in the prompt-factor figures
    factors: tuple[Factor, ...] = ()  # the options those figures vary
    colour: str | None = None  # fixed colour in every figure, and a fixed place (registration order) in every
    #                            table and figure after finetuning; None: an extra colour, after those, by name
    aliases: tuple[str, ...] = ()  # other spellings in run names written by other tools ("pt", "ft")
    # the built-in architectures `apply` tunes (models/ofa.py's mini-ofa, models/miniclip.py's mini-clip)
    architectures: tuple[str, ...] = ("mini-ofa", "mini-clip")
    # the task kinds it tunes for (CoOp replaces the prompt template: a VQA question would be lost); None: every kind
    task_kinds: tuple[str, ...] | None = None
    # (options, the task's answers) -> options: a method whose modules are sized by the task's classes (a linear
    # probe) takes them into its options, so the checkpoint records them; None: options as given
    task_classes: Callable[[Any, Any], Any] | None = None
    help: str = ""  # one line for `robust-pt train --help`

    def __post_init__(self):
        if (
            not isinstance(self.name, str)
            or not self.name
            or self.name != self.name.strip().lower()
            or " " in self.name
        ):
            raise ConfigError(f"tuning method name {self.name!r} must be a non-empty lower-case word")
        if not (
            isinstance(self.options, type) and is_dataclass(self.options) and self.options.__dataclass_params__.frozen
        ):
            raise ConfigError(f"tuning method {self.name}: options must be a frozen dataclass, got {self.options!r}")
        if self.apply is None and self.hf is None:
            raise ConfigError(f"tuning method {self.name}: give `apply` (built-in model) and/or `hf` (Hugging Face)")
        if self.apply is not None and not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ConfigError(f"tuning method {self.name}: a built-in method needs a default lr > 0")
        names = set(self.option_names)
        bad = sorted(names & RESERVED)
        if bad:
            raise ConfigError(
                f"tuning method {self.name}: option {bad[0]!r} is a training or CLI key every method "
                f"shares; rename it (e.g. {self.name}_{bad[0]})"
            )
        for f in self.options.__dataclass_fields__.values():
            if f.default is MISSING and f.default_factory is MISSING:
                raise ConfigError(f"tuning method {self.name}: option {f.name!r} needs a default")
            if option_types(self.options)[f.name] not in _TYPES:
                raise ConfigError(f"tuning method {self.name}: option {f.name!r} must be a bool, int, float or str")
        extra = [
            o for o in (self.hf.options if self.hf else ()) + tuple(f.option for f in self.factors) if o not in names
        ]
        if extra:
            raise ConfigError(f"tuning method {self.name}: {extra[0]!r} is not one of its options")

    def check_task(self, task) -> None:
        """One line when the method cannot tune for `task`'s kind (CoOp on a VQA task)."""
        if self.task_kinds is not None and task.kind not in self.task_kinds:
            raise ConfigError(
                f"tuning method {self.name} learns a prompt in place of the task's text, so it tunes for "
                f"{' or '.join(self.task_kinds)} tasks, not the {task.kind} task {task.name}"
            )

    @property
    def option_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self.options))

    @property
    def builtin(self) -> bool:
        """It can tune the built-in model."""
        return self.apply is not None

    def make_options(self, values: Mapping[str, Any] | None = None, where: str = "") -> Any:
        """Its options dataclass from {option: value} (types checked; unknown keys refused, one line)."""
        values = dict(values or {})
        lead = f"{where}: " if where else ""
        extra = [k for k in values if k not in self.option_names]
        if extra:
            owner = [m.name for m in methods() if extra[0] in m.option_names]
            hint = f" ({extra[0]} is an option of {' and '.join(owner)})" if owner else ""
            takes = ", ".join(self.option_names) or "none"
            raise ConfigError(
                f"{lead}unknown option {extra[0]!r} for tuning method {self.name}{hint}; its options: {takes}"
            )
        types = option_types(self.options)
        for k, v in values.items():
            t = types[k]
            if isinstance(v, bool) and t is not bool or not isinstance(v, (int, float) if t is float else t):
                raise ConfigError(f"{lead}{k} must be {_TYPES[t]}, got {v!r}")
        try:
            return self.options(**values)
        except ConfigError as err:
            raise ConfigError(f"{lead}{err}") from None

    def relevant(self, options: Any) -> dict:
        """What a checkpoint's meta records as its tuning (and its identity): the method and its options."""
        return {"method": self.name, **{f.name: getattr(options, f.name) for f in fields(options)}}


def option_types(options: type) -> dict[str, Any]:
    """{option: type} of an options dataclass (string annotations resolved; Optional not allowed)."""
    try:
        hints = typing.get_type_hints(options)
    except Exception:  # noqa: BLE001 - an annotation naming something out of scope: read it as written
        hints = {}
    by_name = {t.__name__: t for t in _TYPES}
    return {
        f.name: hints.get(f.name, by_name.get(f.type, f.type) if isinstance(f.type, str) else f.type)
        for f in fields(options)
    }


# ----------------------------------------------------------------------------- the registry

_METHODS: dict[str, TuningMethod] = {}
_loaded = False


def _load_builtin() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True  # before the imports: each module calls register()
    for name in BUILTIN:
        importlib.import_module(f"{__package__}.{name}")


def register(method: TuningMethod, *, replace: bool = False) -> TuningMethod:
    """Add a method (returns it, so a module can write `METHOD = register(TuningMethod(...))`)."""
    if not isinstance(method, TuningMethod):
        raise ConfigError(f"register() takes a TuningMethod, got {type(method).__name__}")
    _load_builtin()
    old = _METHODS.get(method.name)
    if old is not None and old is not method and not replace:
        raise ConfigError(
            f"tuning method {method.name!r} is already registered; pick another name (or pass replace=True)"
        )
    types = option_types(method.options)
    for other in _METHODS.values():
        if other.name == method.name:
            continue
        theirs = option_types(other.options)
        for k in set(types) & set(theirs):
            if types[k] is not theirs[k]:
                raise ConfigError(
                    f"tuning method {method.name}: option {k!r} is {types[k].__name__} but "
                    f"{other.name} declares it {theirs[k].__name__}; one CLI option serves both, so "
                    f"give it the same type or another name"
                )
    _METHODS[method.name] = method
    return method


def unregister(name: str) -> None:
    """Remove a method (a test's toy method); unknown names are ignored."""
    _METHODS.pop(name, None)


def methods() -> tuple[TuningMethod, ...]:
    """Every registered method, in registration order."""
    _load_builtin()
    return tuple(_METHODS.values())


def find(name: Any) -> TuningMethod | None:
    """The method called `name`, or None (e.g. "pretrain", or a method another tool wrote)."""
    _load_builtin()
    return _METHODS.get(name) if isinstance(name, str) else None


def get(name: str) -> TuningMethod:
    """The method called `name`; an unknown one raises ConfigError naming the registered ones."""
    m = find(name)
    if m is None:
        raise ConfigError(f"unknown tuning method {name!r}; choose one of {', '.join(m.name for m in methods())}")
    return m


def builtin_methods() -> tuple[TuningMethod, ...]:
    """The methods that tune the built-in model."""
    return tuple(m for m in methods() if m.builtin)


def hf_methods() -> tuple[TuningMethod, ...]:
    """The methods that tune Hugging Face bases."""
    return tuple(m for m in methods() if m.hf is not None)


def builtin_method(name: str) -> TuningMethod:
    """`name` if it tunes the built-in model, else a one-line ConfigError."""
    m = find(name)
    if m is None or not m.builtin:
        choose = ", ".join(x.name for x in builtin_methods())
        if m is not None:
            raise ConfigError(
                f"tuning method {name!r} runs on Hugging Face bases only (--base HF_DIR); the built-in "
                f"model takes one of {choose}"
            )
        raise ConfigError(f"unknown tuning method {name!r}; choose one of {choose}")
    return m


def hf_method(name: str) -> TuningMethod:
    """`name` if it tunes Hugging Face bases, else a one-line ConfigError."""
    m = find(name)
    if m is None or m.hf is None:
        only = [x.name for x in builtin_methods() if x.hf is None]
        raise ConfigError(
            f"unknown method {name!r} for a Hugging Face base; choose one of "
            f"{', '.join(x.name for x in hf_methods())}"
            + (f" ({_and(only)} are built-in-model methods)" if only else "")
        )
    return m


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def report_order() -> list[str]:
    """The reference first, then the methods with a fixed colour, in registration order (the paper's
    order: finetune, prompt, adapter, bitfit, lora); reports put every other method after them."""
    order = [REFERENCE]
    return order + [m.name for m in methods() if m.colour and m.name not in order]


class Live(Mapping):
    """A read-only mapping recomputed from the registry on every access (so a method registered later,
    e.g. by a test, shows up in module-level tables such as report.load.METHOD_NAMES)."""

    def __init__(self, build: Callable[[], dict]):
        self._build = build

    def __getitem__(self, key):
        return self._build()[key]

    def __iter__(self) -> Iterator:
        return iter(self._build())

    def __len__(self) -> int:
        return len(self._build())

    def __repr__(self) -> str:
        return repr(self._build())


__all__ = [
    "BUILTIN",
    "Factor",
    "HFContext",
    "Live",
    "NoOptions",
    "OnHF",
    "REFERENCE",
    "TuningMethod",
    "builtin_method",
    "builtin_methods",
    "find",
    "get",
    "hf_method",
    "hf_methods",
    "methods",
    "option_types",
    "register",
    "report_order",
    "unregister",
]
