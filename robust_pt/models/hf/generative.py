"""Generative vision-language models (a vision encoder, a projector, a decoder-only LM behind a
chat template: LLaVA, LLaVA-NeXT, PaliGemma, Idefics3 / SmolVLM, Qwen2-VL) behind the VLModel
interface. Each family is a small subclass in its own module (llava.py, paligemma.py, idefics3.py,
qwen2vl.py, each registering its HFFamily with the declarations shared here: GENERATIVE) that says
how pixels become the processor's `pixel_values` and the projected image features; the rest is
here, the same for every family:

* The prompt is the saved processor's own: its chat template (or the family's prompt format)
  rendered for one user turn with an image and the question, then the processor's expansion of
  the image placeholder. It is split once into prefix (holding the image tokens), question and
  suffix (rendering the template with an empty question and with a marker gives the parts that
  stay), so a batch is [virtual prompt tokens] prefix question suffix, left-padded.
* `Embeds.image` are the projected image features (what replaces the image tokens in the LM's
  input), `Embeds.text` the LM's input embeddings of the question tokens: embedding attacks
  perturb exactly what the LM reads, and text attacks re-tokenise the question only.
* Closed-answer tasks: logits over candidates are log p(answer tokens + end of turn | prompt), the
  answer tokenised in place after the prompt as the template's assistant turn writes it
  (`answer_ids`); one prompt pass whose KV cache is repeated for the K candidates
  (`Cache.batch_repeat_interleave` on a shallow copy), then one pass over the candidates (in
  chunks under `cache_budget`): the prompt is computed once, not K times. The question, too, is
  tokenised in place in the rendered template (`question_ids`). Free-form tasks:
  the reference sequence's mean token cross-entropy (teacher forcing after the prompt pass) and
  greedy decoding.
* The continuation always runs after a prompt pass with the cache, so a family whose LM attends
  bidirectionally inside the prompt (PaliGemma's prefix-LM) keeps its causal answer.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ...errors import TaskError
from ..base import Embeds
from ..loading import PeftTargets, PromptTuning
from .base import CAPTION, CLOSED, GROUND, HFVLModel, _f32

#: LoRA on every linear layer of the LM's blocks (LLaVA's own LoRA recipe; also the vision tower's q/k/v)
LM_LORA = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LM_TARGETS = PeftTargets(lora=LM_LORA, ia3=("k_proj", "v_proj", "down_proj"), ia3_feedforward=("down_proj",))
#: What every generative family declares (HFFamily keywords): it takes the whole saved processor, serves
#: every task kind, and peft prompt tuning runs as CAUSAL_LM (the tokens go in front of the LM's input
#: embeddings; they start as embeddings of sampled vocabulary tokens).
GENERATIVE = dict(
    generative=True,
    task_kinds=(CLOSED, GROUND, CAPTION),
    prompt_tuning=PromptTuning("CAUSAL_LM", config="text_config", sample_vocab=True),
)

MARKERS = ("zqzq", "xjxj")  # two questions no template contains: what differs between them is the question


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

    trains_on_answer_text = True  # the answer's tokens after the chat-templated prompt (which is not scored)
    answer_sep = " "  # between the rendered prompt and the answer, as the template would continue
    max_question_tokens = 64
    cache_budget = 2 * 1024**3  # bytes of repeated prompt caches per candidate pass (`_chunk`)

    def __init__(self, net, processor, image_cfg: dict, meta: dict, *, image):
        super().__init__(net, processor.tokenizer, image_cfg, meta, image=image)
        self.processor = processor
        self.image_token_id = int(self._config_value("image_token_id", "image_token_index"))
        bos = self.tokenizer.bos_token
        # a template that writes bos itself gets none from the tokenizer (as apply_chat_template(tokenize=True))
        self.add_special = not (bos and self.render(MARKERS[0]).startswith(bos))
        self.eos_id = self._eos_id()
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_id
        self._q_cut = _common_ends(*(self._text_ids(self.render(m)) for m in MARKERS))
        self.end_ids = self._end_ids()
        self.stop_ids = sorted({self.end_ids[-1], self.eos_id, *self._generation_eos()})
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

    def answer_text(self, question: str, answer: str) -> str:
        """What follows render(question) when the model answers `answer`: the template's assistant turn
        (its separator and end-of-turn token included), else answer_sep + answer + eos."""
        gen = self.render(question)
        msgs = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ]
        try:
            full = self.processor.apply_chat_template(msgs, add_generation_prompt=False, tokenize=False)
        except Exception:  # noqa: BLE001 - a template without an assistant turn
            full = ""
        if full.startswith(gen) and len(full) > len(gen):
            return full[len(gen) :]
        return self.answer_sep + answer + (self.tokenizer.eos_token or "")

    def processor_inputs(self, prompts: Sequence[str], images) -> dict:
        """What the saved processor makes of prompts and PIL images (the reference path; tests)."""
        pad = {"padding": True} if len(prompts) > 1 else {}
        kw = {"return_tensors": "pt", "truncation": False, "add_special_tokens": self.add_special, **pad}
        return dict(self.processor(text=list(prompts), images=list(images), **kw))

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
        eos = tok.eos_token_id if tok.eos_token_id is not None else self._config_value("eos_token_id")
        return int(eos[0] if isinstance(eos, (list, tuple)) else eos)

    def _generation_eos(self) -> list[int]:
        eos = getattr(getattr(self.hf, "generation_config", None), "eos_token_id", None)
        return [int(x) for x in (eos if isinstance(eos, (list, tuple)) else [eos]) if x is not None]

    def _text_ids(self, text: str) -> list[int]:
        """Token ids of a rendered prompt as the processor tokenises it (image placeholders unexpanded)."""
        return self.tokenizer(text, add_special_tokens=self.add_special)["input_ids"]

    def _end_ids(self) -> list[int]:
        """The tokens that close an answer: the template's end of turn (what two answers' turns share at
        their end, up to its first token), else eos."""
        tails = [self._answer_tail(m) for m in MARKERS]
        _, n = _common_ends(*tails)
        return [tails[0][len(tails[0]) - n]] if n else [self.eos_id]

    def _answer_tail(self, answer: str) -> list[int]:
        """Token ids of answer_text("", answer) in its context after the rendered prompt."""
        gen = self._text_ids(self.render(""))
        full = self._text_ids(self.render("") + self.answer_text("", answer))
        if full[: len(gen)] == gen:
            return full[len(gen) :]
        return self.tokenizer(self.answer_text("", answer), add_special_tokens=False)["input_ids"]

    def answer_ids(self, answer: str) -> list[int]:
        """What the model says when it answers `answer`: its tokens in context, then the end of turn."""
        tail = self._answer_tail(answer)
        end = self.end_ids[0]
        return (tail[: tail.index(end)] if end in tail else tail)[:32] + [end]

    def question_ids(self, question: str) -> list[int]:
        """The question's tokens as the template tokenises them in place (context can change the first one)."""
        ids = self._text_ids(self.render(question))
        head, tail = self._q_cut
        mid = ids[head : len(ids) - tail] if len(ids) >= head + tail else []
        if not question.strip():
            return []
        return mid or self.tokenizer(question, add_special_tokens=False)["input_ids"]

    def _template_ids(self, question: str) -> list[int]:
        from PIL import Image

        dummy = Image.new("RGB", (self.image_size, self.image_size))
        return self.processor_inputs([self.render(question)], [dummy])["input_ids"][0].tolist()

    def _template_parts(self) -> tuple[list[int], list[int]]:
        """(prefix ids, suffix ids): what the processed prompt (image tokens expanded) holds before and
        after the question: what two prompts with different questions share at each end."""
        a, b = (self._template_ids(m) for m in MARKERS)
        p, s = _common_ends(a, b)
        return a[:p], a[len(a) - s :]

    # ------------------------------------------------------------------ embeddings
    @property
    def word_embeddings(self):
        return self.hf.get_input_embeddings()

    def embed_image(self, images: torch.Tensor) -> torch.Tensor:
        with self._amp():
            return _f32(self.image_features(images))

    def embed_text(self, texts: Sequence[str]):
        """The LM's input embeddings of each question's tokens in place (right-padded) and their mask."""
        rows = [self.question_ids(t)[: self.max_question_tokens] for t in texts]
        T = max(1, max(len(r) for r in rows))
        ids = torch.full((len(rows), T), self.pad_id, dtype=torch.long)
        mask = torch.zeros(len(rows), T, dtype=torch.bool)
        for i, r in enumerate(rows):
            ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r, dtype=torch.long), True
        ids, mask = ids.to(self.device), mask.to(self.device)
        return _f32(self.word_embeddings(ids)), mask

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

    def _lm(self, embeds, mask, positions, cache=None, last_only: bool = False):
        """(logits, cache) of the LM over `embeds` (B, T, d) after `cache`; `last_only`: the logits at the
        last position only (a prompt pass: (B, L, V) over a 257k vocabulary would be gigabytes)."""
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
            h = out.last_hidden_state[:, -1:] if last_only else out.last_hidden_state
            return _f32(self.hf.lm_head(h)), out.past_key_values

    def prompt_pass(self, e: Embeds) -> Prompt:
        rows, positions = self._rows(e)
        L = max(r.shape[0] for r in rows)
        embeds = torch.stack([F.pad(r, (0, 0, L - r.shape[0], 0)) for r in rows])  # left padding
        pos = torch.stack([F.pad(p, (L - p.shape[1], 0), value=1) for p in positions], 1)  # (D, B, L)
        mask = torch.stack(
            [F.pad(torch.ones(r.shape[0], dtype=torch.long, device=r.device), (L - r.shape[0], 0)) for r in rows]
        )
        logits, cache = self._lm(embeds, mask, pos, last_only=True)
        return Prompt(logits[:, -1], cache, mask, pos[:, :, -1] + 1)

    def _continue(self, p: Prompt, ids: torch.Tensor, mask: torch.Tensor, repeat: int = 1) -> torch.Tensor:
        """(N, T, V) logits after the prompt for continuation tokens `ids` (N, T) = B * repeat rows, on a
        copy of the prompt's cache with each row repeated `repeat` times (the prompt's stays as it is)."""
        cache = copy.copy(p.cache)  # shallow copies: repeating and appending rebind their tensors, the
        cache.layers = [copy.copy(x) for x in p.cache.layers]  # prompt's stay; layer kinds (sliding) are kept
        if repeat > 1:
            cache.batch_repeat_interleave(repeat)
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
        """(K, T) ids of each answer and its end of turn (padded; answer_ids) and their mask."""
        key = tuple(answers)
        if key not in self._ans_cache:
            if len(self._ans_cache) > 4096:  # training on captions: one entry per distinct target
                self._ans_cache.clear()
            rows = [self.answer_ids(a) for a in answers]
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
        stop = torch.tensor(self.stop_ids, device=p.last.device)
        nxt = p.last.argmax(-1)
        out = [nxt]
        done = torch.isin(nxt, stop)
        mask = torch.ones(B, 0, dtype=torch.long, device=nxt.device)
        for _ in range(max_len - 1):
            if bool(done.all()):
                break
            mask = torch.cat([mask, torch.ones(B, 1, dtype=torch.long, device=nxt.device)], 1)
            pos = p.next_pos[..., None] + mask.shape[1] - 1
            logits, p.cache = self._lm(self.word_embeddings(nxt[:, None]), torch.cat([p.mask, mask], 1), pos, p.cache)
            nxt = torch.where(done, torch.full_like(nxt, self.stop_ids[0]), logits[:, -1].argmax(-1))
            out.append(nxt)
            done |= torch.isin(nxt, stop)
        texts = []
        for row in torch.stack(out, 1).tolist():
            ends = [i for i, t in enumerate(row) if t in self.stop_ids]
            row = row[: ends[0]] if ends else row
            texts.append(self.tokenizer.decode(row, skip_special_tokens=True).strip())
        return texts


def _common_ends(a: Sequence[int], b: Sequence[int]) -> tuple[int, int]:
    """(p, s): the lengths of the longest common prefix and (not overlapping it) suffix of a and b."""
    p = 0
    while p < min(len(a), len(b)) and a[p] == b[p]:
        p += 1
    s = 0
    while s < min(len(a), len(b)) - p and a[-1 - s] == b[-1 - s]:
        s += 1
    return p, s
