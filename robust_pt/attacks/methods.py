"""Attack methods, registered by name: the gradient methods of the image and embedding threat models,
the TextAttack recipes, the joint orders and the natural corruptions.

Why: a new image attack used to mean editing six places (the method lists, the backend
table, the logits list, the checks, the describe text, the library if-chains), and a new
setting a field on the flat AttackSpec, a type branch and the fingerprint's exclusion list.
A method is now one `AttackMethod`: its kind, its own parameters as a small frozen
dataclass (as peft keeps one config per method; field types and `params.setting` ranges
are what presets, overrides and recipe entries are checked against when read), the
backends that implement it with how each builds it, and what it needs or is:

* needs_logits: it needs logits over candidates (a closed-answer task or a classifier);
* one_step: a single step of size eps (FGSM), or from a random start of size alpha (FGSM-RS);
* black_box: its budget is queries, not gradient steps (Square); `--steps` sets `queries`;
* minimises: it finds each example's minimal perturbation (CW), so it runs once per example
  and the threat model projects that result onto each eps ball;
* remembers (backend ours): part of its work does not depend on eps (AutoAttack's FAB-T without
  a random start), so its `run` also takes `memos`, one dict per example that the threat model
  keeps for the batch across eps, and does that work once per example;
* iteration_bound: a fixed number of iterations per batch whatever its examples (APGD's steps,
  Square's queries), so the engine attacks as many examples together as fit (engine/loop.py);
* engine_restarts: the engine runs its restarts (our PGD) instead of the library;
* aims: our loop can ascend a target's objective instead (attacks/targeted.py, `target:`);
* resources: what it reads from a path the user gives (text recipes: embeddings, mlm);
* default_queries: the query budget of a preset that names none;
* sanity_roles: what the report's gradient-masking checks take it for (written into run.json):
  "white-box" (a strong white-box attack), "steps" (more steps never weaker), "one-step"
  (never stronger than the iterative attack), "black-box" (never stronger than white-box);
* check(spec): the combinations it refuses, one line each;
* objective(victim, examples): what it ascends instead of the victim's own objective
  (SGA's set-level loss), run by our PGD loop;
* run (backend ours): `run(spec, params, objective, x0, eps, seeds, early_stop) -> AscentResult`,
  a method of its own (docs/extending.md); without it, ours is the PGD / FGSM loop.

The settings the first methods had stay fields of AttackSpec (their values are the run
fingerprint, presets.AttackSpec.identity, unchanged); a setting of a new method lives in
`AttackSpec.settings`, and `params(spec)` is the method's typed view of either. Library
objects (torchattacks, foolbox) are built lazily by the methods' `torchattacks` / `foolbox`
functions, so importing this module imports neither.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable

from ..errors import AttackError
from .params import setting


@dataclass(frozen=True)
class GradientParams:
    steps: int = setting(10, min=1)
    step_ratio: float | None = setting(0.25, above=0)
    alpha: float | None = setting(None, above=0)
    random_start: bool = False
    restarts: int = setting(1, min=1)


@dataclass(frozen=True)
class OneStepParams:
    """FGSM: one step of size eps (`steps: 1`; presets say so). With `random_start` (backend ours) it is
    FGSM-RS, the attack of fast adversarial training (Wong et al. 2020): a uniform start in the ball, then
    one signed step of `alpha` (theirs: 1.25 eps), projected back onto the ball."""

    steps: int = setting(1, min=1)
    random_start: bool = False
    alpha: float | None = setting(None, above=0)


@dataclass(frozen=True)
class APGDParams:
    steps: int = setting(10, min=1)
    restarts: int = setting(1, min=1)
    loss: str = setting("ce", choices=("ce", "dlr"))


@dataclass(frozen=True)
class SquareParams:
    queries: int | None = setting(None, min=1)
    restarts: int = setting(1, min=1)
    p_init: float = setting(0.8, above=0, max=1)
    loss: str = setting("ce", choices=("margin", "ce"))


@dataclass(frozen=True)
class CWParams:
    steps: int = setting(10, min=1)
    c: float = setting(1.0, min=0)
    kappa: float = setting(0.0, min=0)
    lr: float = setting(0.01, above=0)


@dataclass(frozen=True)
class AutoAttackParams:
    steps: int = setting(10, min=1)
    version: str = setting("standard", choices=("standard", "plus", "rand"))
    target_classes: int = setting(9, min=1)
    queries: int | None = setting(None, min=1)


@dataclass(frozen=True)
class TextParams:
    """A TextAttack recipe (attacks/text/recipes.py): its query budget and the resources it reads."""

    queries: int | None = setting(None, min=1)
    embeddings: str = setting("", path=True)
    mlm: str = setting("", path=True)


@dataclass(frozen=True)
class JointParams:
    """A joint order (joint.py): the text part's recipe and budgets, the image part's PGD."""

    text_method: str = ""
    max_words_fraction: float | None = setting(None, above=0, max=1)
    queries: int | None = setting(None, min=1)
    embeddings: str = setting("", path=True)
    mlm: str = setting("", path=True)
    steps: int = setting(10, min=1)
    step_ratio: float | None = setting(0.25, above=0)
    alpha: float | None = setting(None, above=0)
    random_start: bool = False
    restarts: int = setting(1, min=1)


@dataclass(frozen=True)
class SeverityParams:
    """A natural corruption (corruptions.py, text/corruptions.py): nothing but its severities (eps)."""


@dataclass(frozen=True)
class AttackMethod:
    name: str
    kind: str  # the threat model it belongs to: image, embedding, text, joint, corruption, ...
    params_class: type
    backends: tuple[str, ...]
    needs_logits: bool = False
    one_step: bool = False
    black_box: bool = False
    engine_restarts: bool = False
    aims: bool = False  # takes a target (backend ours)
    resources: tuple[str, ...] = ()  # embeddings, mlm: files it needs (--embeddings, --mlm)
    minimises: bool = False
    remembers: bool = False
    iteration_bound: bool = False
    # an example's outcome depends on the other examples of its batch (a set-level objective such as SGA's
    # reference captions padded to the batch's longest): the engine then never pools batches (engine/loop.py)
    batch_dependent: bool = False
    default_queries: int | None = None  # a preset that leaves `queries` out gets this budget
    sanity_roles: tuple[str, ...] = ()  # white-box, steps, one-step, black-box (the report's checks)
    check: Callable[[Any], None] | None = None
    torchattacks: Callable | None = None  # (spec, params, ta, model, eps, n_classes, seed) -> attack
    foolbox: Callable | None = None  # (spec, params, fb, eps) -> attack
    objective: Callable | None = None  # (victim, examples) -> the objective our PGD ascends
    run: Callable | None = None  # backend ours: (spec, params, obj, x0, eps, seeds, early_stop) -> AscentResult

    def params(self, spec) -> Any:
        """This method's parameters, read from a preset's fields and its settings."""
        own = dict(getattr(spec, "settings", ()))
        return self.params_class(
            **{f.name: own[f.name] if f.name in own else getattr(spec, f.name) for f in fields(self.params_class)}
        )


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


def setting_names() -> tuple[str, ...]:
    """Every parameter name some registered method declares (recipe entries may set them)."""
    return tuple(dict.fromkeys(f.name for m in _methods.values() for f in fields(m.params_class)))


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
    if (spec.random_start or spec.alpha is not None) and spec.backend != "ours":
        raise AttackError(f"attack {spec.name}: FGSM with a random start or a step size (FGSM-RS) needs --backend ours")


def _apgd_ta(spec, p: APGDParams, ta, model, eps, n_classes, seed):
    return ta.APGD(model, norm=_ta_norm(spec), eps=eps, steps=p.steps, n_restarts=p.restarts, seed=seed, loss=p.loss)


def _square_check(spec) -> None:
    if not spec.queries:
        raise AttackError(f"attack {spec.name}: square needs a query budget (queries: N)")


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


def _ours(name: str):
    """Backend ours of apgd, square and autoattack (attacks/apgd.py, square.py, autoattack.py), imported
    when first run so that importing this module imports no torch."""
    from . import apgd, autoattack, square

    return {"apgd": apgd, "square": square, "autoattack": autoattack}[name]


def _autoattack_check(spec) -> None:
    if spec.backend == "ours":  # the versions backend ours runs (torch is imported only then)
        _ours("autoattack").check(spec)


register(
    AttackMethod(
        "pgd",
        "image",
        GradientParams,
        ("ours", "torchattacks", "foolbox"),
        engine_restarts=True,
        aims=True,
        sanity_roles=("white-box", "steps"),
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
        aims=True,
        sanity_roles=("one-step",),
        check=_fgsm_check,
        torchattacks=lambda spec, p, ta, model, eps, *_: ta.FGSM(model, eps=eps),
        foolbox=lambda spec, p, fb, eps: fb.attacks.LinfFastGradientAttack(random_start=False),
    )
)
register(
    AttackMethod(
        "apgd",
        "image",
        APGDParams,
        ("torchattacks", "ours"),
        needs_logits=True,
        iteration_bound=True,
        sanity_roles=("white-box",),
        torchattacks=_apgd_ta,
        run=lambda *a: _ours("apgd").run(*a),
    )
)
register(
    AttackMethod(
        "square",
        "image",
        SquareParams,
        ("torchattacks", "ours"),
        needs_logits=True,
        black_box=True,
        iteration_bound=True,
        default_queries=1000,
        sanity_roles=("black-box",),
        check=_square_check,
        torchattacks=_square_ta,
        run=lambda *a: _ours("square").run(*a),
    )
)
register(
    AttackMethod(
        "cw",
        "image",
        CWParams,
        ("torchattacks", "foolbox"),
        needs_logits=True,
        minimises=True,
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
        ("torchattacks", "ours"),
        needs_logits=True,
        remembers=True,
        iteration_bound=True,
        check=_autoattack_check,
        torchattacks=_autoattack_ta,
        run=lambda *a, **k: _ours("autoattack").run(*a, **k),
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
        batch_dependent=True,
        objective=lambda victim, examples: _sga().reference_set(victim, examples),
    )
)
# the report's masking checks took every method called pgd / fgsm for these roles, embedding ones too
register(
    AttackMethod(
        "pgd",
        "embedding",
        GradientParams,
        ("ours",),
        engine_restarts=True,
        aims=True,
        sanity_roles=("white-box", "steps"),
    )
)
register(
    AttackMethod(
        "fgsm",
        "embedding",
        OneStepParams,
        ("ours",),
        one_step=True,
        aims=True,
        sanity_roles=("one-step",),
        check=_fgsm_check,
    )
)


# the TextAttack recipes (attacks/text/recipes.py) and the joint orders (joint.py): text first, then
# PGD on the image; image first; SGA's set-level guidance (attacks/sga.py). Natural corruptions
# register with their threat models (corruptions.py, text/corruptions.py).
_RESOURCES = {"textbugger": ("embeddings",), "textfooler": ("embeddings",), "bert-attack": ("mlm",), "bae": ("mlm",)}
for _recipe in ("deepwordbug", "pwws", "textbugger", "textfooler", "bert-attack", "bae", "pruthi"):
    register(
        AttackMethod(
            _recipe, "text", TextParams, ("textattack",), needs_logits=True, resources=_RESOURCES.get(_recipe, ())
        )
    )
for _order in ("text-image", "image-text", "sga"):
    register(AttackMethod(_order, "joint", JointParams, ("ours",), needs_logits=True))
