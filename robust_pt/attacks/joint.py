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
    B = x0.shape[0]
    img = image_spec(spec)
    frac = float(spec.max_words_fraction)
    adv, out_texts = x0.clone(), list(texts)
    text_res: list[TextResult | None] = [None] * B
    steps = torch.zeros(B, dtype=torch.long)
    grads = fwds = 0
    ids = list(ids) if ids is not None else [str(j) for j in range(B)]

    def image_stage(rows: list[int], cur_texts: list[str], guide: list[str] | None = None) -> None:
        nonlocal grads, fwds
        if not rows:
            return
        idx = torch.tensor(rows, device=x0.device)
        obj = ClosedImage(model, [cur_texts[j] for j in rows], answers, labels[idx])
        if guide is not None:  # sga: the set of texts, the image at every scale
            from .sga import SetGuided

            obj = SetGuided([obj, ClosedImage(model, [guide[j] for j in rows], answers, labels[idx])])
        r = run_image_attack(
            img, obj, x0[idx], eps, seeds=[seeds[j] for j in rows], batch_seed=batch_seed, early_stop=early_stop
        )
        adv[idx] = r.adv.detach()
        steps[idx.cpu()] = r.steps.cpu()
        grads += r.grad_evals
        fwds += r.fwd_evals

    def text_stage(rows: list[int], images: torch.Tensor, clean: bool) -> None:
        cache = text_cache if text_cache is not None else {}
        todo = [j for j in rows if ids[j] not in cache]
        if todo:
            res = runner.run_many(
                images[todo],
                [texts[j] for j in todo],
                [int(labels[j]) for j in todo],
                fraction=frac,
                seeds=[text_seeds[j] for j in todo],
                known=[known[j] for j in todo] if clean and known is not None else None,
                features=features[todo] if clean and features is not None else None,
            )
            cache.update({ids[j]: r for j, r in zip(todo, res)})
        for j in rows:
            text_res[j] = cache[ids[j]]
            out_texts[j] = cache[ids[j]].adv_text

    if spec.method == "sga":
        text_stage(list(range(B)), x0, clean=True)
        image_stage(list(range(B)), list(texts), guide=list(out_texts))
        first = list(text_res)
        text_res, out_texts, logits = _text_again(runner, adv, texts, labels, frac, text_seeds)
        # the records' queries: both text stages' (the final text is the second stage's)
        text_res = [replace(r, queries=r.queries + (f.queries if f else 0)) for r, f in zip(text_res, first)]
        standing = []
    elif spec.method == "text-image":
        text_stage(list(range(B)), x0, clean=True)
        logits = torch.stack([r.logits for r in text_res]).to(x0.device)
        standing = [j for j in range(B) if int(logits[j].argmax()) == int(labels[j])]
        image_stage(standing, out_texts)
    else:
        image_stage(list(range(B)), out_texts)
        logits = final_logits(model, adv, out_texts, answers)
        fwds += B
        standing = [j for j in range(B) if int(logits[j].argmax()) == int(labels[j])]
        text_stage(standing, adv, clean=False)
    if standing:  # the pairs the second stage changed
        idx = torch.tensor(standing, device=logits.device)
        logits = logits.clone()
        logits[idx] = final_logits(model, adv[idx.to(adv.device)], [out_texts[j] for j in standing], answers)
        fwds += len(standing)
    linf, l2 = flat_norms(adv - x0)
    return JointResult(adv, out_texts, logits, text_res, steps, linf, l2, grads, fwds)
