"""Victims: what is attacked and who judges, chosen by the task kind's declaration, so the engine never asks which.

A victim owns the model's clean prediction, the prediction of perturbed inputs, the
per-example score and verdict, and the objectives attacks ascend:

* ClassifierVictim: any torch image classifier (N, C, H, W) in [0, 1] -> logits.
* ClosedVictim: a VL model on a closed-answer task (logits over candidate answers).
* GenerativeVictim: a VL model that generates (grounding boxes, captions); captioning's
  corpus-level CIDEr-D is its graded verdict (document frequencies from all the run's
  references), so "broken" means a lower score than the clean one, not a wrong answer.

`binary` verdicts (0/1 correctness) drive the survivors-only sweep; graded ones the
worst-so-far sweep (chosen in robust_pt/engine/sweep.py). Which victim judges
a task, whether its verdict is binary, whether an attack may stop early and how rows are
scored are the task kind's declarations (robust_pt/tasks/kinds.py): no kind is named here.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ..errors import TaskError
from ..models.predict import predict, predict_embeds
from ..tasks import kinds
from ..tasks.base import Example, Task
from . import objectives as ob


class Victim:
    """The common part: the model, the task, the device, and the verdict rules (the task kind's)."""

    has_logits = True  # logits over candidate answers or classes

    def __init__(self, model, task: Task, device: Any, stats: dict):
        self.model, self.task, self.device, self.stats = model, task, device, stats
        self.kind = kinds.kind_of(task)
        self.binary = self.kind.binary  # verdicts are right/wrong (else graded scores such as CIDEr)
        self._scorer = self.kind.scorer(task)

    @property
    def refs_all(self) -> list | None:
        """Every reference of the run where the kind's scores use them (captions' CIDEr-D idf), else None."""
        return self._scorer.refs

    # -- verdicts
    def scores(self, examples: Sequence[Example], index: Sequence[int], preds: list) -> np.ndarray:
        return np.asarray(self._scorer(examples, index, preds), dtype=float)

    def clean_correct(self, scores: np.ndarray) -> list:
        return [bool(s >= 0.5) for s in scores] if self.binary else [None] * len(scores)

    def broken(self, score: float, clean_score: float) -> bool:
        return score < 0.5 if self.binary else score < clean_score

    def answer(self, p) -> str:
        return str(p)

    def labels(self, examples: Sequence[Example]) -> torch.Tensor | None:
        return None

    @property
    def early_stop_allowed(self) -> bool:
        """Early stopping needs a binary verdict the attack can see (a wrong candidate)."""
        return False

    # -- predictions
    def clean_predictions(self, x0: torch.Tensor, texts: Sequence[str]) -> list:
        raise NotImplementedError

    def predict_images(self, adv: torch.Tensor, texts: Sequence[str], logits: torch.Tensor | None) -> list:
        raise NotImplementedError

    def predict_embeds(self, adv, logits: torch.Tensor | None) -> list:
        raise NotImplementedError

    def judge_images(self, adv: torch.Tensor, examples: Sequence[Example]) -> list:
        """Predictions on perturbed images, computed here (for threat models without logits of their own)."""
        texts = [ex.text for ex in examples]
        with torch.no_grad():
            logits = self.image_objective(examples).logits([adv], torch.arange(len(adv), device=adv.device))
        if logits is not None:
            self.stats["fwd_evals"] += len(adv)
        return self.predict_images(adv, texts, logits)

    # -- objectives
    def image_objective(self, examples: Sequence[Example]):
        raise NotImplementedError

    def embeds_objective(self, examples: Sequence[Example], e0):
        raise NotImplementedError


class ClassifierVictim(Victim):
    def answer(self, p) -> str:
        return self.task.answers[int(p)]

    def labels(self, examples):
        return torch.tensor([ex.label for ex in examples], device=self.device)

    @property
    def early_stop_allowed(self) -> bool:
        return self.kind.early_stop

    def clean_predictions(self, x0, texts):
        self.stats["fwd_evals"] += len(x0)
        return self.model(x0).argmax(-1).tolist()

    def predict_images(self, adv, texts, logits):
        return logits.argmax(-1).tolist()

    def image_objective(self, examples):
        return ob.ClassifierImage(self.model, self.labels(examples))


class ClosedVictim(ClassifierVictim):
    def clean_predictions(self, x0, texts):
        self.stats["fwd_evals"] += len(x0)
        return self.model.candidate_logits(x0, list(texts), self.task.answers).argmax(-1).tolist()

    def predict_embeds(self, adv, logits):
        return logits.argmax(-1).tolist()

    def image_objective(self, examples):
        return ob.ClosedImage(self.model, [ex.text for ex in examples], self.task.answers, self.labels(examples))

    def embeds_objective(self, examples, e0):
        return ob.ClosedEmbeds(self.model, e0.text_mask, self.task.answers, self.labels(examples))


class GenerativeVictim(Victim):
    has_logits = False

    def clean_predictions(self, x0, texts):
        self.stats["gen_evals"] += len(x0)
        return predict(self.model, self.task, x0, list(texts))

    def predict_images(self, adv, texts, logits):
        self.stats["gen_evals"] += len(adv)
        return predict(self.model, self.task, adv, list(texts))

    def predict_embeds(self, adv, logits):
        self.stats["gen_evals"] += len(adv.image)
        return predict_embeds(self.model, self.task, adv)

    def image_objective(self, examples):
        return ob.GenerativeImage(self.model, [ex.text for ex in examples], [ex.target for ex in examples])

    def embeds_objective(self, examples, e0):
        return ob.GenerativeEmbeds(self.model, e0.text_mask, [ex.target for ex in examples])


#: the victim each declared `TaskKind.victim` names, on a vision-language model
VICTIMS: dict[str, type[Victim]] = {"closed": ClosedVictim, "generative": GenerativeVictim}


def victim_class(model, task: Task) -> type[Victim]:
    """The victim for this model and task: a classifier, else the one the task's kind declares."""
    from ..models.base import VLModel

    if not isinstance(model, VLModel):
        return ClassifierVictim
    declared = kinds.kind_of(task).victim
    if declared is None:
        raise TaskError(f"task {task.name} of kind {task.kind} cannot be attacked; use one of its downstream tasks")
    return VICTIMS[declared]


def verdict_traits(task: Task) -> tuple[bool, bool]:
    """(binary verdicts, early stopping allowed) of any victim on this task, for summaries of its records."""
    k = kinds.kind_of(task)
    return k.binary, k.early_stop


def corpus_summary(task: Task, d) -> dict:
    """Corpus metrics of one eps's records beyond the mean score, as the task's kind declares them (captions:
    BLEU-4), of the clean and of the robust predictions."""
    corpus = kinds.kind_of(task).corpus
    if corpus is None or not len(d):
        return {}
    d = d.sort_values("index")
    examples = [task[int(i)] for i in d["index"]]
    clean, robust = corpus(task, examples, list(d["clean_pred"])), corpus(task, examples, list(d["pred"]))
    return {**{f"{k}_clean": v for k, v in clean.items()}, **{f"{k}_robust": v for k, v in robust.items()}}


def make_victim(model, task: Task, device: Any, stats: dict) -> Victim:
    return victim_class(model, task)(model, task, device, stats)
