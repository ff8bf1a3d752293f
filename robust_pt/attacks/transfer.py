"""Transfer (gray-box) attacks: adversarial inputs crafted on surrogate models, judged on the target.

Why: for parameter-efficient tuning the realistic attacker does not hold the tuned model
but does hold the public frozen backbone it was tuned from. A transfer run answers "what
do inputs crafted on the base (or on another tuned model, or on an ensemble) do to this
model?". It wraps the attack's own threat model (image, embedding or joint):

* crafting: the attack runs on the surrogate's victim (one surrogate), or on an Ensemble
  of them (the mean of their losses; the mean of their logits for library backends and
  for deciding restarts), for every example of a batch at every eps, with every step
  (early stopping at the surrogate's boundary is what makes adversarial inputs transfer
  badly, so it is off); restarts are judged by the surrogate. Nothing in crafting looks at
  the target, so the crafted inputs of one (surrogates, attack, seed, task, batch, eps)
  serve every target: a CraftedStore keeps them (safetensors + JSON metadata, one file per
  batch and eps) and a transfer matrix of S sources x T targets costs S craftings and
  S x T judgements;
* judging: the target's victim judges what was crafted: images as they are (joint: with
  the rewritten question), embedding perturbations relative to the surrogate's embedding
  scale applied at the target's own scale (so both must share the embedding space).

With the target as its own surrogate a transfer run equals the white-box run without
early stopping (tests/test_transfer.py). Text-only attacks and corruptions have nothing to
transfer (they query the target itself, or do not look at a model) and are refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import AttackError
from ..runtime.devices import module_device
from ..tasks.open_classes import other_classes
from .core import Bound, Outcome, ThreatModel

#: attack kinds that can be crafted on a surrogate; embedding and joint take a single surrogate
TRANSFERABLE = ("image", "embedding", "joint")
SINGLE_SURROGATE = ("embedding", "joint")
#: what every transfer run changes in its preset: every step is crafted (stopping at the surrogate's
#: boundary is what makes adversarial inputs transfer badly)
CRAFTING = {"early_stop": False}


@dataclass
class Surrogate:
    """A loaded surrogate: the module, its label in reports, and its identity for the fingerprint."""

    module: nn.Module
    label: str
    state_sha256: str
    info: dict

    def identity(self) -> dict:
        return {"label": self.label, "class": type(self.module).__name__, "state_sha256": self.state_sha256}


def label_of(module: nn.Module, fallback: str) -> str:
    """How reports name a surrogate: its tuning method (pretrain, finetune, prompt, ...) or `fallback`."""
    meta = getattr(module, "meta", None) or {}
    return str(meta.get("method") or fallback)


# ----------------------------------------------------------------------------- checks


def check_attack(spec, n_surrogates: int) -> None:
    """Refuse, with one line, an attack that cannot be crafted on a surrogate."""
    if spec.kind not in TRANSFERABLE:
        raise AttackError(
            f"{spec.name} is a {spec.kind} attack, which queries the target itself or ignores the model; "
            f"a surrogate crafts image, embedding or joint attacks (e.g. --attack pgd, mi-fgsm, emb-pgd)"
        )
    if spec.kind in SINGLE_SURROGATE and n_surrogates > 1:
        raise AttackError(
            f"{spec.name} ({spec.kind}) transfers from one surrogate; ensembles of {n_surrogates} work for image attacks"
        )


def check_surrogate(s: Surrogate, target: nn.Module, task, vl: bool) -> None:
    """Refuse, with one line, a surrogate whose inputs or outputs differ from the target's."""
    from ..models.base import VLModel

    m = s.module
    if isinstance(m, VLModel) != vl:
        kinds = ("a vision-language model", "an image classifier")
        raise AttackError(
            f"surrogate {s.label} is {kinds[not isinstance(m, VLModel)]} but the target is {kinds[not vl]}; "
            f"transfer needs the same kind of model"
        )
    if not vl:
        _check_classifier(s, target, task)
        return
    if m.image_size != target.image_size:
        raise AttackError(
            f"surrogate {s.label} takes {m.image_size}px images, the target {target.image_size}px; "
            f"transfer needs the same input size (use a surrogate built for {target.image_size}px)"
        )
    trained = m.trained_task
    if trained and trained != task.name and not other_classes(task.kind, trained):
        raise AttackError(
            f"surrogate {s.label} was tuned on {trained}, not {task.name}, so its answer list differs; "
            f"use a surrogate tuned on {task.name} or an untuned base"
        )
    refusal = getattr(m, "class_refusal", None)  # a zero-shot surrogate reads any class name; a linear probe not
    why = refusal(task.answers) if refusal is not None and task.answers else None
    if why is not None:
        raise AttackError(f"surrogate {s.label}: {why}")
    if task.answers and hasattr(m, "candidate_index"):  # a fixed label head (Hugging Face ViLT)
        missing = [a for a, i in zip(task.answers, m.candidate_index(task.answers).tolist()) if i < 0]
        if missing:
            raise AttackError(
                f"surrogate {s.label} cannot answer {', '.join(missing[:3])} (not in its id2label): its answer "
                f"list differs from task {task.name}'s; tune it on {task.name} first"
            )


def _check_classifier(s: Surrogate, target: nn.Module, task) -> None:
    x = torch.as_tensor(task[0].image)[None].float()
    with torch.no_grad():
        k = int(s.module(x.to(module_device(s.module))).shape[-1])
    if k != len(task.answers):
        raise AttackError(
            f"surrogate {s.label} has {k} classes, the task {len(task.answers)}; transfer needs the same classes"
        )


def check_embeddings(surrogate: nn.Module, target: nn.Module, x0: torch.Tensor, texts: Sequence[str]) -> None:
    """Embedding transfer needs one embedding space: the same token counts, widths and text masks."""
    with torch.no_grad():
        es, et = surrogate.embed(x0, list(texts)), target.embed(x0, list(texts))
    same = (
        es.image.shape == et.image.shape
        and es.text.shape == et.text.shape
        and torch.equal(es.text_mask.cpu(), et.text_mask.cpu())
    )
    if not same:
        raise AttackError(
            f"the surrogate embeds into image {tuple(es.image.shape[1:])} and text {tuple(es.text.shape[1:])}, the "
            f"target into {tuple(et.image.shape[1:])} and {tuple(et.text.shape[1:])}: embedding transfer needs a "
            f"shared embedding space (a surrogate of the same architecture and tokenizer); use an image attack"
        )


# ----------------------------------------------------------------------------- ensembles


class _MeanLogits(nn.Module):
    """The surrogates' classifiers as one: the mean of their logits (Dong et al. 2018's logit ensemble)."""

    def __init__(self, parts: Sequence[nn.Module]):
        super().__init__()
        self.parts = nn.ModuleList(parts)

    def forward(self, x):
        return torch.stack([p(x) for p in self.parts]).mean(0)


class EnsembleObjective:
    """What an attack ascends on several surrogates: the mean of their losses (logits: their mean)."""

    def __init__(self, parts: Sequence):
        self.parts = list(parts)
        self.labels = self.parts[0].labels
        if all(hasattr(p, "classifier") for p in self.parts):
            self.classifier = self._classifier

    def loss(self, xs, rows):
        outs = [p.loss(xs, rows) for p in self.parts]
        loss = torch.stack([o[0] for o in outs]).mean(0)
        logits = None if outs[0][1] is None else torch.stack([o[1] for o in outs]).mean(0)
        return loss, logits

    def logits(self, xs, rows):
        lg = [p.logits(xs, rows) for p in self.parts]
        return None if lg[0] is None else torch.stack(lg).mean(0)

    def _classifier(self, x0, rows=None):
        return _MeanLogits([p.classifier(x0, rows) for p in self.parts])


class Ensemble:
    """Several surrogates' victims as one victim: the attack ascends the mean loss; its verdict on its
    own crafted inputs (which decides restarts) comes from the mean logits the attack returns (closed
    tasks) or from the first surrogate (generative tasks, and every clean pass)."""

    def __init__(self, victims: Sequence):
        self.victims = list(victims)
        v0 = self.victims[0]
        self.model, self.task, self.device, self.stats = v0.model, v0.task, v0.device, v0.stats
        self.binary, self.has_logits = v0.binary, v0.has_logits

    def __getattr__(self, name):  # verdict rules (scores, broken, answer, labels, ...) are the first victim's
        return getattr(self.victims[0], name)

    @property
    def early_stop_allowed(self) -> bool:
        return False

    def image_objective(self, examples):
        return EnsembleObjective([v.image_objective(examples) for v in self.victims])


# ----------------------------------------------------------------------------- the store


class CraftedStore:
    """Crafted inputs, one safetensors file per (batch, eps) under `root/<key>/` (None: this run only).

    The key hashes what crafting depends on (surrogates, attack identity, seed, task); each file
    also records the example ids it holds, and a file that does not match is crafted again."""

    def __init__(self, root: Path | None, key: str):
        self.root = Path(root) / key[:20] if root is not None else None
        self.key = key
        self.memory: dict = {}

    def _path(self, b: int, start: int, n: int, eps: float) -> Path:
        return self.root / f"b{b:05d}-s{start:06d}-n{n}-e{eps:.10g}.safetensors"

    def load(self, b: int, start: int, ids: list, eps: float, digest: str = "") -> dict | None:
        mem = self.memory.get((b, start, len(ids), eps))
        if mem is not None or self.root is None:
            return mem
        path = self._path(b, start, len(ids), eps)
        if not path.exists():
            return None
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
            info = json.loads(meta.get("crafted", "{}"))
        except (SafetensorError, OSError, ValueError):
            return None  # a torn or foreign file: craft again
        if (info.get("key"), info.get("ids"), info.get("eps"), info.get("x0")) != (self.key, list(ids), eps, digest):
            return None  # another crafting's file (other examples, eps or clean images): craft again
        return {"tensors": tensors, "extra": info.get("extra"), "queries": info.get("queries")}

    def save(self, b: int, start: int, ids: list, eps: float, crafted: dict, digest: str = "") -> None:
        self.memory = {(b, start, len(ids), eps): crafted, **{k: v for k, v in self.memory.items() if k[0] == b}}
        if self.root is None:
            return
        from safetensors.torch import save_file

        self.root.mkdir(parents=True, exist_ok=True)
        path = self._path(b, start, len(ids), eps)
        info = {"key": self.key, "ids": list(ids), "eps": eps, "x0": digest}
        info.update(extra=crafted["extra"], queries=crafted["queries"])
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tensors = {k: v.detach().cpu().contiguous() for k, v in crafted["tensors"].items()}
        save_file(tensors, str(tmp), metadata={"crafted": json.dumps(info)})
        os.replace(tmp, path)  # atomic: a reader never sees half a file


def store_key(surrogates: Sequence[Surrogate], spec_identity: dict, seed: int, task_id: dict) -> str:
    """What crafted inputs depend on (not the target, not the eps grid, not the number of examples)."""
    task = {k: task_id.get(k) for k in ("name", "split", "seed", "image_size", "kind", "sha256")}
    parts = {"surrogates": [s.state_sha256 for s in surrogates], "attack": spec_identity, "seed": seed, "task": task}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


# ----------------------------------------------------------------------------- the threat model


class TransferThreat(ThreatModel):
    """An image, embedding or joint threat model whose inputs are crafted on surrogates."""

    def __init__(self, inner: ThreatModel, surrogates: Sequence[Surrogate], store: CraftedStore | None = None):
        self.inner, self.surrogates = inner, list(surrogates)
        self.store = store or CraftedStore(None, "")
        self.name = inner.name
        self.needs, self.nested = inner.needs, inner.nested
        self.record_fields, self.saves_samples = inner.record_fields, inner.saves_samples

    def bind(self, victim, spec, seed: int) -> Bound:
        from .victim import make_victim

        victims = [make_victim(s.module, victim.task, module_device(s.module), victim.stats) for s in self.surrogates]
        crafter = victims[0] if len(victims) == 1 else Ensemble(victims)
        return TransferBound(self, victim, spec, seed, crafter)


class TransferBound(Bound):
    """Judges on the target what was crafted on the surrogates for the whole batch (crafted once per eps)."""

    def __init__(self, threat: TransferThreat, victim, spec, seed: int, crafter):
        super().__init__(threat, victim, spec, seed)
        self.crafter = crafter
        self.inner = threat.inner.bind(crafter, spec, seed)
        self.embedding = spec.kind == "embedding"
        self.batch: tuple | None = None
        self.checked = False

    def start_batch(self) -> None:
        self.inner.start_batch()
        self.batch = None

    def clean(self, x0, examples, index):
        self.batch = (x0, list(examples), list(index))
        if self.embedding and not self.checked:
            check_embeddings(self.crafter.model, self.victim.model, x0[:1], [examples[0].text])
            self.checked = True
        return self.victim.clean_predictions(x0, [ex.text for ex in examples])

    def perturb(self, b, examples, index, x0, eps, restart):
        _, _, full_index = self.batch
        crafted = self._crafted(b, eps)
        where = {k: j for j, k in enumerate(full_index)}
        pos = [where[i] for i in index]
        t = crafted["tensors"]
        extra = [crafted["extra"][p] for p in pos] if crafted["extra"] else None
        if self.embedding:
            out = self._judge_embeds(examples, index, x0, t["rel_image"][pos], t["rel_text"][pos])
            out.linf, out.l2 = t["linf"][pos].double().numpy(), t["l2"][pos].double().numpy()
        else:
            judged = [
                replace(ex, text=e["adv_text"]) if e and e.get("adv_text") else ex
                for ex, e in zip(examples, extra or [None] * len(examples))
            ]
            out = self.judged(judged, index, x0, t["adv"][pos].to(x0.device, x0.dtype))
        out.steps, out.queries, out.extra = t["steps"][pos].numpy(), crafted["queries"], extra
        return out

    # -- crafting (never looks at the target)
    def _crafted(self, b: int, eps: float) -> dict:
        x0, examples, index = self.batch
        ids = [ex.id for ex in examples]
        store, stats = self.threat.store, self.victim.stats
        digest = hashlib.sha256(x0.detach().cpu().contiguous().numpy().tobytes()).hexdigest()  # the clean images
        found = store.load(b, index[0], ids, eps, digest)
        if found is not None:
            stats["crafted_reused"] = stats.get("crafted_reused", 0) + 1
            return found
        crafted = self._craft(b, x0, examples, index, eps)
        store.save(b, index[0], ids, eps, crafted, digest)
        stats["crafted"] = stats.get("crafted", 0) + 1
        return crafted

    def _craft(self, b, x0, examples, index, eps) -> dict:
        """Every example at eps, restarts for those the surrogate still gets right; kept, as the white-box
        sweep keeps: the first output that fools the surrogate (else the first one), or for graded
        verdicts the lowest-scoring one."""
        cr = self.crafter
        with torch.no_grad():
            clean_scores = cr.scores(examples, index, self.inner.clean(x0, examples, index))
        best: dict[int, dict] = {}
        todo = list(range(len(examples)))
        for restart in range(self.inner.restarts):
            with torch.enable_grad():
                rows = self._attempt(b, [examples[i] for i in todo], [index[i] for i in todo], x0[todo], eps, restart)
            still = []
            for row, i in zip(rows, todo):
                row["broken"] = cr.broken(row["score"], float(clean_scores[i]))
                spent = row["steps"] + (best[i]["steps"] if i in best else 0)  # over all restarts, as _try counts
                # the sweep's rule (sweep.Survivors / WorstSoFar.better): the first to fool it, or the lowest score
                if i not in best or (row["broken"] if cr.binary else row["score"] < best[i]["score"]):
                    best[i] = row
                best[i]["steps"] = spent
                if not best[i]["broken"]:
                    still.append(i)
            todo = still
            if not todo:
                break
        rows = [best[i] for i in range(len(examples))]
        keys = [k for k in rows[0] if isinstance(rows[0][k], torch.Tensor)]
        tensors = {k: torch.stack([r[k] for r in rows]).cpu() for k in keys}
        tensors["steps"] = torch.tensor([int(r["steps"]) for r in rows], dtype=torch.int64)
        extra = [r["extra"] for r in rows] if rows[0].get("extra") is not None else None
        return {"tensors": tensors, "extra": extra, "queries": rows[0].get("queries")}

    def _attempt(self, b, examples, index, x0, eps, restart) -> list[dict]:
        """One try on the surrogate (its own threat model's perturb): per row the crafted tensors (images, or
        the embedding perturbation relative to the surrogate's embedding scale), steps, score, text fields."""
        out = self.inner.perturb(b, examples, index, x0, eps, restart)
        crafted = self._relative(out, x0, examples) if self.embedding else {"adv": out.adv.detach()}
        return [
            {
                **{k: v[j] for k, v in crafted.items()},
                "steps": int(out.steps[j]),
                "score": float(out.scores[j]),
                "queries": out.queries,
                "extra": _plain(out.extra[j]) if out.extra is not None else None,
            }
            for j in range(len(examples))
        ]

    def _relative(self, out: Outcome, x0, examples) -> dict:
        """An embedding attack's perturbation in units of the surrogate's embedding scale (and its sizes)."""
        from .embedding import scales

        with torch.no_grad():
            e0 = self.crafter.model.embed(x0, [ex.text for ex in examples])
        si, st = scales(e0, self.spec.eps_unit)
        return {
            "rel_image": (out.adv.image - e0.image).detach() / si.view(-1, 1, 1),
            "rel_text": (out.adv.text - e0.text).detach() / st.view(-1, 1, 1),
            "linf": torch.from_numpy(out.linf),
            "l2": torch.from_numpy(out.l2),
        }

    def _judge_embeds(self, examples, index, x0, rel_image, rel_text) -> Outcome:
        from ..models.base import Embeds
        from .embedding import scales

        v = self.victim
        with torch.no_grad():
            e0 = v.model.embed(x0, [ex.text for ex in examples])
            si, st = scales(e0, self.spec.eps_unit)
            mask = e0.text_mask.to(e0.text.dtype).unsqueeze(-1)
            dev = e0.image.device
            adv = Embeds(
                e0.image + rel_image.to(dev) * si.view(-1, 1, 1),
                e0.text + rel_text.to(dev) * st.view(-1, 1, 1) * mask,
                e0.text_mask,
            )
            logits = v.model.candidate_logits_from_embeds(adv, v.task.answers) if v.has_logits else None
        v.stats["fwd_evals"] += len(examples)
        preds = v.predict_embeds(adv, logits)
        n = len(examples)
        return Outcome(
            preds, v.scores(examples, index, preds), np.zeros(n), np.zeros(n), np.ones(n, dtype=np.int64), None
        )


def _plain(fields: dict) -> dict:
    """A record-field dict as JSON values (numpy scalars become Python numbers)."""
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in fields.items()}
