"""Hugging Face vision-language models behind the VLModel interface.

    model = robust_pt.load_model("ckpts/vilt-vqa")      # a save_pretrained directory

Supported architectures (config.json "architectures"), each loaded with the processor
saved beside it (preprocessor_config.json + tokenizer files); each is a family registered
in robust_pt/models/loading.py (its class here, its image settings and peft targets there):

* ViltForQuestionAnswering: the VQA classification head; the answer vocabulary is
  config.id2label. Candidate logits are the head's logits of the task's candidates
  (a candidate that is not in id2label gets -1e4: the model can never say it).
  "Generation" is the arg-max label (open-ended VQA).
* BlipForQuestionAnswering: generative. Closed-answer tasks are scored by the
  log-likelihood of every candidate answer under the answer decoder (the OFA-style
  all-candidate evaluation, and BLIP's own answer ranking); grounding and captioning
  generate text.
* CLIPModel: image-text matching as classification over candidate texts. Candidate k
  of an example with question text q is the text "q c_k" (q alone may be a prompt such as
  "a photo of a"); its logit is CLIP's scaled cosine similarity to the image.

Same eps everywhere: models take images (B, 3, S, S) in [0, 1] at the processor's input
resolution S (tasks resize real images to S before the attack, see `resize_mode`); the
processor's rescale and normalisation (image_mean, image_std) run inside `normalize`, so
an eps is an L-inf ball in [0, 1] pixel space for every backend.

Embedding attacks: `embed` returns the continuous encoder inputs the architectures
accept, image tokens after the patch embedding (with position embeddings, as the
encoders take them) and text word embeddings (before position embeddings, the
`inputs_embeds` of the text encoders); `*_from_embeds` run the rest of the model from
there. peft adapters (robust_pt/models/hf/adapters.py) plug in unchanged: injected methods
(LoRA, IA3, ...) live inside the modules; prompt tuning's virtual tokens are prepended
to the text embeddings in `_with_prompts`.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import CheckpointError, TaskError
from ...tuning.checkpoint import refuse_nonfinite, verify_weights
from ..base import Embeds, VLModel

# architecture_of, read_json, SUPPORTED: also imported from here by hf_peft.py and robust_pt/tuning/hf_train.py
from ..loading import ImageSettings, architecture_of, hf_architectures, hf_family, read_json  # noqa: F401

CLOSED, GROUND, CAPTION = "closed", "ground", "caption"  # = robust_pt.tasks.base (kept import-light)
SIDE_FILE = "robust_pt.json"  # what robust-pt adds to a directory it saved (method, task, metrics)
MISSING_LOGIT = -1e4  # ViLT: a candidate that is not in id2label


class HFVLModel(VLModel):
    """Common part: pixel normalisation, tokenisation, prompts from peft, device and precision."""

    architecture = ""
    task_kinds: tuple[str, ...] = (CLOSED,)
    trains_on_answer_text = False  # robust-pt train: the answer's token loss (else cross-entropy over candidates)

    def __init__(self, net: nn.Module, tokenizer, image_cfg: dict, meta: dict, *, image: ImageSettings):
        """image_cfg: the saved processor config; image: the family's image settings from it
        (HFFamily.image_settings: resolution, resize mode, normalisation)."""
        super().__init__()
        self.net = net  # the transformers model, or a PeftModel wrapping it
        self.tokenizer = tokenizer
        self.meta = dict(meta)
        self.image_size = int(image.size)
        self.resize_mode = image.resize
        self.image_cfg = dict(image_cfg)
        self.register_buffer("pixel_mean", torch.tensor(list(image.mean)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(list(image.std)).view(1, 3, 1, 1), persistent=False)
        self.pixel_scale = image.scale
        self.amp_dtype: torch.dtype | None = None  # bfloat16 autocast on CUDA (set by load_model)

    # ---------------------------------------------------------------- plumbing
    @property
    def hf(self) -> nn.Module:
        """The transformers model (inside the PeftModel for adapters)."""
        get = getattr(self.net, "get_base_model", None)
        return get() if callable(get) else self.net

    @property
    def peft_config(self):
        cfg = getattr(self.net, "peft_config", None)
        return None if not cfg else cfg[self.net.active_adapter]

    def _prompts(self, batch: int) -> torch.Tensor | None:
        """(B, P, d) virtual-token embeddings of prompt tuning / P-tuning adapters, else None."""
        cfg = self.peft_config
        if cfg is None or not getattr(cfg, "is_prompt_learning", False):
            return None
        return self.net.get_prompt(batch).to(self.device)

    @property
    def n_prompt_tokens(self) -> int:
        cfg = self.peft_config
        if cfg is None or not getattr(cfg, "is_prompt_learning", False):
            return 0
        return int(cfg.num_virtual_tokens) * int(getattr(cfg, "num_transformer_submodules", 1) or 1)

    def _with_prompts(self, text: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = self._prompts(text.shape[0])
        if p is None:
            return text, mask
        ones = torch.ones(mask.shape[0], p.shape[1], dtype=mask.dtype, device=mask.device)
        return torch.cat([p.to(text.dtype), text], 1), torch.cat([ones, mask], 1)

    def _amp(self):
        if self.amp_dtype is not None and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=self.amp_dtype)
        return nullcontext()

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] pixels at the input resolution -> what the processor would have fed the model."""
        if (
            images.dim() != 4
            or images.shape[1] != 3
            or images.shape[-1] != self.image_size
            or images.shape[-2] != self.image_size
        ):
            raise TaskError(
                f"{self.architecture} expects (B, 3, {self.image_size}, {self.image_size}) images in "
                f"[0, 1], got {tuple(images.shape)}; load the task at size={self.image_size}"
            )
        return (images * self.pixel_scale - self.pixel_mean) / self.pixel_std

    def _tokenize(self, texts: Sequence[str], max_len: int, special: bool = True):
        enc = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=max_len,
            add_special_tokens=special,
            return_tensors="pt",
        )
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device).bool()

    # ---------------------------------------------------------------- VLModel
    def embed(self, images: torch.Tensor, texts: Sequence[str]) -> Embeds:
        text, mask = self.embed_text(texts)
        return Embeds(self.embed_image(images), text, mask)

    def embed_image(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def embed_text(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _cannot(self, what: str):
        return TaskError(
            f"{self.architecture} cannot {what}; it serves closed-answer tasks only "
            f"(vqav2, snli-ve, shapes-vqa, shapes-ve)"
        )

    def sequence_loss_from_embeds(self, embeds: Embeds, targets: Sequence[str]) -> torch.Tensor:
        raise self._cannot("score free-form target text")

    def generate_from_embeds(self, embeds: Embeds, max_len: int = 24, beam: int = 1) -> list[str]:
        raise self._cannot("generate text")


def _f32(t: torch.Tensor) -> torch.Tensor:
    return t.float() if t.dtype != torch.float32 else t


# ============================================================================ ViLT


class ViltVQA(HFVLModel):
    """ViltForQuestionAnswering: a classifier over config.id2label."""

    architecture = "ViltForQuestionAnswering"
    task_kinds = (CLOSED,)

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        cfg = self.hf.config
        self.labels = [str(cfg.id2label[i]) for i in range(len(cfg.id2label))]
        self._label_index = {_norm(lab): i for i, lab in reversed(list(enumerate(self.labels)))}
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
            idx = [self._label_index.get(_norm(c), -1) for c in candidates]
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
        idx = [self._label_index.get(_norm(t), -1) for t in targets]
        if any(i < 0 for i in idx):
            bad = targets[idx.index(-1)]
            raise TaskError(
                f"answer {bad!r} is not in the model's id2label; ViltForQuestionAnswering can only "
                f"answer with its labels"
            )
        logits = self.label_logits_from_embeds(embeds)
        return F.cross_entropy(logits, torch.tensor(idx, device=logits.device), reduction="none")

    @torch.no_grad()
    def generate_from_embeds(self, embeds: Embeds, max_len: int = 24, beam: int = 1) -> list[str]:
        """Open-ended VQA: the arg-max label of the head."""
        return [self.labels[i] for i in self.label_logits_from_embeds(embeds).argmax(-1).tolist()]


def _norm(s: str) -> str:
    return " ".join(str(s).lower().split())


# ============================================================================ BLIP


class BlipVQA(HFVLModel):
    """BlipForQuestionAnswering: vision encoder -> question encoder (cross-attends to the
    image) -> answer decoder. Answers are decoded from [DEC] (bos_token_id) to [SEP]."""

    architecture = "BlipForQuestionAnswering"
    task_kinds = (CLOSED, GROUND, CAPTION)
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


# ============================================================================ CLIP


class ClipMatch(HFVLModel):
    """CLIPModel: logits over candidate texts "<question> <candidate>" by scaled cosine similarity."""

    architecture = "CLIPModel"
    task_kinds = (CLOSED,)
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


# ============================================================================ loading
# The families (architecture -> class, image settings, peft targets) are registered in
# robust_pt/models/loading.py; everything below dispatches through that registry.

SUPPORTED = hf_architectures()  # at import, for hf_train.py's messages; the live list: loading.hf_architectures()


def _load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as err:  # noqa: BLE001 - transformers raises many kinds
        raise CheckpointError(
            f"cannot load the tokenizer saved in {path} ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); save the processor with the model "
            f"(processor.save_pretrained(DIR))"
        ) from None


def _load_processor(path: Path, arch: str):
    """The whole saved processor (tokenizer, image processor, chat template) of a generative family."""
    try:
        return hf_family(arch).model_class.load_processor(path)
    except Exception as err:  # noqa: BLE001 - transformers raises many kinds
        raise CheckpointError(
            f"cannot load the processor saved in {path} ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); save it with the model "
            f"(processor.save_pretrained(DIR))"
        ) from None


def load_transformers(path: Path, arch: str):
    """(transformers model, tokenizer (the whole processor for generative families), image processor
    config) from a save_pretrained directory."""
    import transformers

    if not (path / "preprocessor_config.json").exists():
        raise CheckpointError(
            f"{path} has no preprocessor_config.json; save the processor with the model "
            f"(processor.save_pretrained(DIR)) so robust-pt knows the input size and normalisation"
        )
    ip = read_json(path / "preprocessor_config.json")
    tok = _load_processor(path, arch) if hf_family(arch).generative else _load_tokenizer(path)
    cls = getattr(transformers, arch)
    try:
        model = cls.from_pretrained(str(path), local_files_only=True)
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(
            f"cannot load {arch} from {path} ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        ) from None
    if not verify_weights(path, side_meta(path), SIDE_FILE):  # not written by robust-pt: no NaN / Inf weights
        refuse_nonfinite(model.named_parameters(), path)
    return model.eval(), tok, ip


def side_meta(path: Path) -> dict:
    p = path / SIDE_FILE
    return read_json(p) if p.exists() else {}


def wrap(arch: str, net: nn.Module, tok, ip: dict, meta: dict) -> HFVLModel:
    """The VLModel of `arch`'s family around `net` (a transformers model or a PeftModel on one)."""
    family = hf_family(arch)
    base = net.get_base_model() if callable(getattr(net, "get_base_model", None)) else net
    return family.model_class(net, tok, ip, meta, image=family.image_settings(ip, base.config))


def load_hf(path: str | Path, *, device: Any = None, precision: str = "auto") -> HFVLModel:
    """A VLModel from a transformers save_pretrained directory (see the module docstring)."""
    path = Path(path)
    arch = architecture_of(path)
    net, tok, ip = load_transformers(path, arch)
    side = side_meta(path)
    meta = {
        "name": path.name,
        "architecture": arch,
        "method": side.get("method", "finetune"),
        "task": side.get("task"),
        "source": str(path),
    }
    meta.update({k: v for k, v in side.items() if k not in meta})
    model = wrap(arch, net, tok, ip, meta)
    return finish(model, device, precision)


def finish(model: HFVLModel, device: Any = None, precision: str = "auto") -> HFVLModel:
    """Frozen (attacks need input gradients only), in eval mode, on `device`, with `precision`."""
    from ...runtime.devices import autocast_dtype, resolve_device

    for p in model.parameters():
        p.requires_grad_(False)
    dev = resolve_device(device)
    model.to(dev).eval()
    model.amp_dtype = autocast_dtype(precision, dev)
    model.meta["device"] = str(dev)
    if model.amp_dtype is not None:
        model.meta["precision"] = str(model.amp_dtype).replace("torch.", "")
    return model
