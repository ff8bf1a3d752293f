"""SigLIP (SiglipModel): zero-shot classification as CLIP does it (models/hf/clip.py), with SigLIP's own text and
image reading.

What differs from CLIP: no <bos> (a text is its tokens and "</s>"); no causal mask; every text is
padded to the full text length with <pad> and read at the last position, as Google's SigLIP
was trained (the processor's padding="max_length"); the image has no CLS token and is pooled
by the attention-pooling head (VPT's prompts go first); the logits are exp(t) cos + b with a
learned bias b, exactly SiglipModel's logits_per_image. Images are resized to the square input
(resize mode squash), as its processor does.
"""

from __future__ import annotations

import torch

from ...tasks.classify import CLASSIFY
from ..loading import AttentionSite, HFFamily, PeftTargets, register
from .base import CLOSED
from .clip import ClipMatch

FAMILY = register(
    HFFamily(
        "siglip",
        "SiglipModel",
        f"{__name__}:SiglipMatch",
        PeftTargets(lora=("q_proj", "v_proj"), ia3=("k_proj", "v_proj", "fc2"), ia3_feedforward=("fc2",)),
        task_kinds=(CLOSED, CLASSIFY),
        class_prompts="text_model.embeddings.token_embedding",
        attention_site=AttentionSite("SiglipAttention", towers=(("image", "vision_model"), ("text", "text_model"))),
    )
)


class SiglipMatch(ClipMatch):
    """SiglipModel: logits over candidate texts (see the module docstring)."""

    family = FAMILY
    cls_tokens = 0

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.hf.config.text_config.pad_token_id

    @property
    def lead_ids(self) -> list[int]:
        return []

    def _vision_in(self, tokens):
        return tokens

    def _vision_masks(self) -> tuple:
        return (None,)  # SiglipEncoderLayer(hidden_states, attention_mask)

    def _image_pool(self, h):
        vm = self.hf.vision_model
        return vm.head(vm.post_layernorm(h))

    def _encode_text(self, seq, attn, eos_pos):
        """Padded with <pad> to the full text length, no mask, read at the last position, through the head."""
        tm = self.hf.text_model
        N, W, d = seq.shape
        pad = tm.embeddings.token_embedding.weight[self.pad_id].to(seq.dtype)
        seq = torch.where(attn[..., None], seq, pad.expand_as(seq))
        seq = torch.cat([seq, pad.expand(N, self.max_pos - W, d)], 1)
        h = self._text_layers(tm.embeddings(inputs_embeds=seq), (None,))
        return tm.head(tm.final_layer_norm(h)[:, -1])
