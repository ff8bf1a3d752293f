"""CLIP (CLIPModel): image-text matching as classification over candidate texts. Candidate k
of an example with question text q is the text "q c_k" (q alone may be a prompt such as
"a photo of a"); its logit is CLIP's scaled cosine similarity to the image. Images are
centre-cropped as its processor does (resize mode crop). No peft task type prepends prompt
tokens in CLIP's forward, so it declares no prompt tuning.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...errors import TaskError
from ..loading import HFFamily, PeftTargets, register
from .base import CLOSED, HFVLModel, _f32

FAMILY = register(
    HFFamily(
        "clip",
        "CLIPModel",
        f"{__name__}:ClipMatch",
        PeftTargets(lora=("q_proj", "v_proj"), ia3=("k_proj", "v_proj", "fc2"), ia3_feedforward=("fc2",)),
        crop=True,
        task_kinds=(CLOSED,),
    )
)


class ClipMatch(HFVLModel):
    """CLIPModel: logits over candidate texts "<question> <candidate>" by scaled cosine similarity."""

    family = FAMILY
    max_candidate_tokens = 16

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        tc = self.hf.config.text_config
        tok = self.tokenizer
        self.bos_id = tok.bos_token_id if tok.bos_token_id is not None else tc.bos_token_id
        self.eos_id = tok.eos_token_id if tok.eos_token_id is not None else tc.eos_token_id
        self.max_pos = int(tc.max_position_embeddings)
        self._cand_cache: dict[tuple[str, ...], tuple[torch.Tensor, torch.Tensor]] = {}

    def embed_image(self, images):
        x = self.normalize(images)
        with self._amp():
            return _f32(self.hf.vision_model.embeddings(x))

    def embed_text(self, texts):
        """[bos] + question tokens (no eos: the candidate and eos follow in candidate_logits)."""
        limit = self.max_pos - self.max_candidate_tokens - 1 - self.n_prompt_tokens
        rows = [[self.bos_id] + self.tokenizer(t, add_special_tokens=False)["input_ids"][: limit - 1] for t in texts]
        T = max(len(r) for r in rows)
        ids = torch.full((len(rows), T), self.eos_id, dtype=torch.long)
        mask = torch.zeros(len(rows), T, dtype=torch.bool)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = True
        ids, mask = ids.to(self.device), mask.to(self.device)
        return _f32(self.hf.text_model.embeddings.token_embedding(ids)), mask

    def image_features(self, image_tokens: torch.Tensor) -> torch.Tensor:
        vm = self.hf.vision_model
        with self._amp():
            h = vm.encoder(inputs_embeds=vm.pre_layrnorm(image_tokens)).last_hidden_state
            f = self.hf.visual_projection(vm.post_layernorm(h[:, 0, :]))
        return F.normalize(_f32(f), dim=-1)

    def _candidates(self, candidates):
        key = tuple(candidates)
        if key not in self._cand_cache:
            rows = [
                self.tokenizer(c, add_special_tokens=False)["input_ids"][: self.max_candidate_tokens] + [self.eos_id]
                for c in candidates
            ]
            M = max(len(r) for r in rows)
            ids = torch.full((len(rows), M), self.eos_id, dtype=torch.long)
            lens = torch.tensor([len(r) for r in rows])
            for i, r in enumerate(rows):
                ids[i, : len(r)] = torch.tensor(r)
            self._cand_cache[key] = (ids, lens)
        ids, lens = self._cand_cache[key]
        return ids.to(self.device), lens.to(self.device)

    def text_features(self, text: torch.Tensor, mask: torch.Tensor, candidates) -> torch.Tensor:
        """(B, K, d) normalised features of the texts "<question tokens> <candidate tokens> <eos>"."""
        from transformers.modeling_attn_mask_utils import _create_4d_causal_attention_mask, _prepare_4d_attention_mask

        text, mask = self._with_prompts(text, mask)
        B, Nt, d = text.shape
        cids, clens = self._candidates(candidates)
        K, M = cids.shape
        cemb = _f32(self.hf.text_model.embeddings.token_embedding(cids))  # (K, M, d)
        L = mask.long().sum(1)  # question lengths (B,); real tokens are left-aligned
        T = Nt + M
        t = torch.arange(T, device=text.device)
        rel = t[None, None, :] - L[:, None, None]  # (B, 1, T): position inside the candidate part
        in_q = (t[None, :] < L[:, None])[:, None, :, None]  # (B, 1, T, 1)
        in_c = (rel >= 0) & (rel < clens[None, :, None])  # (B, K, T)
        qpart = F.pad(text, (0, 0, 0, T - Nt))[:, None]  # (B, 1, T, d)
        relk = rel.clamp(0, M - 1).expand(B, K, T)
        cpart = cemb[torch.arange(K, device=text.device)[None, :, None], relk]  # (B, K, T, d)
        seq = torch.where(in_q, qpart, torch.where(in_c[..., None], cpart, torch.zeros_like(cpart)))
        seq = seq.reshape(B * K, T, d)
        attn = (t[None, None, :] < (L[:, None] + clens[None, :])[..., None]).reshape(B * K, T)
        eos_pos = (L[:, None] + clens[None, :] - 1).reshape(-1)
        if T > self.max_pos:  # the longest question + candidate would not fit: drop trailing padding
            if int(eos_pos.max()) >= self.max_pos:
                raise TaskError(f"question + candidate longer than CLIP's {self.max_pos} text positions")
            seq, attn = seq[:, : self.max_pos], attn[:, : self.max_pos]
        tm = self.hf.text_model
        with self._amp():
            h = tm.embeddings(inputs_embeds=seq)
            causal = _create_4d_causal_attention_mask(attn.shape, h.dtype, device=h.device)
            am = _prepare_4d_attention_mask(attn.long(), h.dtype)
            h = tm.encoder(inputs_embeds=h, attention_mask=am, causal_attention_mask=causal).last_hidden_state
            h = tm.final_layer_norm(h)
            pooled = h[torch.arange(h.shape[0], device=h.device), eos_pos]
            f = self.hf.text_projection(pooled)
        return F.normalize(_f32(f), dim=-1).view(B, K, -1)

    def candidate_logits_from_embeds(self, embeds, candidates):
        img = self.image_features(embeds.image)  # (B, d)
        txt = self.text_features(embeds.text, embeds.text_mask, candidates)  # (B, K, d)
        scale = self.hf.logit_scale.exp().float()
        return scale * torch.einsum("bd,bkd->bk", img, txt)
