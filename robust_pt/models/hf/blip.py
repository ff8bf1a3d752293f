"""BLIP (BlipForQuestionAnswering): generative. Closed-answer tasks are scored by the
log-likelihood of every candidate answer under the answer decoder (the OFA-style all-candidate
evaluation, and BLIP's own answer ranking); grounding and captioning generate text. No peft
task type prepends prompt tokens in BLIP's forward, so it declares no prompt tuning.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ..base import Embeds
from ..loading import HFFamily, PeftTargets, register
from .base import CAPTION, CLOSED, GROUND, HFVLModel, _f32

FAMILY = register(
    HFFamily(
        "blip",
        "BlipForQuestionAnswering",
        f"{__name__}:BlipVQA",
        PeftTargets(
            lora=("query", "value", "qkv"),
            ia3=("key", "value", "output.dense", "qkv", "fc2"),
            ia3_feedforward=("output.dense", "fc2"),
        ),
        task_kinds=(CLOSED, GROUND, CAPTION),
    )
)


class BlipVQA(HFVLModel):
    """BlipForQuestionAnswering: vision encoder -> question encoder (cross-attends to the
    image) -> answer decoder. Answers are decoded from [DEC] (bos_token_id) to [SEP]."""

    family = FAMILY
    trains_on_answer_text = True

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        tc = self.hf.config.text_config
        self.bos_id = int(tc.bos_token_id)
        self.eos_id = int(tc.sep_token_id)
        self.pad_id = int(tc.pad_token_id)
        self.max_target_len = 32
        self._ans_cache: dict[tuple[str, ...], tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def max_text_len(self) -> int:
        return int(self.hf.config.text_config.max_position_embeddings) - self.n_prompt_tokens

    def embed_image(self, images):
        x = self.normalize(images)
        with self._amp():
            return _f32(self.hf.vision_model.embeddings(x))

    def embed_text(self, texts):
        ids, mask = self._tokenize(texts, self.max_text_len)
        return _f32(self.hf.text_encoder.embeddings.word_embeddings(ids)), mask

    def _question(self, e: Embeds) -> tuple[torch.Tensor, torch.Tensor]:
        """Question states (B, T, d) (cross-attending to the image) and their mask."""
        vm = self.hf.vision_model
        with self._amp():
            vis = vm.post_layernorm(vm.encoder(inputs_embeds=e.image).last_hidden_state)
            text, mask = self._with_prompts(e.text, e.text_mask)
            ones = torch.ones(vis.shape[:2], dtype=torch.long, device=vis.device)
            # clone: BlipTextEmbeddings adds the position embeddings in place
            q = self.hf.text_encoder(
                inputs_embeds=text.clone(),
                attention_mask=mask.long(),
                encoder_hidden_states=vis,
                encoder_attention_mask=ones,
                return_dict=True,
            ).last_hidden_state
        return q, mask

    def _answers(self, answers: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, T) decoder ids [bos] answer [eos] (pad after) and their mask."""
        key = tuple(answers)
        if key not in self._ans_cache:
            rows = [
                [self.bos_id]
                + self.tokenizer(a, add_special_tokens=False)["input_ids"][: self.max_target_len]
                + [self.eos_id]
                for a in answers
            ]
            T = max(len(r) for r in rows)
            ids = torch.full((len(rows), T), self.pad_id, dtype=torch.long)
            mask = torch.zeros(len(rows), T, dtype=torch.bool)
            for i, r in enumerate(rows):
                ids[i, : len(r)] = torch.tensor(r)
                mask[i, : len(r)] = True
            self._ans_cache[key] = (ids, mask)
        ids, mask = self._ans_cache[key]
        return ids.to(self.device), mask.to(self.device)

    def _answer_logp(self, q, qmask, ids, mask) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed log-probability (N,) of each answer row and its token count (N,)."""
        with self._amp():
            logits = self.hf.text_decoder(
                input_ids=ids,
                attention_mask=mask.long(),
                encoder_hidden_states=q,
                encoder_attention_mask=qmask.long(),
                return_dict=True,
            ).logits
        logp = torch.log_softmax(_f32(logits[:, :-1]), -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        valid = mask[:, 1:].to(logp.dtype)
        return (logp * valid).sum(1), valid.sum(1)

    def candidate_logits_from_embeds(self, embeds, candidates):
        q, qmask = self._question(embeds)
        B, K = q.shape[0], len(candidates)
        ids, mask = self._answers(candidates)
        lp, _ = self._answer_logp(
            q.repeat_interleave(K, 0), qmask.repeat_interleave(K, 0), ids.repeat(B, 1), mask.repeat(B, 1)
        )
        return lp.view(B, K)

    def sequence_loss_from_embeds(self, embeds, targets):
        q, qmask = self._question(embeds)
        rows = [self._answers([t]) for t in targets]
        T = max(r[0].shape[1] for r in rows)
        ids = torch.cat([F.pad(r[0], (0, T - r[0].shape[1]), value=self.pad_id) for r in rows])
        mask = torch.cat([F.pad(r[1], (0, T - r[1].shape[1]), value=False) for r in rows])
        lp, n = self._answer_logp(q, qmask, ids, mask)
        return -lp / n

    @torch.no_grad()
    def generate_from_embeds(self, embeds, max_len: int = 24, beam: int = 1) -> list[str]:
        q, qmask = self._question(embeds)
        B = q.shape[0]
        if beam > 1:
            bos = torch.full((B, 1), self.bos_id, dtype=torch.long, device=q.device)
            with self._amp():
                out = self.hf.text_decoder.generate(
                    input_ids=bos,
                    eos_token_id=self.eos_id,
                    pad_token_id=self.pad_id,
                    encoder_hidden_states=q,
                    encoder_attention_mask=qmask.long(),
                    max_new_tokens=max_len,
                    num_beams=beam,
                    do_sample=False,
                )
            return [self.tokenizer.decode(r[1:], skip_special_tokens=True).strip() for r in out.tolist()]
        y = torch.full((B, 1), self.bos_id, dtype=torch.long, device=q.device)
        done = torch.zeros(B, dtype=torch.bool, device=q.device)
        for _ in range(max_len):
            with self._amp():
                logits = self.hf.text_decoder(
                    input_ids=y, encoder_hidden_states=q, encoder_attention_mask=qmask.long(), return_dict=True
                ).logits[:, -1]
            nxt = torch.where(done, torch.full_like(done, self.eos_id, dtype=torch.long), logits.argmax(-1))
            y = torch.cat([y, nxt[:, None]], 1)
            done |= nxt == self.eos_id
            if bool(done.all()):
                break
        out = []
        for row in y[:, 1:].tolist():
            row = row[: row.index(self.eos_id)] if self.eos_id in row else row
            out.append(self.tokenizer.decode(row, skip_special_tokens=True).strip())
        return out
