"""CLIP (CLIPModel): image-text matching as classification over candidate texts.

Closed-answer tasks: candidate k of an example with question text q is the text "q c_k"; zero-shot
classification (tasks/classify.py): the class name goes into the template's "{}" ("a photo of a
{}." -> "a photo of a dog."), composed on embeddings as the built-in CLIP does
(models/templates.py), so the hole survives embedding attacks. The logit is CLIP's scaled cosine
similarity to the image, read at the text's <eos>. Images are centre-cropped as its processor does
(resize mode crop). No peft task type prepends prompt tokens in CLIP's forward, so it declares no
peft prompt tuning; the CLIP prompt learners attach a `prompter` to the transformers model instead,
read as the built-in CLIP reads its own (models/miniclip.py's docstring): CoOp's context replaces
the template, VPT's tokens follow CLS in the vision layers, MaPLe does both and adds deep text prompts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...errors import TaskError
from ...tasks.classify import CLASSIFY
from ..loading import AttentionSite, HFFamily, PeftTargets, register
from ..templates import fill, split_template
from .base import CLOSED, HFVLModel, _f32

FAMILY = register(
    HFFamily(
        "clip",
        "CLIPModel",
        f"{__name__}:ClipMatch",
        PeftTargets(lora=("q_proj", "v_proj"), ia3=("k_proj", "v_proj", "fc2"), ia3_feedforward=("fc2",)),
        crop=True,
        task_kinds=(CLOSED, CLASSIFY),
        class_prompts="text_model.embeddings.token_embedding",
        attention_site=AttentionSite("CLIPAttention", towers=(("image", "vision_model"), ("text", "text_model"))),
    )
)


def _layer(layer, h, *masks):
    """One transformer layer of a Hugging Face encoder (some return a tuple, some the hidden states)."""
    out = layer(h, *masks)
    return out[0] if isinstance(out, tuple) else out


def _prompted(layers, h, prompts, offset: int, *masks, replace: bool = False):
    """Run `layers` over h, writing each layer's prompt tokens (B, P, d) at `offset` (after CLS / the lead
    tokens): the first ones are inserted and a later layer's replace them (VPT-deep, MaPLe's visual prompts);
    `replace`: they stand in for tokens already there (MaPLe's deep text prompts over its context)."""
    n = 0
    for layer, p in zip(layers, prompts):
        if p is not None:
            k = p.shape[1] if replace else n
            h, n = torch.cat([h[:, :offset], p.to(h.dtype), h[:, offset + k :]], 1), p.shape[1]
        h = _layer(layer, h, *masks)
    return h


class ClipMatch(HFVLModel):
    """CLIPModel: logits over candidate texts by scaled cosine similarity (see the module docstring)."""

    family = FAMILY
    max_candidate_tokens = 16
    fills_class_prompts = True  # zero-shot classification (tasks/classify.py)
    cls_tokens = 1  # tokens before the patches (VPT's prompts go after them)

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        tc = self.hf.config.text_config
        tok = self.tokenizer
        self.bos_id = tok.bos_token_id if tok.bos_token_id is not None else tc.bos_token_id
        self.eos_id = tok.eos_token_id if tok.eos_token_id is not None else tc.eos_token_id
        self.max_pos = int(tc.max_position_embeddings)
        self._cand_cache: dict[tuple[str, ...], tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def reads_text(self) -> bool:
        """Whether it reads the words it is given (a learned context replaces them: CoOp, MaPLe; a linear
        probe reads none)."""
        prompter = getattr(self.hf, "prompter", None)
        return not (hasattr(prompter, "context") or hasattr(prompter, "head"))

    def class_refusal(self, names) -> str | None:
        """Why it cannot score these class names (a linear probe's own classes only), or None."""
        refusal = getattr(getattr(self.hf, "prompter", None), "refusal", None)
        return None if refusal is None else refusal(names)

    @property
    def lead_ids(self) -> list[int]:
        """Tokens every text starts with (CLIP's <bos>)."""
        return [self.bos_id]

    def embed_image(self, images):
        x = self.normalize(images)
        with self._amp():
            return _f32(self.hf.vision_model.embeddings(x))

    def embed_text(self, texts):
        """The lead tokens + the text's tokens, with a hole (mask False) where a template's "{}" was; no eos:
        the candidate and eos are written in by candidate_logits. A learned context (CoOp, MaPLe) replaces it."""
        context = getattr(getattr(self.hf, "prompter", None), "context", None)
        table = self.hf.text_model.embeddings.token_embedding
        if context is not None:
            text, mask = context(len(texts))
            lead = table.weight[self.lead_ids].expand(len(texts), -1, -1)
            ones = torch.ones(len(texts), lead.shape[1], dtype=torch.bool, device=mask.device)
            return torch.cat([lead, text], 1), torch.cat([ones, mask], 1)
        limit = self.max_pos - self.max_candidate_tokens - 1 - self.n_prompt_tokens
        rows = []
        for t in texts:
            before, after, slotted = split_template(t)
            head = self.tokenizer(before.strip(), add_special_tokens=False)["input_ids"] if before.strip() else []
            tail = self.tokenizer(after.strip(), add_special_tokens=False)["input_ids"] if after.strip() else []
            rows.append((self.lead_ids + head + ([None] + tail if slotted else []))[: limit - 1])
        T = max(max(len(r) for r in rows), 1)
        ids = torch.full((len(rows), T), self.eos_id, dtype=torch.long)
        mask = torch.zeros(len(rows), T, dtype=torch.bool)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor([self.eos_id if x is None else x for x in r], dtype=torch.long)
            mask[i, : len(r)] = torch.tensor([x is not None for x in r], dtype=torch.bool)
        ids, mask = ids.to(self.device), mask.to(self.device)
        return _f32(table(ids)), mask

    def image_features(self, image_tokens: torch.Tensor) -> torch.Tensor:
        vm = self.hf.vision_model
        visual = getattr(getattr(self.hf, "prompter", None), "visual", None)  # VPT's, MaPLe's: after CLS, per layer
        with self._amp():
            h = self._vision_in(image_tokens)
            if visual is None:
                h = vm.encoder(inputs_embeds=h).last_hidden_state
            else:
                h = _prompted(vm.encoder.layers, h, visual(h.shape[0]), self.cls_tokens, *self._vision_masks())
            f = self._image_pool(h)
        return F.normalize(_f32(f), dim=-1)

    def _vision_in(self, tokens):
        return self.hf.vision_model.pre_layrnorm(tokens)

    def _vision_masks(self) -> tuple:
        return (None, None)  # CLIPEncoderLayer(hidden_states, attention_mask, causal_attention_mask)

    def _image_pool(self, h):
        return self.hf.visual_projection(self.hf.vision_model.post_layernorm(h[:, 0, :]))

    def _candidates(self, candidates):
        """Token ids (K, M) of the candidates (padded) and their lengths (K,), cached."""
        key = tuple(candidates)
        if key not in self._cand_cache:
            rows = [
                self.tokenizer(c, add_special_tokens=False)["input_ids"][: self.max_candidate_tokens] or [self.eos_id]
                for c in candidates
            ]
            ids = torch.full((len(rows), max(len(r) for r in rows)), self.eos_id, dtype=torch.long)
            for i, r in enumerate(rows):
                ids[i, : len(r)] = torch.tensor(r)
            self._cand_cache[key] = (ids, torch.tensor([len(r) for r in rows]))
        ids, lens = self._cand_cache[key]
        return ids.to(self.device), lens.to(self.device)

    def text_features(self, text: torch.Tensor, mask: torch.Tensor, candidates) -> torch.Tensor:
        """(B, K, d) normalised features of each text with each candidate written in (models/templates.py)."""
        text, mask = self._with_prompts(text, mask)
        B = text.shape[0]
        cids, clens = self._candidates(candidates)
        emb = self.hf.text_model.embeddings.token_embedding
        seq, attn, eos_pos = fill(text, mask, _f32(emb(cids)), clens, _f32(emb.weight[self.eos_id]))
        if seq.shape[1] > self.max_pos:  # the longest text + candidate would not fit: drop trailing padding
            if int(eos_pos.max()) >= self.max_pos:
                raise TaskError(f"question + candidate longer than {self.architecture}'s {self.max_pos} text positions")
            seq, attn = seq[:, : self.max_pos], attn[:, : self.max_pos]
        with self._amp():
            f = self._encode_text(seq, attn, eos_pos)
        return F.normalize(_f32(f), dim=-1).view(B, len(candidates), -1)

    def _encode_text(self, seq, attn, eos_pos):
        """Features of composed sequences: causal attention over the real tokens, read at <eos>, projected."""
        from transformers.modeling_attn_mask_utils import _create_4d_causal_attention_mask, _prepare_4d_attention_mask

        tm = self.hf.text_model
        h = tm.embeddings(inputs_embeds=seq)
        masks = (_prepare_4d_attention_mask(attn.long(), h.dtype),
                 _create_4d_causal_attention_mask(attn.shape, h.dtype, device=h.device))  # fmt: skip
        h = self._text_layers(h, masks)
        h = tm.final_layer_norm(h)
        return self.hf.text_projection(h[torch.arange(h.shape[0], device=h.device), eos_pos])

    def _text_layers(self, h, masks: tuple):
        tm = self.hf.text_model
        deep = getattr(getattr(self.hf, "prompter", None), "text", None)  # MaPLe's deep prompts, after the lead
        if deep is None:
            return tm.encoder(h, *masks).last_hidden_state
        return _prompted(tm.encoder.layers, h, deep(h.shape[0]), len(self.lead_ids), *masks, replace=True)

    def candidate_logits_from_embeds(self, embeds, candidates):
        img = self.image_features(embeds.image)  # (B, d)
        head = getattr(getattr(self.hf, "prompter", None), "head", None)  # a linear probe: its classes, no text
        if head is not None:  # the text stays in the graph with no effect (embedding attacks: a zero gradient)
            return head(img, candidates) + 0.0 * embeds.text.float().sum()
        txt = self.text_features(embeds.text, embeds.text_mask, candidates)  # (B, K, d)
        scale = self.hf.logit_scale.exp().float()
        bias = getattr(self.hf, "logit_bias", None)  # SigLIP's
        logits = scale * torch.einsum("bd,bkd->bk", img, txt)
        return logits if bias is None else logits + bias.float()
