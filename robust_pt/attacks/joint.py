"""Joint attacks: the question text and the image of a VL model, one after the other.

Why: a real adversary controls both inputs, and a model robust in each alone may still
fall to the pair; no attack library covers this. Two orders, each with both budgets in
its preset (text: `max_words_fraction`, `queries`; image: eps, norm, steps, step_ratio):

* text-image: the text attack first (at the clean image); an example it leaves standing
  gets image PGD at eps against its adversarial (last-tried) text. The text stage does
  not depend on eps, so the engine runs it once per example and reuses it at every eps.
* image-text: image PGD at eps first; an example still standing gets the text attack with
  its adversarial image held fixed (the wrapper caches that image's features).

* sga: SGA's three steps (attacks/sga.py): the text attack at the clean image (cached like
  text-image's), image PGD on the mean loss over the image at several scales and the set
  {question, its adversarial rewrite}, then the text attack again, from the question, at
  the adversarial image. Every example goes through every stage (SGA is made to transfer).

In the two chained orders an example leaves as soon as one stage breaks it. The final
verdict is the model's prediction at the final (image, text) pair.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import torch

from .image import flat_norms, run_image_attack
from .objectives import ClosedImage
from .presets import AttackSpec
from .text.recipes import TextResult, TextRunner


@dataclass
class JointResult:
    adv: torch.Tensor  # (B, C, H, W) final images
    texts: list[str]  # final texts
    logits: torch.Tensor  # (B, K) at the final pairs
    text: list[TextResult | None]  # the text stage of each example (None: not run)
    steps: torch.Tensor  # (B,) image attack iterations
    linf: torch.Tensor
    l2: torch.Tensor
    grad_evals: int
    fwd_evals: int


def image_spec(spec: AttackSpec) -> AttackSpec:
    """The image stage of a joint preset as an image PGD spec."""
    return replace(
        spec,
        kind="image",
        method="pgd",
        backend="ours",
        text_method="",
        max_words_fraction=None,
        embeddings="",
        mlm="",
        queries=None,
    )


def final_logits(model, x: torch.Tensor, texts: Sequence[str], answers: Sequence[str]) -> torch.Tensor:
    """Logits at each (image, text) pair."""
    with torch.no_grad():
        return model.candidate_logits(x, list(texts), answers)


def _text_again(runner: TextRunner, adv, texts, labels, frac: float, text_seeds) -> tuple[list, list, torch.Tensor]:
    """SGA's last step: the text attack from the question again, at the adversarial images."""
    res = runner.run_many(adv, list(texts), [int(y) for y in labels], fraction=frac, seeds=[s + 1 for s in text_seeds])
    return list(res), [r.adv_text for r in res], torch.stack([r.logits for r in res]).to(adv.device)


class _Stages:
    """One batch of a joint attack: its inputs, the image and text stages, and what they found so far."""

    def __init__(self, spec, runner, model, answers, x0, texts, labels, eps, **kw):
        self.spec, self.runner, self.model, self.answers = spec, runner, model, answers
        self.x0, self.texts, self.labels, self.eps = x0, list(texts), labels, eps
        self.seeds, self.batch_seed, self.text_seeds = kw["seeds"], kw["batch_seed"], kw["text_seeds"]
        self.early_stop, self.known, self.features = kw["early_stop"], kw["known"], kw["features"]
        B = x0.shape[0]
        self.ids = list(kw["ids"]) if kw["ids"] is not None else [str(j) for j in range(B)]
        self.cache = kw["text_cache"] if kw["text_cache"] is not None else {}
        self.img, self.frac = image_spec(spec), float(spec.max_words_fraction)
        self.adv, self.out_texts = x0.clone(), list(texts)
        self.text_res: list[TextResult | None] = [None] * B
        self.steps = torch.zeros(B, dtype=torch.long)
        self.grads = self.fwds = 0

    def image(self, rows: list[int], cur_texts: list[str], guide: list[str] | None = None) -> None:
        if not rows:
            return
        idx = torch.tensor(rows, device=self.x0.device)
        obj = ClosedImage(self.model, [cur_texts[j] for j in rows], self.answers, self.labels[idx])
        if guide is not None:  # sga: the set of texts, the image at every scale
            from .sga import SetGuided

            obj = SetGuided([obj, ClosedImage(self.model, [guide[j] for j in rows], self.answers, self.labels[idx])])
        r = run_image_attack(
            self.img,
            obj,
            self.x0[idx],
            self.eps,
            seeds=[self.seeds[j] for j in rows],
            batch_seed=self.batch_seed,
            early_stop=self.early_stop,
        )
        self.adv[idx] = r.adv.detach()
        self.steps[idx.cpu()] = r.steps.cpu()
        self.grads += r.grad_evals
        self.fwds += r.fwd_evals

    def text(self, rows: list[int], images: torch.Tensor, clean: bool) -> None:
        todo = [j for j in rows if self.ids[j] not in self.cache]
        if todo:
            res = self.runner.run_many(
                images[todo],
                [self.texts[j] for j in todo],
                [int(self.labels[j]) for j in todo],
                fraction=self.frac,
                seeds=[self.text_seeds[j] for j in todo],
                known=[self.known[j] for j in todo] if clean and self.known is not None else None,
                features=self.features[todo] if clean and self.features is not None else None,
            )
            self.cache.update({self.ids[j]: r for j, r in zip(todo, res)})
        for j in rows:
            self.text_res[j] = self.cache[self.ids[j]]
            self.out_texts[j] = self.cache[self.ids[j]].adv_text

    def standing(self, logits: torch.Tensor) -> list[int]:
        return [j for j in range(len(self.texts)) if int(logits[j].argmax()) == int(self.labels[j])]


def _sga_order(st: _Stages) -> tuple[torch.Tensor, list[int]]:
    every = list(range(len(st.texts)))
    st.text(every, st.x0, clean=True)
    st.image(every, st.texts, guide=list(st.out_texts))
    first = list(st.text_res)
    st.text_res, st.out_texts, logits = _text_again(st.runner, st.adv, st.texts, st.labels, st.frac, st.text_seeds)
    # the records' queries: both text stages' (the final text is the second stage's)
    st.text_res = [replace(r, queries=r.queries + (f.queries if f else 0)) for r, f in zip(st.text_res, first)]
    return logits, []


def _text_image_order(st: _Stages) -> tuple[torch.Tensor, list[int]]:
    st.text(list(range(len(st.texts))), st.x0, clean=True)
    logits = torch.stack([r.logits for r in st.text_res]).to(st.x0.device)
    standing = st.standing(logits)
    st.image(standing, st.out_texts)
    return logits, standing


def _image_text_order(st: _Stages) -> tuple[torch.Tensor, list[int]]:
    st.image(list(range(len(st.texts))), st.out_texts)
    logits = final_logits(st.model, st.adv, st.out_texts, st.answers)
    st.fwds += len(st.texts)
    standing = st.standing(logits)
    st.text(standing, st.adv, clean=False)
    return logits, standing


# the joint orders (registered with their parameters in attacks/methods.py): (stages) -> (logits, the
# examples whose pair the second stage changed)
ORDERS = {"sga": _sga_order, "text-image": _text_image_order, "image-text": _image_text_order}


def run_joint(
    spec: AttackSpec,
    runner: TextRunner,
    model,
    answers: Sequence[str],
    x0: torch.Tensor,
    texts: Sequence[str],
    labels: torch.Tensor,
    eps: float,
    *,
    seeds: list[int],
    batch_seed: int,
    text_seeds: list[int],
    early_stop: bool = True,
    ids: Sequence[str] | None = None,
    text_cache: dict | None = None,
    known: Sequence | None = None,
    features: torch.Tensor | None = None,
) -> JointResult:
    """Attack a batch jointly at image eps.

    text_cache (text-image): example id -> text stage result, kept across the eps of a batch
    (the text stage runs at the clean image, so it does not depend on eps). known: the
    clean logits and image features of each example (reused by the text stage when it starts
    at the clean image).
    """
    st = _Stages(
        spec, runner, model, answers, x0, texts, labels, eps, seeds=seeds, batch_seed=batch_seed,
        text_seeds=text_seeds, early_stop=early_stop, ids=ids, text_cache=text_cache, known=known, features=features,
    )  # fmt: skip
    logits, standing = ORDERS[spec.method](st)
    if standing:  # the pairs the second stage changed
        idx = torch.tensor(standing, device=logits.device)
        logits = logits.clone()
        logits[idx] = final_logits(model, st.adv[idx.to(st.adv.device)], [st.out_texts[j] for j in standing], answers)
        st.fwds += len(standing)
    linf, l2 = flat_norms(st.adv - x0)
    return JointResult(st.adv, st.out_texts, logits, st.text_res, st.steps, linf, l2, st.grads, st.fwds)
