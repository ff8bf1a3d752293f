"""The four built-in threat models: image, embedding, text and joint attacks.

Each binds the attack loops of its module (image.py, embedding.py, text/recipes.py, joint.py) to a
victim (victim.py): the victim supplies the objective and judges the perturbed inputs; the
threat model only perturbs. Seeds: random starts per (seed, example id, eps, restart),
library attacks per (seed, batch, eps, restart), text attacks per (seed, example id, eps),
so results do not depend on batching or resuming. Registered lazily by core.BUILTIN.
"""

from __future__ import annotations

import numpy as np
import torch

from .core import Bound, Outcome, ThreatModel
from .seeds import derive_seed  # noqa: F401  (re-exported: threats.derive_seed, one definition)

# record fields of text and joint attacks (besides queries), and their value when not attacked
NO_TEXT = {"adv_text": None, "words_changed": 0, "words_fraction": 0.0, "max_words": None}


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


class _Gradient(Bound):
    """Shared by image and embedding attacks: PGD restarts, early stopping, seeds, counters."""

    @property
    def restarts(self) -> int:
        """Engine-run restarts for methods that ask for them (our PGD); libraries run their own."""
        from .methods import get

        m = get(self.spec.kind, self.spec.method)
        return self.spec.restarts if m is not None and m.engine_restarts else 1

    @property
    def early_stop(self) -> bool:
        return bool(self.spec.early_stop and self.victim.early_stop_allowed)

    @property
    def poolable(self) -> bool:
        """Backend ours draws per example (seeds of run seed, example id, eps, restart); the libraries
        are seeded per batch, and a set-level method (AttackMethod.batch_dependent) looks at the batch."""
        from .methods import get

        m = get(self.spec.kind, self.spec.method)
        return self.spec.backend == "ours" and not (m is not None and m.batch_dependent)

    def _count(self, r) -> None:
        self.victim.stats["grad_evals"] += r.grad_evals
        self.victim.stats["fwd_evals"] += r.fwd_evals

    @property
    def record_fields(self) -> dict:
        from .targeted import FIELDS

        return {**self.threat.record_fields, **(FIELDS if self.spec.target else {})}

    @property
    def targeting(self):
        """The run's targets (targeted.Targeting) when the preset names one, else None."""
        if not self.spec.target:
            return None
        if getattr(self, "_targeting", None) is None:
            from .targeted import Targeting

            self._targeting = Targeting(self.spec, self.seed)
        return self._targeting

    def _aim(self, out: Outcome, examples, targets) -> Outcome:
        """A targeted attack's outcome: success per row and the target's record fields."""
        if targets is not None:
            out.success, out.extra = self.targeting.judge(self.victim, examples, out.preds, targets)
        return out


class _ImageBound(_Gradient):
    def start_batch(self) -> None:
        self.minimal = {}  # each example's minimal perturbation (methods.AttackMethod.minimises), this batch

    def perturb(self, b, examples, index, x0, eps, restart):
        from .image import flat_norms, run_image_attack

        v, aim = self.victim, self.targeting
        targets = aim.targets(v, examples, x0) if aim else None
        obj = aim.image_objective(v, examples, targets) if aim else self._objective(examples)
        seeds = [derive_seed(self.seed, ex.id, eps, restart) for ex in examples]
        r = run_image_attack(
            self.spec,
            obj,
            x0,
            eps,
            seeds=seeds,
            batch_seed=derive_seed(self.seed, "batch", b, eps, restart),
            early_stop=self.early_stop,
            classifier=getattr(obj, "classifier", None),
            n_classes=len(v.task.answers) if v.has_logits else None,
            minimal=self.__dict__.setdefault("minimal", {}),  # minimising methods (CW): once per example
            ids=[(ex.id, restart) for ex in examples],
        )
        self._count(r)
        linf, l2 = flat_norms(r.adv - x0)
        preds = v.predict_images(r.adv, [ex.text for ex in examples], r.logits)
        out = Outcome(
            preds, v.scores(examples, index, preds), _np(linf), _np(l2), r.steps.cpu().numpy(), r.queries, r.adv
        )
        return self._aim(out, examples, targets)

    def _objective(self, examples):
        """The victim's objective, or the one the method ascends instead (methods.AttackMethod.objective)."""
        from .methods import get

        m = get(self.spec.kind, self.spec.method)
        return (
            m.objective(self.victim, examples)
            if m is not None and m.objective
            else self.victim.image_objective(examples)
        )


class ImageThreat(ThreatModel):
    """Perturb [0, 1] pixels inside an L-inf or L2 ball (ours, torchattacks or foolbox)."""

    name = "image"
    saves_samples = True
    huge = {"pixel/linf": 64 / 255, "pixel/l2": 0.25}  # the huge-eps sanity check's balls

    def bind(self, victim, spec, seed):
        return _ImageBound(self, victim, spec, seed)


class _EmbeddingBound(_Gradient):
    def perturb(self, b, examples, index, x0, eps, restart):
        from .embedding import run_embedding_attack

        v, aim = self.victim, self.targeting
        with torch.no_grad():
            e0 = v.model.embed(x0, [ex.text for ex in examples])
        targets = aim.targets(v, examples, x0) if aim else None
        obj = aim.embeds_objective(v, examples, e0, targets) if aim else v.embeds_objective(examples, e0)
        seeds = [derive_seed(self.seed, ex.id, eps, restart) for ex in examples]
        r = run_embedding_attack(self.spec, obj, e0, eps, seeds=seeds, early_stop=self.early_stop)
        self._count(r)
        preds = v.predict_embeds(r.adv, r.logits)
        out = Outcome(  # adv: the adversarial Embeds (what a transfer run carries to its targets)
            preds, v.scores(examples, index, preds), _np(r.linf), _np(r.l2), r.steps.cpu().numpy(), None, r.adv
        )
        return self._aim(out, examples, targets)


class EmbeddingThreat(ThreatModel):
    """Perturb the image and text embeddings (OFA-PT's attack), eps relative to their RMS or absolute."""

    name = "embedding"
    needs = frozenset({"vl", "embeddings"})
    perturbs, image_only, huge = "embedding", False, {"rms": 1.0}

    def bind(self, victim, spec, seed):
        return _EmbeddingBound(self, victim, spec, seed)

    def no_vl_message(self, attack, model_name):
        return (
            f"{attack.name} perturbs text and image embeddings; a plain image classifier has none "
            f"(use an image attack such as pgd)"
        )


def _stack(tensors: list) -> torch.Tensor | None:
    return torch.stack(tensors) if tensors and all(t is not None for t in tensors) else None


def text_fields(tr) -> dict:
    from .text.recipes import words_fraction

    if tr is None:
        return {**NO_TEXT, "queries": 0}
    return {
        "adv_text": tr.adv_text,
        "words_changed": tr.words_changed,
        "words_fraction": words_fraction(tr.words_changed, tr.n_words),
        "max_words": tr.max_words,
        "queries": tr.queries,
    }


class _TextBound(Bound):
    """Text and joint attacks: the clean pass keeps each example's logits and image features
    (the text attack starts from them and never recomputes the image side)."""

    def __init__(self, threat, victim, spec, seed):
        super().__init__(threat, victim, spec, seed)
        self._runner = None
        self.clean_logits: dict = {}
        self.clean_features: dict = {}
        self.text_cache: dict = {}  # joint text-image: example id -> text stage (eps-free)

    @property
    def runner(self):
        if self._runner is None:
            from .text.recipes import TextRunner

            self._runner = TextRunner(self.spec, self.victim.model, self.victim.task.answers)
        return self._runner

    @property
    def early_stop(self) -> bool:
        return bool(self.spec.early_stop and self.victim.early_stop_allowed)

    def start_batch(self) -> None:
        self.text_cache = {}

    def clean(self, x0, examples, index):
        v = self.victim
        with torch.no_grad():
            e = v.model.embed(x0, [ex.text for ex in examples])
            logits = v.model.candidate_logits_from_embeds(e, v.task.answers)
        self.clean_logits = {k: logits[j].detach().cpu() for j, k in enumerate(index)}
        self.clean_features = {k: e.image[j] for j, k in enumerate(index)}
        v.stats["fwd_evals"] += len(examples)
        return logits.argmax(-1).tolist()

    def _known(self, index):
        return [self.clean_logits.get(i) for i in index], _stack([self.clean_features.get(i) for i in index])

    def perturb(self, b, examples, index, x0, eps, restart):
        st, runner = self.victim.stats, self.runner
        q0, r0 = runner.scorer.queries, runner.scorer.rows
        logits, extra, steps, linf, l2, adv = self._attack(b, examples, index, x0, eps, restart)
        st["text_queries"] = st.get("text_queries", 0) + runner.scorer.queries - q0
        st["text_model_rows"] = st.get("text_model_rows", 0) + runner.scorer.rows - r0
        preds = logits.argmax(-1).tolist()
        return Outcome(preds, self.victim.scores(examples, index, preds), linf, l2, steps, None, adv, extra)


class _WordsBound(_TextBound):
    def _attack(self, b, examples, index, x0, eps, restart):
        known, features = self._known(index)
        res = self.runner.run_many(
            x0,
            [ex.text for ex in examples],
            [ex.label for ex in examples],
            fraction=eps,
            seeds=[derive_seed(self.seed, ex.id, eps, "text") for ex in examples],
            known=known,
            features=features,
        )
        zeros = np.zeros(len(examples))
        return (
            torch.stack([r.logits for r in res]),
            [text_fields(r) for r in res],
            np.zeros(len(examples), dtype=np.int64),
            zeros,
            zeros,
            None,
        )


class _JointBound(_TextBound):
    def _attack(self, b, examples, index, x0, eps, restart):
        from .joint import run_joint

        spec, v = self.spec, self.victim
        known, features = self._known(index)
        text_seeds = [
            derive_seed(self.seed, ex.id, eps if spec.method == "image-text" else "any", "text") for ex in examples
        ]
        r = run_joint(
            spec,
            self.runner,
            v.model,
            v.task.answers,
            x0,
            [ex.text for ex in examples],
            v.labels(examples),
            eps,
            seeds=[derive_seed(self.seed, ex.id, eps, restart) for ex in examples],
            batch_seed=derive_seed(self.seed, "batch", b, eps, 0),
            text_seeds=text_seeds,
            early_stop=self.early_stop,
            ids=[ex.id for ex in examples],
            text_cache=self.text_cache if spec.method in ("text-image", "sga") else None,
            known=known,
            features=features,
        )
        v.stats["grad_evals"] += r.grad_evals
        v.stats["fwd_evals"] += r.fwd_evals
        return (r.logits, [text_fields(tr) for tr in r.text], r.steps.cpu().numpy(), _np(r.linf), _np(r.l2), r.adv)


class _TextThreat(ThreatModel):
    needs = frozenset({"vl", "text", "logits"})
    perturbs, image_only = "text", False
    record_fields = NO_TEXT
    logits_reason = "needs logits over candidate answers (TextAttack's untargeted goal)"

    def no_vl_message(self, attack, model_name):
        return (
            f"{attack.name} attacks the question text of a vision-language model; {model_name} is an "
            f"image-only classifier with no text input (use an image attack such as pgd)"
        )

    def check_task(self, attack, victim_cls, task):
        super().check_task(attack, victim_cls, task)
        from .text.recipes import check_resources

        check_resources(attack.spec)


class TextThreat(_TextThreat):
    """Rewrite the question (TextAttack recipes); eps is the word budget, a fraction of its words."""

    name = "text"

    def bind(self, victim, spec, seed):
        return _WordsBound(self, victim, spec, seed)


class JointThreat(_TextThreat):
    """A text attack and image PGD chained (text then image, or image then text)."""

    name = "joint"
    saves_samples = True
    perturbs = "image+text"

    def bind(self, victim, spec, seed):
        return _JointBound(self, victim, spec, seed)


IMAGE, EMBEDDING, TEXT, JOINT = ImageThreat(), EmbeddingThreat(), TextThreat(), JointThreat()
