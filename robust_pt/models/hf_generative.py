"""Generative vision-language models (a vision encoder, a projector, a decoder-only LM behind a
chat template: LLaVA, LLaVA-NeXT, PaliGemma, Idefics3 / SmolVLM, Qwen2-VL) behind the VLModel
interface. Each family is a small subclass (robust_pt/models/hf_<family>.py) that says how
pixels become the processor's `pixel_values` and the projected image features; the rest is
here, the same for every family:

* The prompt is the saved processor's own: its chat template (or the family's prompt format)
  rendered for one user turn with an image and the question, then the processor's expansion of
  the image placeholder. It is split once into prefix (holding the image tokens), question and
  suffix (rendering the template with an empty question and with a marker gives the parts that
  stay), so a batch is [virtual prompt tokens] prefix question suffix, left-padded.
* `Embeds.image` are the projected image features (what replaces the image tokens in the LM's
  input), `Embeds.text` the LM's input embeddings of the question tokens: embedding attacks
  perturb exactly what the LM reads, and text attacks re-tokenise the question only.
* Closed-answer tasks: logits over candidates are log p(answer tokens + eos | prompt), one
  prompt pass whose KV cache is repeated for the K candidates (`Cache.batch_repeat_interleave`),
  then one pass over all candidates: the prompt is computed once, not K times. Free-form tasks:
  the reference sequence's mean token cross-entropy (teacher forcing after the prompt pass) and
  greedy decoding.
* The continuation always runs after a prompt pass with the cache, so a family whose LM attends
  bidirectionally inside the prompt (PaliGemma's prefix-LM) keeps its causal answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ..errors import TaskError
from .base import Embeds
from .hf import CAPTION, CLOSED, GROUND, HFVLModel, _f32

MARKER = "zqzq"  # a question that no template contains: where the question goes


@dataclass
class Prompt:
    """A prompt pass: next-token logits at its end, its KV cache, mask and next positions."""

    last: torch.Tensor  # (B, V) logits predicting the first continuation token
    cache: Any  # transformers Cache
    mask: torch.Tensor  # (B, L) long
    next_pos: torch.Tensor  # (D, B) position of the first continuation token (D = rope sections)


def image_only(base: type) -> type:
    """A processor class `base` (Qwen2-VL's) without its video processor, which needs
    torchvision: the same image processor, tokenizer and chat template, for images only."""

    class ImageOnly(base):
        attributes = [a for a in base.attributes if a != "video_processor"]

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kw):
            super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kw)
            self.video_processor = None

    ImageOnly.__name__ = ImageOnly.__qualname__ = base.__name__  # saved as processor_class: loads as base
    return ImageOnly


class GenerativeVLM(HFVLModel):
    """Common part of the generative families; subclasses implement `pixel_values` and `image_features`."""

    task_kinds = (CLOSED, GROUND, CAPTION)
    trains_on_answer_text = True  # the answer's tokens after the chat-templated prompt (which is not scored)
    answer_sep = " "  # between the rendered prompt and the answer, as the template would continue
    max_question_tokens = 64
    cache_budget = 2 * 1024**3  # bytes of repeated prompt caches per candidate pass (`_chunk`)

    def __init__(self, net, processor, image_cfg: dict, meta: dict, *, image):
        super().__init__(net, processor.tokenizer, image_cfg, meta, image=image)
        self.processor = processor
        self.image_token_id = int(self._config_value("image_token_id", "image_token_index"))
        self.eos_id = self._eos_id()
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_id
        prefix, suffix = self._template_parts()
        self.register_buffer("prefix_ids", torch.tensor(prefix, dtype=torch.long), persistent=False)
        self.register_buffer("suffix_ids", torch.tensor(suffix, dtype=torch.long), persistent=False)
        self.n_image_tokens = int((self.prefix_ids == self.image_token_id).sum())
        if self.n_image_tokens == 0:
            raise TaskError(f"{self.architecture}: the processor's prompt holds no image token")
        self._ans_cache: dict[tuple[str, ...], tuple[torch.Tensor, torch.Tensor]] = {}

    # ------------------------------------------------------------------ family hooks
    processor_class: str | None = None  # transformers' processor class, where it holds a video processor

    @classmethod
    def load_processor(cls, path):
        """The processor saved in `path` (tokenizer, image processor, chat template); one whose video
        processor cannot load (it needs torchvision) loads as its image-only subclass (`image_only`)."""
        import transformers
        from transformers.utils import logging

        level = logging.get_verbosity()
        logging.set_verbosity_error()  # not the slow-image-processor notice: robust-pt does its own pixels
        try:
            return transformers.AutoProcessor.from_pretrained(str(path), local_files_only=True)
        except ImportError:
            if cls.processor_class is None:
                raise
            proc = image_only(getattr(transformers, cls.processor_class))
            return proc.from_pretrained(str(path), local_files_only=True)
        finally:
            logging.set_verbosity(level)

    def pixel_values(self, images: torch.Tensor) -> dict:
        """[0, 1] images (B, 3, S, S) -> the keyword arguments of the family's `get_image_features`."""
        return {"pixel_values": self.normalize(images)}

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, N, d) projected image features: what the LM reads in place of the image tokens."""
        feats = self.hf.model.get_image_features(**self.pixel_values(images))
        return torch.stack(list(feats)) if isinstance(feats, (list, tuple)) else feats

    def prefix_positions(self, prefix: torch.Tensor) -> torch.Tensor:
        """(D, Lp) positions of the prefix tokens (D = 3 for multimodal rope); text continues after the max."""
        return torch.arange(prefix.shape[0], device=prefix.device)[None]

    def render(self, question: str) -> str:
        """The prompt text of one user turn with the image and `question`, ready for the answer."""
        msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        return self.processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)

    def processor_inputs(self, prompts: Sequence[str], images) -> dict:
        """What the saved processor makes of prompts and PIL images (the reference path; tests)."""
        pad = {"padding": True} if len(prompts) > 1 else {}
        return dict(
            self.processor(text=list(prompts), images=list(images), return_tensors="pt", truncation=False, **pad)
        )

    # ------------------------------------------------------------------ set-up
    def _config_value(self, *names):
        for cfg in (self.hf.config, getattr(self.hf.config, "text_config", None)):
            for n in names:
                v = getattr(cfg, n, None) if cfg is not None else None
                if v is not None:
                    return v
        raise TaskError(f"{self.architecture}: its config has none of {', '.join(names)}")

    def _eos_id(self) -> int:
        tok = self.tokenizer
        return int(tok.eos_token_id if tok.eos_token_id is not None else self._config_value("eos_token_id"))

    def _template_ids(self, question: str) -> list[int]:
        from PIL import Image

        dummy = Image.new("RGB", (self.image_size, self.image_size))
        return self.processor_inputs([self.render(question)], [dummy])["input_ids"][0].tolist()

    def _template_parts(self) -> tuple[list[int], list[int]]:
        """(prefix ids, suffix ids): what the rendered prompt holds before and after the question."""
        empty, marked = self._template_ids(""), self._template_ids(MARKER)
        p = 0
        while p < len(empty) and empty[p] == marked[p]:
            p += 1
        s = 0
        while s < len(empty) - p and empty[-1 - s] == marked[-1 - s]:
            s += 1
        return empty[:p], empty[len(empty) - s :]

    # ------------------------------------------------------------------ embeddings
    @property
    def word_embeddings(self):
        return self.hf.get_input_embeddings()

    def embed_image(self, images: torch.Tensor) -> torch.Tensor:
        with self._amp():
            return _f32(self.image_features(images))

    def embed_text(self, texts: Sequence[str]):
        ids, mask = self._tokenize(texts, self.max_question_tokens, special=False)
        return _f32(self.word_embeddings(ids)), mask

    def _tokenize(self, texts, max_len, special=True):
        tok = self.tokenizer
        side, tok.padding_side = tok.padding_side, "right"
        try:
            return super()._tokenize([t if t else " " for t in texts], max_len, special=special)
        finally:
            tok.padding_side = side

    # ------------------------------------------------------------------ the prompt pass
    def _rows(self, e: Embeds) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per example: its input embeddings [prompts, prefix (image features in place), question, suffix]
        and their positions (D, L)."""
        B = e.image.shape[0]
        if e.text.shape[0] != B:
            raise TaskError(f"{self.architecture}: {B} images for {e.text.shape[0]} questions")
        if e.image.shape[1] != self.n_image_tokens:
            raise TaskError(
                f"{self.architecture}: {e.image.shape[1]} image features for {self.n_image_tokens} image tokens"
            )
        emb = self.word_embeddings
        pre = _f32(emb(self.prefix_ids)).expand(B, -1, -1).clone()
        pre[:, self.prefix_ids == self.image_token_id] = e.image.to(pre.dtype)
        suf = _f32(emb(self.suffix_ids))
        prompts = self._prompts(B)
        P = 0 if prompts is None else prompts.shape[1]
        pre_pos = self.prefix_positions(self.prefix_ids) + P
        start = int(pre_pos.max()) + 1
        rows, positions = [], []
        for b in range(B):
            q = e.text[b][e.text_mask[b]]
            parts = ([] if prompts is None else [_f32(prompts[b])]) + [pre[b], q, suf]
            rows.append(torch.cat(parts))
            n_after = q.shape[0] + suf.shape[0]
            after = torch.arange(start, start + n_after, device=pre.device)
            head = torch.arange(P, device=pre.device).expand(pre_pos.shape[0], -1)
            positions.append(torch.cat([head, pre_pos, after.expand(pre_pos.shape[0], -1)], 1))
        return rows, positions

    def _lm(self, embeds, mask, positions, cache=None):
        """(logits, cache) of the LM over `embeds` (B, T, d) after `cache`."""
        pos = positions[0] if positions.shape[0] == 1 else positions
        with self._amp():
            out = self.hf.model(
                inputs_embeds=embeds,
                attention_mask=mask,
                position_ids=pos,
                past_key_values=cache,
                use_cache=True,
                return_dict=True,
            )
            return _f32(self.hf.lm_head(out.last_hidden_state)), out.past_key_values

    def prompt_pass(self, e: Embeds) -> Prompt:
        rows, positions = self._rows(e)
        L = max(r.shape[0] for r in rows)
        embeds = torch.stack([F.pad(r, (0, 0, L - r.shape[0], 0)) for r in rows])  # left padding
        pos = torch.stack([F.pad(p, (L - p.shape[1], 0), value=1) for p in positions], 1)  # (D, B, L)
        mask = torch.stack(
            [F.pad(torch.ones(r.shape[0], dtype=torch.long, device=r.device), (L - r.shape[0], 0)) for r in rows]
        )
        logits, cache = self._lm(embeds, mask, pos)
        return Prompt(logits[:, -1], cache, mask, pos[:, :, -1] + 1)

    def _continue(self, p: Prompt, ids: torch.Tensor, mask: torch.Tensor, repeat: int = 1) -> torch.Tensor:
        """(N, T, V) logits after the prompt for continuation tokens `ids` (N, T) = B * repeat rows, on a
        copy of the prompt's cache with each row repeated `repeat` times (the prompt's stays as it is)."""
        from transformers import DynamicCache

        cache = DynamicCache([(x.keys.repeat_interleave(repeat, 0), x.values.repeat_interleave(repeat, 0))
                              for x in p.cache.layers])  # fmt: skip
        pm = p.mask.repeat_interleave(repeat, 0)
        pos = p.next_pos.repeat_interleave(repeat, 1)[..., None] + torch.arange(ids.shape[1], device=ids.device)
        logits, _ = self._lm(self.word_embeddings(ids), torch.cat([pm, mask.long()], 1), pos, cache)
        return logits

    def _chunk(self, p: Prompt, K: int) -> int:
        """Candidates per continuation pass: all K unless their repeated caches would pass `cache_budget`
        bytes (real sizes with long answer lists: one copy of a 7B model's prompt cache is ~0.3 GB)."""
        per_row = sum(x.keys.numel() + x.values.numel() for x in p.cache.layers) * p.last.element_size()
        return max(1, min(K, int(self.cache_budget // max(per_row, 1))))

    # ------------------------------------------------------------------ scoring
    def _answers(self, answers: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, T) ids of "answer eos" (padded) and their mask."""
        key = tuple(answers)
        if key not in self._ans_cache:
            rows = [self.tokenizer(a, add_special_tokens=False)["input_ids"][:32] + [self.eos_id] for a in answers]
            T = max(len(r) for r in rows)
            ids = torch.full((len(rows), T), self.pad_id, dtype=torch.long)
            mask = torch.zeros(len(rows), T, dtype=torch.bool)
            for i, r in enumerate(rows):
                ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), True
            self._ans_cache[key] = (ids, mask)
        ids, mask = self._ans_cache[key]
        return ids.to(self.device), mask.to(self.device)

    def _logp(self, p: Prompt, ids: torch.Tensor, mask: torch.Tensor, repeat: int) -> torch.Tensor:
        """(N, T) log-probability of each continuation token (0 where masked)."""
        cont = self._continue(p, ids, mask, repeat)
        logits = torch.cat([p.last.repeat_interleave(repeat, 0)[:, None], cont[:, :-1]], 1)
        lp = torch.log_softmax(logits, -1).gather(-1, ids[..., None]).squeeze(-1)
        return lp * mask.to(lp.dtype)

    def candidate_logits_from_embeds(self, embeds: Embeds, candidates: Sequence[str]) -> torch.Tensor:
        p = self.prompt_pass(embeds)
        B, K = p.last.shape[0], len(candidates)
        ids, mask = self._answers(candidates)
        C, out = self._chunk(p, K), []
        for c in range(0, K, C):
            i, m = ids[c : c + C], mask[c : c + C]
            T = int(m.sum(1).max())
            out.append(self._logp(p, i[:, :T].repeat(B, 1), m[:, :T].repeat(B, 1), i.shape[0]).sum(1).view(B, -1))
        return torch.cat(out, 1)

    def sequence_loss_from_embeds(self, embeds: Embeds, targets: Sequence[str]) -> torch.Tensor:
        p = self.prompt_pass(embeds)
        rows = [self._answers([t]) for t in targets]
        T = max(r[0].shape[1] for r in rows)
        ids = torch.cat([F.pad(r[0], (0, T - r[0].shape[1]), value=self.pad_id) for r in rows])
        mask = torch.cat([F.pad(r[1], (0, T - r[1].shape[1]), value=False) for r in rows])
        return -self._logp(p, ids, mask, 1).sum(1) / mask.sum(1)

    @torch.no_grad()
    def generate_from_embeds(self, embeds: Embeds, max_len: int = 24, beam: int = 1) -> list[str]:
        """Greedy decoding (the only decoding of these families here: beam > 1 is refused)."""
        if beam > 1:
            raise TaskError(f"{self.architecture} decodes greedily here; run with beam 1")
        p = self.prompt_pass(embeds)
        B = p.last.shape[0]
        nxt = p.last.argmax(-1)
        out = [nxt]
        done = nxt == self.eos_id
        mask = torch.ones(B, 0, dtype=torch.long, device=nxt.device)
        for _ in range(max_len - 1):
            if bool(done.all()):
                break
            mask = torch.cat([mask, torch.ones(B, 1, dtype=torch.long, device=nxt.device)], 1)
            pos = p.next_pos[..., None] + mask.shape[1] - 1
            logits, p.cache = self._lm(self.word_embeddings(nxt[:, None]), torch.cat([p.mask, mask], 1), pos, p.cache)
            nxt = torch.where(done, torch.full_like(nxt, self.eos_id), logits[:, -1].argmax(-1))
            out.append(nxt)
            done |= nxt == self.eos_id
        texts = []
        for row in torch.stack(out, 1).tolist():
            row = row[: row.index(self.eos_id)] if self.eos_id in row else row
            texts.append(self.tokenizer.decode(row, skip_special_tokens=True).strip())
        return texts
