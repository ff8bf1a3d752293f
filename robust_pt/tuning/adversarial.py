"""Adversarial tuning: every tuning method trained on the engine's own attacks (`--adversarial ATTACK`).

Why here and not a second PGD: the inner maximisation is `attacks.image.run_image_attack` /
`attacks.embedding.run_embedding_attack` on the objective the engine's victim attacks (candidate
cross-entropy on closed-answer tasks, the reference sequence's loss on generative tasks and on the
pretraining mix), resolved from a registered preset through the same typed overrides as
`robust-pt attack`, so "trained against PGD-3 at 4/255" means the attack the report then runs.

Two losses:

* ce (PGD-AT, Madry et al. 2018): the attacked rows of each batch (`ratio` of it) are replaced by
  their adversarial inputs and the method's usual training loss is taken on the batch.
* trades (Zhang et al. 2019): the usual loss on the clean batch plus beta x KL(p(x) || p(x_adv)) over
  the candidate answers, with x_adv the point in the ball that maximises that KL (from the preset's
  random start rather than TRADES' 0.001 x N(0, 1)). Tasks with candidate logits only.

One-step presets are FGSM-RS, fast adversarial training (Wong et al. 2020): a random start and one
step of 1.25 eps unless `step_size` says otherwise. While the attack runs the model is in eval mode
(no dropout: the gradient is the one of the model the report attacks, and the attack consumes no
random numbers, so an adversarial run differs from a clean one only by its inputs) and the tuned
parameters are frozen (the attack's backward passes compute no gradient for them); the training
step itself runs in train mode, with whatever dropout the method has. Random starts are seeded per
(run seed, step, example id): independent of batch composition.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Sequence

from ..errors import ConfigError

LOSSES = ("ce", "trades")
FAST_RATIO = 1.25  # FGSM-RS's step, in units of eps (Wong et al. 2020)
BETA = 6.0  # TRADES' default weight (Zhang et al. 2019)
PGD_REACH = 2.5  # multi-step presets: step size 2.5 eps / steps unless `step_size` says otherwise
MAX_STEPS = 1000


@dataclass(frozen=True)
class AdversarialConfig:
    """`--adversarial ATTACK --adv-eps ... --adv-steps ... --adv-step-size ... --adv-loss ... --adv-beta
    ... --adv-ratio ...` (a recipe's `adversarial:` mapping has the same keys without the prefix).

    attack: a registered gradient preset (image or embedding kind: pgd, pgd-l2, fgsm, apgd-ce, emb-pgd,
    emb-fgsm, ...). eps: the ball (pixel units for image attacks, the preset's unit for embedding
    attacks). steps: the preset's when None; step_size: 2.5 eps / steps (Madry et al.; the pgd preset's
    eps/4 at its 10 steps), one-step presets 1.25 eps (FGSM-RS). loss: ce or trades; beta: TRADES'
    weight. ratio: the share of each batch attacked. `spec` (the resolved attack) is computed once."""

    attack: str
    eps: float
    steps: int | None = None
    step_size: float | None = None
    loss: str = "ce"
    beta: float = BETA
    ratio: float = 1.0

    def __post_init__(self):
        from ..attacks.params import parse_eps_value

        try:
            eps = parse_eps_value(self.eps)
        except Exception:
            raise ConfigError(f"--adv-eps must be a number such as 4/255, got {self.eps!r}") from None
        object.__setattr__(self, "eps", eps)
        if self.steps is not None and (
            isinstance(self.steps, bool) or not isinstance(self.steps, int) or not 1 <= self.steps <= MAX_STEPS
        ):
            raise ConfigError(f"--adv-steps must be an integer from 1 to {MAX_STEPS}, got {self.steps!r}")
        if self.step_size is not None:
            object.__setattr__(self, "step_size", _positive("--adv-step-size", self.step_size))
        if self.loss not in LOSSES:
            raise ConfigError(f"--adv-loss must be ce or trades, got {self.loss!r}")
        if not _number(self.beta) or self.beta < 0:
            raise ConfigError(f"--adv-beta must be a number >= 0, got {self.beta!r}")
        if self.loss != "trades" and self.beta != BETA:
            raise ConfigError("--adv-beta is TRADES' weight; add --adv-loss trades or drop it")
        if not _number(self.ratio) or not 0 < self.ratio <= 1:
            raise ConfigError(f"--adv-ratio must lie in (0, 1] (the share of each batch attacked), got {self.ratio!r}")
        self.spec  # the attack, its eps and its settings are checked now, before any model is read

    @cached_property
    def spec(self):
        """The AttackSpec the inner maximisation runs: the preset with these steps and step size, no early stop."""
        from ..attacks.methods import get
        from ..attacks.presets import resolve, validate_eps

        base = resolve(self.attack)
        m = get(base.kind, base.method)
        if m is None or base.kind not in ("image", "embedding") or m.black_box or base.target:
            raise ConfigError(
                f"--adversarial {self.attack}: adversarial tuning needs an untargeted gradient attack on images or "
                f"embeddings (pgd, pgd-l2, fgsm, apgd-ce, emb-pgd, emb-fgsm, ...); {self.attack} is a "
                f"{_what(base, m)}"
            )
        validate_eps(base, [self.eps])
        spec = resolve(base, **self._overrides(base, m))
        if self.loss == "trades" and spec.backend != "ours":
            raise ConfigError(
                f"--adv-loss trades maximises TRADES' KL term with robust-pt's own PGD; {self.attack} runs on "
                f"{spec.backend}: use pgd, fgsm or emb-pgd"
            )
        return spec

    def _overrides(self, base, m) -> dict:
        """The preset's settings for training: no early stop; FGSM-RS for one-step methods; otherwise these steps
        and a step of 2.5 eps / steps (Madry et al.; the pgd preset's own eps/4 at its 10 steps) where the
        method has a step size (APGD chooses its own); TRADES always from a random start (its KL has no
        gradient at the clean input)."""
        from dataclasses import fields

        declared = {f.name for f in fields(m.params_class)}
        over: dict = {"early_stop": False}
        if m.one_step:
            if self.steps not in (None, 1):
                raise ConfigError(
                    f"--adversarial {self.attack} is one step (FGSM-RS); for --adv-steps {self.steps} use pgd"
                )
            return {**over, "random_start": True, "alpha": self.step_size or FAST_RATIO * self.eps}
        steps = self.steps or base.steps
        over["steps"] = steps
        if "alpha" in declared:
            over["alpha"] = self.step_size or PGD_REACH * self.eps / steps
        elif self.step_size is not None:
            raise ConfigError(f"--adversarial {self.attack} chooses its own step size; drop --adv-step-size")
        if self.loss == "trades" and "random_start" in declared:
            over["random_start"] = True
        return over

    def record(self) -> dict:
        """What the checkpoint's meta and identity record: the settings and the attack they resolve to."""
        spec = self.spec
        return {
            **asdict(self),
            "steps": spec.steps,  # a one-step preset's is 1 (attacks/methods.py _fgsm_check)
            "step_size": spec.step_size(self.eps),
            "beta": self.beta if self.loss == "trades" else None,
            "kind": spec.kind,
            "norm": spec.norm,
            "eps_unit": spec.eps_unit,
        }

    def label(self) -> str:
        return label(self.record())


def label(rec: dict | None) -> str:
    """How reports name an adversarial schedule: "adversarial 4/255" (PGD-AT), "TRADES 4/255", with the attack
    when it is not pixel PGD/FGSM ("adversarial emb-pgd 0.05"); "" for clean tuning."""
    if not rec:
        return ""
    eps = float(rec["eps"])
    amount = (
        f"{round(eps * 255)}/255"
        if rec.get("eps_unit") == "pixel" and abs(eps * 255 - round(eps * 255)) < 1e-6
        else f"{eps:g}"
    )
    what = "TRADES" if rec.get("loss") == "trades" else "adversarial"
    attack = "" if rec.get("attack") in ("pgd", "fgsm") else f" {rec.get('attack')}"
    return f"{what}{attack} {amount}"


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _positive(flag: str, v) -> float:
    from ..attacks.params import parse_number

    try:
        x = parse_number(v)
    except Exception:
        x = None
    if x is None or not x > 0:
        raise ConfigError(f"{flag} must be a number > 0, got {v!r}")
    return float(x)


def _what(spec, m) -> str:
    if m is not None and m.black_box:
        return "black-box attack (its budget is queries, no gradient to train on)"
    if spec.target:
        return "targeted attack"
    return f"{spec.kind} attack"


def check_task(cfg: AdversarialConfig | None, task) -> None:
    """One line when these settings cannot train on `task`: TRADES needs candidate logits, library
    backends (apgd-ce) too."""
    if cfg is None:
        return
    from ..tasks.kinds import kind_of

    closed = kind_of(task).victim == "closed"
    if cfg.loss == "trades" and not closed:
        raise ConfigError(
            f"--adv-loss trades compares the answer distributions of clean and adversarial inputs; {task.name} has "
            f"no candidate answers (use --adv-loss ce there)"
        )
    if cfg.spec.backend != "ours" and not closed:
        raise ConfigError(
            f"--adversarial {cfg.attack} runs on {cfg.spec.backend}, which needs logits over candidate answers; "
            f"{task.name} has none (use pgd)"
        )


@contextlib.contextmanager
def _attacking(model, params):
    """The model as the attack sees it: eval mode, the tuned parameters frozen; restored afterwards."""
    was = model.training
    flags = [p.requires_grad for p in params]
    model.eval()
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)
        model.train(was)


class _KL:
    """TRADES' inner objective: KL(p(x) || p(x')) over the candidate answers, per example (no labels: it
    never stops early)."""

    labels = None

    def __init__(self, logits_fn, clean_logits):
        self.logits_fn, self.p = logits_fn, clean_logits.softmax(-1)

    def loss(self, xs, rows):
        import torch.nn.functional as F

        lg = self.logits_fn(xs, rows)
        return F.kl_div(lg.log_softmax(-1), self.p[rows], reduction="none").sum(-1), None

    def logits(self, xs, rows):
        return None


class InnerAttack:
    """The inner maximisation of one training run: `images(...)` or `embeds(...)` per batch."""

    def __init__(self, cfg: AdversarialConfig, model, task, seed: int):
        from ..attacks.victim import make_victim
        from ..tasks.kinds import kind_of

        self.cfg, self.spec, self.model, self.task, self.seed = cfg, cfg.spec, model, task, seed
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.stats = {"grad_evals": 0, "fwd_evals": 0, "gen_evals": 0}
        # the engine's victim of this model and task; None on the pretraining mix (no victim: every target there
        # is text, and the attack ascends the reference's loss)
        has_victim = kind_of(task).victim is not None
        self.victim = make_victim(model, task, model.device, self.stats) if has_victim else None
        self.last = None  # the last batch's (clean, adversarial) inputs: tests check the ball

    @property
    def on_embeddings(self) -> bool:
        return self.spec.kind == "embedding"

    def count(self, n: int) -> int:
        """How many rows of a batch of n are attacked (the first ones: batches are a random permutation)."""
        return max(1, min(n, round(self.cfg.ratio * n)))

    def rows(self, examples: Sequence) -> list[int]:
        """The rows attacked: the first `count`, less those of a closed task whose answer is no candidate (label
        -1, real datasets): they have no candidate loss to ascend and train on their clean inputs."""
        first = range(self.count(len(examples)))
        if self.victim is None or not self.victim.has_logits:
            return list(first)
        return [i for i in first if examples[i].label >= 0]

    def _seeds(self, examples: Sequence, step: int) -> list[int]:
        from ..attacks.seeds import derive_seed

        return [derive_seed(self.seed, "adversarial", step, ex.id) for ex in examples]

    def images(self, examples: Sequence, x, step: int):
        """x with its attacked `rows` replaced by adversarial images (detached)."""
        import torch

        from ..attacks.image import run_image_attack

        rows = self.rows(examples)
        if not rows:
            return x.detach()
        idx = torch.tensor(rows, device=x.device)
        exs, x0 = [examples[i] for i in rows], x[idx].detach()
        with _attacking(self.model, self.params):
            obj = self._objective(exs, lambda clean: _KL(clean.logits, self._clean_logits(clean, [x0])), image=True)
            r = run_image_attack(
                self.spec,
                obj,
                x0,
                self.cfg.eps,
                seeds=self._seeds(exs, step),
                batch_seed=self._seeds(exs[:1], step)[0],
                early_stop=False,
                classifier=getattr(obj, "classifier", None),
                n_classes=len(self.task.answers or []) or None,
            )
        adv = x.detach().clone()
        adv[idx] = r.adv.detach()
        self.last = (x0, r.adv.detach())
        return adv

    def _objective(self, exs: list, trades, image: bool, e0=None):
        """What the attack ascends on these examples: TRADES' KL (`trades(clean objective)`), else the victim's
        objective, or on the pretraining mix the reference's loss."""
        from ..attacks import objectives as ob

        v = self.victim
        if self.cfg.loss == "trades":
            return trades(v.image_objective(exs) if image else v.embeds_objective(exs, e0))
        if v is not None:
            return v.image_objective(exs) if image else v.embeds_objective(exs, e0)
        targets = [ex.target for ex in exs]
        if image:
            return ob.GenerativeImage(self.model, [ex.text for ex in exs], targets)
        return ob.GenerativeEmbeds(self.model, e0.text_mask, targets)

    def _clean_logits(self, obj, xs):
        import torch

        with torch.no_grad():
            return obj.logits(xs, torch.arange(xs[0].shape[0], device=xs[0].device))

    def embeds(self, examples: Sequence, e, step: int):
        """The live embeddings e with an adversarial perturbation added to their attacked `rows` (the perturbation
        is a constant: gradients reach the tuned parameters through e)."""
        import torch

        from ..attacks.embedding import run_embedding_attack
        from ..models.base import Embeds

        rows = self.rows(examples)
        if not rows:
            return e
        idx = torch.tensor(rows, device=e.image.device)
        exs = [examples[i] for i in rows]
        e0 = Embeds(e.image[idx].detach(), e.text[idx].detach(), e.text_mask[idx])
        with _attacking(self.model, self.params):
            kl = lambda clean: _KL(clean.logits, self._clean_logits(clean, [e0.image, e0.text]))  # noqa: E731
            obj = self._objective(exs, kl, image=False, e0=e0)
            r = run_embedding_attack(self.spec, obj, e0, self.cfg.eps, seeds=self._seeds(exs, step), early_stop=False)
        d_img, d_txt = torch.zeros_like(e.image), torch.zeros_like(e.text)
        d_img[idx] = (r.adv.image - e0.image).detach()
        d_txt[idx] = (r.adv.text - e0.text).detach()
        self.last = (e0, r.adv)
        return Embeds(e.image + d_img, e.text + d_txt, e.text_mask)


def trades_term(model, task, e_clean, e_adv, rows: list[int]):
    """beta's term: KL(p(x) || p(x_adv)) over the candidate answers, mean over the attacked rows (both sides
    differentiated, as in TRADES)."""
    import torch
    import torch.nn.functional as F

    from ..models.base import Embeds

    if not rows:
        return e_clean.image.new_zeros(())
    idx = torch.tensor(rows, device=e_clean.image.device)

    def pick(e):
        return Embeds(e.image[idx], e.text[idx], e.text_mask[idx])

    nat = model.candidate_logits_from_embeds(pick(e_clean), task.answers)
    adv = model.candidate_logits_from_embeds(pick(e_adv), task.answers)
    return F.kl_div(adv.log_softmax(-1), nat.softmax(-1), reduction="batchmean")


def adversarial_loss(model, task, inner: InnerAttack | None, examples, images, texts, clean_loss, step: int):
    """The training loss of one batch: `clean_loss(embeds)` on clean inputs (no `inner`), on the batch with its
    attacked rows adversarial (ce), or on the clean batch plus TRADES' term."""
    if inner is None:
        return clean_loss(model.embed(images, texts))
    if inner.cfg.loss == "trades":
        e = model.embed(images, texts)
        if inner.on_embeddings:
            e_adv = inner.embeds(examples, e, step)
        else:
            e_adv = model.embed(inner.images(examples, images, step), texts)
        return clean_loss(e) + inner.cfg.beta * trades_term(model, task, e, e_adv, inner.rows(examples))
    if inner.on_embeddings:
        return clean_loss(inner.embeds(examples, model.embed(images, texts), step))
    return clean_loss(model.embed(inner.images(examples, images, step), texts))
