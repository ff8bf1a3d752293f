"""Attack methods of the gradient threat models (image, embedding), registered by name.

Why: a new image attack used to mean editing six places (the method lists, the backend
table, the logits list, the checks, the describe text, the library if-chains). A method
is now one `AttackMethod`: its kind, its own parameters as a small frozen dataclass (the
preset fields it reads, as peft keeps one config per method), the backends that
implement it with how each builds it, and what it needs or is:

* needs_logits: it needs logits over candidates (a closed-answer task or a classifier);
* one_step: a single step of size eps (FGSM); random starts do not apply;
* query_budget: a black-box method whose budget is queries, not gradient steps (Square);
* engine_restarts: the engine runs its restarts (our PGD) instead of the library;
* default_queries: the query budget of a preset that names none;
* check(spec): the combinations it refuses, one line each;
* objective(victim, examples): what it ascends instead of the victim's own objective
  (SGA's set-level loss), run by our PGD loop.

The preset's flat AttackSpec stays what run.json records (its identity is the run
fingerprint, unchanged); `params(spec)` is the method's own view of it. Library objects
(torchattacks, foolbox) are built lazily by the methods' `torchattacks` / `foolbox`
functions, so importing this module imports neither.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable

from ..errors import AttackError


@dataclass(frozen=True)
class GradientParams:
    steps: int
    step_ratio: float | None
    alpha: float | None
    random_start: bool
    restarts: int


@dataclass(frozen=True)
class OneStepParams:
    """FGSM: one step of size eps."""


@dataclass(frozen=True)
class APGDParams:
    steps: int
    restarts: int
    loss: str


@dataclass(frozen=True)
class SquareParams:
    queries: int | None
    restarts: int
    p_init: float
    loss: str


@dataclass(frozen=True)
class CWParams:
    steps: int
    c: float
    kappa: float
    lr: float


@dataclass(frozen=True)
class AutoAttackParams:
    steps: int
    version: str
    target_classes: int
    queries: int | None


@dataclass(frozen=True)
class AttackMethod:
    name: str
    kind: str  # the threat model it belongs to: image or embedding
    params_class: type
    backends: tuple[str, ...]
    needs_logits: bool = False
    one_step: bool = False
    query_budget: bool = False
    engine_restarts: bool = False
    default_queries: int | None = None  # a preset that leaves `queries` out gets this budget
    check: Callable[[Any], None] | None = None
    torchattacks: Callable | None = None  # (spec, params, ta, model, eps, n_classes, seed) -> attack
    foolbox: Callable | None = None  # (spec, params, fb, eps) -> attack
    objective: Callable | None = None  # (victim, examples) -> the objective our PGD ascends

    def params(self, spec) -> Any:
        """This method's parameters, read from a preset's fields."""
        return self.params_class(**{f.name: getattr(spec, f.name) for f in fields(self.params_class)})


_methods: dict[tuple[str, str], AttackMethod] = {}


def register(method: AttackMethod) -> AttackMethod:
    _methods[(method.kind, method.name)] = method
    return method


def get(kind: str, name: str) -> AttackMethod | None:
    return _methods.get((kind, name))


def names(kind: str | None = None) -> tuple[str, ...]:
    """Registered method names (of one kind), in registration order, each once."""
    return tuple(dict.fromkeys(n for (k, n) in _methods if kind is None or k == kind))


def all_named(name: str) -> list[AttackMethod]:
    """The methods called `name`, of every kind."""
    return [m for (_, n), m in _methods.items() if n == name]


def backend_table() -> dict[tuple[str, str], tuple[str, ...]]:
    return {key: m.backends for key, m in _methods.items()}


# ----------------------------------------------------------------------------- the built-in methods


def _ta_norm(spec) -> str:
    return "Linf" if spec.norm == "linf" else "L2"


def _pgd_ta(spec, p: GradientParams, ta, model, eps, n_classes, seed):
    cls = ta.PGD if spec.norm == "linf" else ta.PGDL2
    return cls(model, eps=eps, alpha=spec.step_size(eps), steps=p.steps, random_start=p.random_start)


def _pgd_fb(spec, p: GradientParams, fb, eps):
    cls = fb.attacks.LinfPGD if spec.norm == "linf" else fb.attacks.L2PGD
    return cls(abs_stepsize=spec.step_size(eps), steps=p.steps, random_start=p.random_start)


def _fgsm_check(spec) -> None:
    if spec.norm == "l2" and spec.backend != "ours":
        raise AttackError(f"attack {spec.name}: L2 fgsm (fast gradient method) exists only with --backend ours")
    if spec.steps != 1:
        raise AttackError(
            f"attack {spec.name} is a one-step attack (FGSM); for --steps {spec.steps} use "
            f"{'emb-pgd' if spec.kind == 'embedding' else 'pgd'}"
        )


def _apgd_check(spec) -> None:
    if spec.loss not in ("ce", "dlr"):
        raise AttackError(f"attack {spec.name}: apgd loss must be ce or dlr, got {spec.loss!r}")


def _apgd_ta(spec, p: APGDParams, ta, model, eps, n_classes, seed):
    return ta.APGD(model, norm=_ta_norm(spec), eps=eps, steps=p.steps, n_restarts=p.restarts, seed=seed, loss=p.loss)


def _square_check(spec) -> None:
    if not spec.queries:
        raise AttackError(f"attack {spec.name}: square needs a query budget (queries: N)")
    if spec.loss not in ("margin", "ce"):
        raise AttackError(f"attack {spec.name}: square loss must be margin or ce, got {spec.loss!r}")


def _square_ta(spec, p: SquareParams, ta, model, eps, n_classes, seed):
    return ta.Square(
        model,
        norm=_ta_norm(spec),
        eps=eps,
        n_queries=int(p.queries),
        n_restarts=p.restarts,
        p_init=p.p_init,
        loss=p.loss,
        seed=seed,
    )


def _cw_check(spec) -> None:
    if spec.norm != "l2":
        raise AttackError(f"attack {spec.name}: Carlini-Wagner is an L2 attack; set norm: l2")


def _cw_ta(spec, p: CWParams, ta, model, eps, n_classes, seed):
    return ta.CW(model, c=p.c, kappa=p.kappa, steps=p.steps, lr=p.lr)


def _cw_fb(spec, p: CWParams, fb, eps):
    # one binary-search step at c = spec.c: the same fixed-c objective as torchattacks' CW
    return fb.attacks.L2CarliniWagnerAttack(
        binary_search_steps=1, steps=p.steps, stepsize=p.lr, confidence=p.kappa, initial_const=p.c
    )


def _autoattack_check(spec) -> None:
    if spec.version not in ("standard", "plus", "rand"):
        raise AttackError(f"attack {spec.name}: autoattack version must be standard, plus or rand")


def _autoattack_ta(spec, p: AutoAttackParams, ta, model, eps, n_classes, seed):
    atk = ta.AutoAttack(model, norm=_ta_norm(spec), eps=eps, version=p.version, n_classes=n_classes, seed=seed)
    targets = max(1, min(p.target_classes, n_classes - 1))
    for sub in atk._autoattack.attacks:  # the reference settings (torchattacks defaults to 10 steps)
        if hasattr(sub, "steps"):
            sub.steps = p.steps
        if hasattr(sub, "n_target_classes"):
            sub.n_target_classes = targets
        if hasattr(sub, "n_queries") and p.queries:
            sub.n_queries = int(p.queries)
    return atk


register(
    AttackMethod(
        "pgd",
        "image",
        GradientParams,
        ("ours", "torchattacks", "foolbox"),
        engine_restarts=True,
        torchattacks=_pgd_ta,
        foolbox=_pgd_fb,
    )
)
register(
    AttackMethod(
        "fgsm",
        "image",
        OneStepParams,
        ("ours", "torchattacks", "foolbox"),
        one_step=True,
        check=_fgsm_check,
        torchattacks=lambda spec, p, ta, model, eps, *_: ta.FGSM(model, eps=eps),
        foolbox=lambda spec, p, fb, eps: fb.attacks.LinfFastGradientAttack(random_start=False),
    )
)
register(
    AttackMethod(
        "apgd", "image", APGDParams, ("torchattacks",), needs_logits=True, check=_apgd_check, torchattacks=_apgd_ta
    )
)
register(
    AttackMethod(
        "square",
        "image",
        SquareParams,
        ("torchattacks",),
        needs_logits=True,
        query_budget=True,
        default_queries=1000,
        check=_square_check,
        torchattacks=_square_ta,
    )
)
register(
    AttackMethod(
        "cw",
        "image",
        CWParams,
        ("torchattacks", "foolbox"),
        needs_logits=True,
        check=_cw_check,
        torchattacks=_cw_ta,
        foolbox=_cw_fb,
    )
)
register(
    AttackMethod(
        "autoattack",
        "image",
        AutoAttackParams,
        ("torchattacks",),
        needs_logits=True,
        check=_autoattack_check,
        torchattacks=_autoattack_ta,
    )
)
# transfer-oriented iterative methods (Dong et al. 2018; Xie et al. 2019), torchattacks' implementations:
# momentum 1.0 (MI-FGSM); input diversity with torchattacks' defaults, resize 0.9, probability 0.5 (DI-FGSM)
register(
    AttackMethod(
        "mifgsm",
        "image",
        GradientParams,
        ("torchattacks",),
        needs_logits=True,
        torchattacks=lambda spec, p, ta, model, eps, *_: ta.MIFGSM(
            model, eps=eps, alpha=spec.step_size(eps), steps=p.steps, decay=1.0
        ),
    )
)
register(
    AttackMethod(
        "difgsm",
        "image",
        GradientParams,
        ("torchattacks",),
        needs_logits=True,
        torchattacks=lambda spec, p, ta, model, eps, *_: ta.DIFGSM(
            model, eps=eps, alpha=spec.step_size(eps), steps=p.steps, decay=0.0, random_start=p.random_start
        ),
    )
)


def _sga():
    from . import sga

    return sga


# SGA's image stage (attacks/sga.py): our PGD on the mean loss over scales and reference captions
register(
    AttackMethod(
        "sga",
        "image",
        GradientParams,
        ("ours",),
        engine_restarts=True,
        objective=lambda victim, examples: _sga().reference_set(victim, examples),
    )
)
register(AttackMethod("pgd", "embedding", GradientParams, ("ours",), engine_restarts=True))
register(AttackMethod("fgsm", "embedding", OneStepParams, ("ours",), one_step=True, check=_fgsm_check))
