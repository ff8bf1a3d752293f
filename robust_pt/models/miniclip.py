"""The built-in dual encoder: a miniature CLIP, for the prompt learners the field measures (CoOp, VPT, MaPLe).

image [0,1] -> normalise (inside, so attacks act on pixels) -> conv stem -> patch tokens
-> [CLS; tokens] -> image transformer -> CLS -> projection -> unit feature f_img.
prompt template with the class name filled in -> word tokens + <eos> -> text transformer
-> the <eos> token -> projection -> unit feature f_txt. Logits over K class names are
exp(t) * cos(f_img, f_txt_k), t a learned temperature: zero-shot classification, so
every image attack sees a plain classifier.

Where the class name goes. `embed` gives a template such as "a picture of a {}." as word
embeddings with a *hole* where "{}" was: the text mask is False there and True on both
sides (a template whose "{}" ends it has its hole right after the last word, where
padding starts, which means the same thing: the name goes at the end). Every code path
that rebuilds an `Embeds` keeps the mask, so the hole survives embedding-space attacks;
the hole's own vector is never read. `candidate_logits_from_embeds` writes each class
name's words into the hole and appends <eos>.

Prompt learners (robust_pt/tuning/coop.py, vpt.py, maple.py) plug in through one hook,
`MiniCLIP.prompter`, None in a plain model. A prompter may define any of:
  context(batch) -> (embeddings (B, n, d), mask (B, n) with the class hole): replaces the
    hand-written template (CoOp's learned context; MaPLe's first-layer text prompts);
  visual(batch) -> per image layer (B, P, d) prompts or None: VPT's tokens, written after
    CLS (layer 0 inserts them, a later layer with its own replaces the previous ones);
  text(batch) -> per text layer (B, n, d) or None: from layer 1 on, they replace the
    first n text tokens (MaPLe's deep text prompts).
The transformer layers are the built-in OFA's (models/ofa.py), so LoRA, and anything
else written for their Linear layers, applies unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .base import Embeds, VLModel
from .ofa import _MEAN, _STD, EncoderLayer, _conv, config_dict, config_from, sincos_2d
from .templates import fill, slots, split_template  # noqa: F401  (slots: re-exported)
from .tokenizer import WordTokenizer

ARCHITECTURE = "mini-clip"


@dataclass(frozen=True)
class ClipConfig:
    """Architecture of the miniature CLIP; stored as config.json in every checkpoint."""

    vocab: tuple[str, ...] = field(default_factory=tuple)
    image_size: int = 48
    d_model: int = 128
    n_heads: int = 4
    image_layers: int = 3
    text_layers: int = 3
    ffn: int = 512
    stem_channels: tuple[int, int] = (32, 64)
    embed_dim: int = 64
    max_text_len: int = 40
    dropout: float = 0.0

    def to_dict(self) -> dict:
        return config_dict(self, ARCHITECTURE)

    @classmethod
    def from_dict(cls, d: dict) -> "ClipConfig":
        return config_from(cls, d)


PRESETS = {
    "tiny": dict(image_size=48, d_model=64, n_heads=4, image_layers=2, text_layers=2, ffn=128, stem_channels=(16, 32)),
    "small": dict(image_size=48, d_model=128, n_heads=4, image_layers=3, text_layers=3, ffn=512),
}


class MiniCLIP(VLModel):
    """The built-in dual encoder (see module docstring)."""

    architecture = ARCHITECTURE
    fills_class_prompts = True  # it scores class names written into prompt templates (tasks/classify.py)
    task_kinds = ("classify",)  # tasks/classify.py; a closed VQA question is not a class prompt
    trains_on_answer_text = False  # tuning: cross-entropy over the task's classes (as the HF classifiers)

    def __init__(self, cfg: ClipConfig, meta: dict | None = None):
        super().__init__()
        self.cfg = cfg
        self.meta = dict(meta or {})
        self.image_size = cfg.image_size
        self.tok = WordTokenizer(cfg.vocab)
        d, (c1, c2) = cfg.d_model, cfg.stem_channels
        self.register_buffer("pixel_mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)
        self.stem = nn.Sequential(_conv(3, c1, 2), _conv(c1, c2, 2), _conv(c2, c2, 1), nn.Conv2d(c2, d, 3, 2, 1))
        self.grid = cfg.image_size // 8
        self.register_buffer("image_pos_fixed", sincos_2d(self.grid, d)[None], persistent=False)
        self.image_ln_in = nn.LayerNorm(d)
        self.image_pos = nn.Parameter(torch.randn(1, self.grid * self.grid, d) * 0.02)
        self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.image_layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.image_layers))
        self.image_ln_out = nn.LayerNorm(d)
        self.image_proj = nn.Linear(d, cfg.embed_dim, bias=False)
        self.embed_tokens = nn.Embedding(len(self.tok), d)
        self.text_pos = nn.Embedding(cfg.max_text_len, d)
        for emb in (self.embed_tokens, self.text_pos):
            nn.init.normal_(emb.weight, std=0.02)
        self.text_layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.text_layers))
        self.text_ln_out = nn.LayerNorm(d)
        self.text_proj = nn.Linear(d, cfg.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.prompter: nn.Module | None = None  # set by a prompt learner (see module docstring)
        self._names: dict[tuple[str, ...], tuple[torch.Tensor, torch.Tensor]] = {}

    def layer_groups(self) -> dict[str, list[nn.Module]]:
        """Its transformer layers by tower (where tuning methods put their modules: APT's depth)."""
        return {"image": list(self.image_layers), "text": list(self.text_layers)}

    def all_layers(self) -> list[nn.Module]:
        return [layer for group in self.layer_groups().values() for layer in group]

    def image_parameters(self) -> list[nn.Parameter]:
        """What finetuning trains on a dual encoder (the text tower stays, so new class names still read)."""
        modules = [self.stem, self.image_ln_in, self.image_layers, self.image_ln_out, self.image_proj]
        return [self.cls, self.image_pos] + [p for m in modules for p in m.parameters()]

    @property
    def reads_text(self) -> bool:
        """Whether it reads the words it is given (a learned context or a linear probe replaces them)."""
        return not (hasattr(self.prompter, "context") or hasattr(self.prompter, "head"))

    def class_refusal(self, names) -> str | None:
        """Why it cannot score these class names (a linear probe's own classes only), or None."""
        refusal = getattr(self.prompter, "refusal", None)
        return None if refusal is None else refusal(names)

    # ---------------------------------------------------------------- embeddings
    def embed_image(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            raise ValueError(
                f"model expects {self.image_size}x{self.image_size} images, got {tuple(images.shape[-2:])}"
            )
        x = self.stem((images - self.pixel_mean) / self.pixel_std)
        return x.flatten(2).transpose(1, 2)  # (B, grid*grid, d)

    def template_ids(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Word ids (B, T) of templates, with a hole (mask False, id <pad>) where "{}" was."""
        rows = []
        for t in texts:
            before, after, slotted = split_template(t)
            head, tail = self.tok.encode(before), self.tok.encode(after)
            rows.append((head, tail, slotted))
        limit = self.cfg.max_text_len - 1
        T = max(1, min(limit, max(len(h) + len(t) + s for h, t, s in rows)))
        ids = torch.full((len(rows), T), self.tok.pad_id, dtype=torch.long)
        mask = torch.zeros(len(rows), T, dtype=torch.bool)
        for i, (head, tail, slotted) in enumerate(rows):
            seq = (head + [self.tok.pad_id] + tail if slotted else head)[:T]
            ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[i, : len(seq)] = True
            if slotted and len(head) < T:
                mask[i, len(head)] = False
        return ids, mask

    def embed(self, images: torch.Tensor, texts: Sequence[str]) -> Embeds:
        image = self.embed_image(images)
        context = getattr(self.prompter, "context", None)
        if context is not None:  # a learned context replaces the hand-written template
            text, mask = context(images.shape[0])
            return Embeds(image, text, mask)
        ids, mask = self.template_ids(texts)
        ids, mask = ids.to(images.device), mask.to(images.device)
        return Embeds(image, self.embed_tokens(ids), mask)

    # ---------------------------------------------------------------- towers
    def image_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, embed_dim) unit image features from the stem's tokens."""
        B = tokens.shape[0]
        x = self.image_ln_in(tokens) + self.image_pos_fixed + self.image_pos
        x = torch.cat([self.cls.expand(B, -1, -1), x], 1)
        visual = getattr(self.prompter, "visual", None)
        prompts = visual(B) if visual is not None else [None] * len(self.image_layers)
        n = 0  # prompt tokens currently after CLS
        for layer, p in zip(self.image_layers, prompts):
            if p is not None:
                x = torch.cat([x[:, :1], p, x[:, 1 + n :]], 1)
                n = p.shape[1]
            x = layer(x, None)
        return F.normalize(self.image_proj(self.image_ln_out(x[:, 0])), dim=-1)

    def _name_ids(self, names: Sequence[str], device) -> tuple[torch.Tensor, torch.Tensor]:
        """Word ids (K, M) of the class names (padded) and their lengths (K,), cached."""
        key = tuple(names)
        if key not in self._names and len(self._names) > 64:  # contrastive batches: a new caption set each step
            self._names.clear()
        if key not in self._names:
            rows = [self.tok.encode(n)[: self.cfg.max_text_len // 2] or [self.tok.unk_id] for n in names]
            ids = torch.full((len(rows), max(len(r) for r in rows)), self.tok.pad_id, dtype=torch.long)
            for i, r in enumerate(rows):
                ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            self._names[key] = (ids, torch.tensor([len(r) for r in rows]))
        ids, lens = self._names[key]
        return ids.to(device), lens.to(device)

    def compose(self, text: torch.Tensor, mask: torch.Tensor, names: Sequence[str]):
        """Every template of the batch with every class name in its hole, then <eos>.

        Returns sequences (B*K, T', d), their masks and the <eos> positions (B*K,)."""
        ids, lengths = self._name_ids(names, text.device)
        return fill(text, mask, self.embed_tokens(ids), lengths, self.embed_tokens.weight[self.tok.eos_id])

    def text_features(self, seq: torch.Tensor, mask: torch.Tensor, eos: torch.Tensor) -> torch.Tensor:
        """(N, embed_dim) unit text features of composed sequences, read at their <eos>."""
        N, W, _ = seq.shape
        if W > self.cfg.max_text_len:
            from ..errors import TaskError

            raise TaskError(f"prompt + class name longer than the model's {self.cfg.max_text_len} text positions")
        x = seq + self.text_pos.weight[:W]
        deep = getattr(self.prompter, "text", None)
        prompts = deep(N) if deep is not None else [None] * len(self.text_layers)
        for i, (layer, p) in enumerate(zip(self.text_layers, prompts)):
            if p is not None and i > 0:
                x = torch.cat([p, x[:, p.shape[1] :]], 1)
            x = layer(x, mask)
        pooled = self.text_ln_out(x)[torch.arange(N, device=x.device), eos]
        return F.normalize(self.text_proj(pooled), dim=-1)

    def class_features(self, text: torch.Tensor, mask: torch.Tensor, names: Sequence[str]) -> torch.Tensor:
        """(B, K, embed_dim): each row's template with each class name. Rows that are one template
        without gradient (a hand-written prompt under an image attack) are encoded once."""
        B, K = text.shape[0], len(names)
        if B > 1 and not text.requires_grad and bool((mask == mask[:1]).all()) and bool((text == text[:1]).all()):
            return self.class_features(text[:1], mask[:1], names).expand(B, -1, -1)
        seq, keep, eos = self.compose(text, mask, names)
        return self.text_features(seq, keep, eos).view(B, K, -1)

    def caption_features(self, captions: Sequence[str]) -> torch.Tensor:
        """(N, embed_dim) unit features of whole texts (contrastive pretraining)."""
        ids, mask = self.tok.batch(captions, self.cfg.max_text_len - 1, device=self.device)
        length = mask.long().sum(1)
        ids = torch.cat([ids, torch.full_like(ids[:, :1], self.tok.pad_id)], 1)
        ids[torch.arange(ids.shape[0]), length] = self.tok.eos_id
        keep = torch.arange(ids.shape[1], device=ids.device)[None] <= length[:, None]
        return self.text_features(self.embed_tokens(ids), keep, length)

    @property
    def scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(max=math.log(100.0)).exp()

    # ---------------------------------------------------------------- VLModel API
    def candidate_logits_from_embeds(self, e: Embeds, candidates: Sequence[str]) -> torch.Tensor:
        """(B, K) scaled cosine similarity of each image to its template with each class name."""
        img = self.image_features(e.image)
        head = getattr(self.prompter, "head", None)  # a linear probe scores its own classes from the image alone
        if head is not None:  # the text stays in the graph with no effect, so embedding attacks get a zero gradient
            return head(img, candidates) + 0.0 * e.text.sum()
        txt = self.class_features(e.text, e.text_mask, candidates)
        return self.scale * torch.einsum("bd,bkd->bk", img, txt)

    def sequence_loss_from_embeds(self, e: Embeds, targets: Sequence[str]) -> torch.Tensor:
        """(B,) cross-entropy of each target among the batch's distinct targets (a dual encoder scores, it
        does not generate: the loss of a text is how far its match falls behind the others')."""
        names = sorted(set(targets))
        logits = self.candidate_logits_from_embeds(e, names)
        labels = torch.tensor([names.index(t) for t in targets], device=logits.device)
        return F.cross_entropy(logits, labels, reduction="none")

    def generate_from_embeds(self, e: Embeds, max_len: int = 24, beam: int = 1) -> list[str]:
        from ..errors import TaskError

        raise TaskError("a dual encoder (mini-clip) scores class names; it does not generate text")


def build(preset: str = "small", vocab: Sequence[str] = (), **overrides) -> MiniCLIP:
    """A fresh MiniCLIP from a size preset ('tiny' for tests, 'small' for the committed base)."""
    from ..errors import ConfigError

    if preset not in PRESETS:
        raise ConfigError(f"unknown model preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return MiniCLIP(ClipConfig(vocab=tuple(vocab), **{**PRESETS[preset], **overrides}))
