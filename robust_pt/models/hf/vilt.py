"""ViLT (ViltForQuestionAnswering): the VQA classification head; the answer vocabulary is
config.id2label. Candidate logits are the head's logits of the task's candidates (a candidate
that is not in id2label gets -1e4: the model can never say it). "Generation" is the arg-max
label (open-ended VQA). It declares a label head (`robust-pt train --method finetune` grows it
with a task's missing answers: `grow_head`), peft prompt tuning as SEQ_CLS (the task type whose
forward prepends the virtual tokens in plain peft) and the attention APT attaches to, after
every ViltAttention's output, where the APT authors put it, with the VQA head training too.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ...errors import TaskError
from ..base import Embeds
from ..loading import AttentionSite, HFFamily, PeftTargets, PromptTuning, register
from .base import CLOSED, HFVLModel, _f32, norm_answer

MISSING_LOGIT = -1e4  # a candidate that is not in id2label

FAMILY = register(
    HFFamily(
        "vilt",
        "ViltForQuestionAnswering",
        f"{__name__}:ViltVQA",
        PeftTargets(lora=("query", "value"), ia3=("key", "value", "output.dense"), ia3_feedforward=("output.dense",)),
        config_size="image_size",
        size_divisor=True,
        task_kinds=(CLOSED,),
        label_head=True,
        prompt_tuning=PromptTuning("SEQ_CLS"),
        attention_site=AttentionSite("ViltAttention", "classifier"),
    )
)


class ViltVQA(HFVLModel):
    """ViltForQuestionAnswering: a classifier over config.id2label."""

    family = FAMILY

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        cfg = self.hf.config
        self.labels = [str(cfg.id2label[i]) for i in range(len(cfg.id2label))]
        self._label_index = {norm_answer(lab): i for i, lab in reversed(list(enumerate(self.labels)))}
        self._cand_cache: dict[tuple[str, ...], torch.Tensor] = {}
        self.meta.setdefault("answers", self.labels)

    @property
    def max_text_len(self) -> int:
        return int(self.hf.config.max_position_embeddings) - self.n_prompt_tokens

    def embed_image(self, images: torch.Tensor) -> torch.Tensor:
        """ViLT's visual_embed without its patch sampling: every patch of the square image,
        in order, with (interpolated) position embeddings and the [CLS] image token."""
        x = self.normalize(images)
        emb = self.hf.vilt.embeddings
        cfg = self.hf.config
        with self._amp():
            p = emb.patch_embeddings(x)  # (B, d, h, w)
            B, d, h, w = p.shape
            grid = cfg.image_size // cfg.patch_size
            spatial = emb.position_embeddings[:, 1:, :].transpose(1, 2).reshape(1, d, grid, grid)
            spatial = F.interpolate(spatial, size=(h, w), mode="bilinear", align_corners=True)
            tokens = p.flatten(2).transpose(1, 2) + spatial.flatten(2).transpose(1, 2).to(p.dtype)
            cls = (emb.cls_token + emb.position_embeddings[:, :1, :]).expand(B, -1, -1).to(p.dtype)
            return _f32(emb.dropout(torch.cat([cls, tokens], 1)))

    def embed_text(self, texts):
        ids, mask = self._tokenize(texts, self.max_text_len)
        return _f32(self.hf.vilt.embeddings.text_embeddings.word_embeddings(ids)), mask

    def label_logits_from_embeds(self, e: Embeds) -> torch.Tensor:
        """(B, num_labels) logits of the VQA head."""
        text, mask = self._with_prompts(e.text, e.text_mask)
        B, Ni = e.image.shape[:2]
        pixel_mask = torch.ones(B, Ni, dtype=torch.long, device=e.image.device)
        with self._amp():
            out = self.hf.vilt(
                inputs_embeds=text, attention_mask=mask.long(), image_embeds=e.image, pixel_mask=pixel_mask
            )
            return _f32(self.hf.classifier(out.pooler_output))

    def candidate_index(self, candidates: Sequence[str]) -> torch.Tensor:
        key = tuple(candidates)
        if key not in self._cand_cache:
            idx = [self._label_index.get(norm_answer(c), -1) for c in candidates]
            if candidates and all(i < 0 for i in idx):
                shown = ", ".join(list(candidates)[:5])
                raise TaskError(
                    f"none of the task's answers ({shown}, ...) is in the model's id2label "
                    f"({', '.join(self.labels[:5])}, ...); attack it on a task it was trained for, or "
                    f"tune it first (robust-pt train --method finetune gives it the task's answers)"
                )
            self._cand_cache[key] = torch.tensor(idx, dtype=torch.long)
        return self._cand_cache[key].to(self.device)

    def candidate_logits_from_embeds(self, embeds: Embeds, candidates: Sequence[str]) -> torch.Tensor:
        logits = self.label_logits_from_embeds(embeds)
        idx = self.candidate_index(candidates)
        sel = logits[:, idx.clamp(min=0)]
        return torch.where(idx[None] >= 0, sel, torch.full_like(sel, MISSING_LOGIT))

    def sequence_loss_from_embeds(self, embeds: Embeds, targets: Sequence[str]) -> torch.Tensor:
        """Cross-entropy of each target answer over the whole id2label head."""
        idx = [self._label_index.get(norm_answer(t), -1) for t in targets]
        if any(i < 0 for i in idx):
            bad = targets[idx.index(-1)]
            raise TaskError(
                f"answer {bad!r} is not in the model's id2label; {self.architecture} can only answer with its labels"
            )
        logits = self.label_logits_from_embeds(embeds)
        return F.cross_entropy(logits, torch.tensor(idx, device=logits.device), reduction="none")

    @torch.no_grad()
    def generate_from_embeds(self, embeds: Embeds, max_len: int = 24, beam: int = 1) -> list[str]:
        """Open-ended VQA: the arg-max label of the head."""
        return [self.labels[i] for i in self.label_logits_from_embeds(embeds).argmax(-1).tolist()]

    # ---------------------------------------------------------------- the label head (FAMILY.label_head)
    @staticmethod
    def head_labels(net) -> list[str]:
        """The answers the transformers model's head has (config.id2label, in order)."""
        cfg = net.config
        return [str(cfg.id2label[i]) for i in range(len(cfg.id2label))]

    @staticmethod
    def grow_head(net, answers: Sequence[str]) -> list[str]:
        """Append the answers missing from the head (new rows, the known rows kept); returns them."""
        from torch import nn

        cfg = net.config
        labels = ViltVQA.head_labels(net)
        have = {norm_answer(x) for x in labels}
        missing = [a for a in dict.fromkeys(answers) if norm_answer(a) not in have]
        if not missing:
            return []
        old = net.classifier[-1]
        new = nn.Linear(old.in_features, old.out_features + len(missing))
        with torch.no_grad():
            new.weight.normal_(0.0, cfg.initializer_range)
            new.bias.zero_()
            new.weight[: old.out_features] = old.weight
            new.bias[: old.out_features] = old.bias
        net.classifier[-1] = new
        labels += missing
        cfg.id2label = dict(enumerate(labels))
        cfg.label2id = {a: i for i, a in enumerate(labels)}
        cfg.num_labels = len(labels)
        return missing
