"""The built-in model: a miniature OFA (unified encoder-decoder over image and text).

image [0,1] -> normalise (inside, so attacks act on pixels) -> conv stem -> patch tokens
text -> word tokens; encoder reads [image tokens; text tokens]; the decoder writes the
answer as text (grounding answers are <bin_k> location tokens, as in OFA).

Closed-answer tasks are scored by the log-likelihood of every candidate (OFA's
all-candidate evaluation), which gives logits over candidates.

Tuning methods (robust_pt/tuning/registry.py, one module each) plug in at three hooks,
all None in a plain model: `MiniOFA.prompt` returns per-layer prefix keys/values that
every self-attention layer prepends (deep prompt tuning, OFA-PT); `Attention.post`
rewrites an attention's output from the tokens that entered it (y = post(h, y), after
the output projection); a layer's `adapter` adds x + adapter(x) after its FFN.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .base import Embeds, VLModel
from .tokenizer import WordTokenizer

_MEAN = (0.5, 0.5, 0.5)
_STD = (0.25, 0.25, 0.25)


@dataclass(frozen=True)
class OFAConfig:
    """Architecture of the miniature OFA; stored as config.json in every checkpoint."""

    vocab: tuple[str, ...] = field(default_factory=tuple)
    image_size: int = 64
    d_model: int = 128
    n_heads: int = 4
    enc_layers: int = 3
    dec_layers: int = 3
    ffn: int = 512
    stem_channels: tuple[int, int] = (32, 64)
    max_text_len: int = 40
    max_target_len: int = 32
    dropout: float = 0.0
    # "learned": a learned position table added to the raw stem features (older checkpoints
    # and the tiny preset; in the first base the stem's output, std ~2, drowned the table,
    # std ~0.07, and the model could not tell left from right). "sincos": LayerNorm'd stem
    # features + fixed 2-D sin-cos positions of the same scale + the learned table.
    image_pos: str = "learned"

    def to_dict(self) -> dict:
        return config_dict(self, MiniOFA.architecture)

    @classmethod
    def from_dict(cls, d: dict) -> "OFAConfig":
        return config_from(cls, d)


def config_dict(cfg, architecture: str) -> dict:
    """A built-in model's config as config.json stores it (lists for tuples, its architecture named)."""
    d = asdict(cfg)
    d["vocab"] = list(cfg.vocab)
    d["stem_channels"] = list(cfg.stem_channels)
    d["architecture"] = architecture
    return d


def config_from(cls, d: dict):
    """A built-in model's config dataclass `cls` from config.json (unknown keys, e.g. architecture, ignored)."""
    d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
    d["vocab"] = tuple(d.get("vocab", ()))
    d["stem_channels"] = tuple(d.get("stem_channels", (32, 64)))
    return cls(**d)


PRESETS = {
    # 48x48 inputs (36 image tokens): what two CPU cores can pretrain in half an hour
    "tiny": dict(image_size=48, d_model=64, n_heads=4, enc_layers=2, dec_layers=2, ffn=128, stem_channels=(16, 32)),
    "small": dict(
        image_size=48,
        d_model=128,
        n_heads=4,
        enc_layers=3,
        dec_layers=3,
        ffn=512,
        stem_channels=(32, 64),
        image_pos="sincos",
    ),
}
IMAGE_POS = ("learned", "sincos")


def sincos_2d(grid: int, d: int) -> torch.Tensor:
    """(grid*grid, d) fixed positions, row-major: half the channels encode x, half y, each as
    sin and cos at d/4 geometric frequencies (MAE's scheme with base 100 instead of 10000:
    a 6x6 grid needs no long wavelengths), entries in [-1, 1]."""
    q = d // 4
    omega = 1.0 / (100.0 ** (torch.arange(q, dtype=torch.float32) / q))
    ys, xs = torch.meshgrid(
        torch.arange(grid, dtype=torch.float32), torch.arange(grid, dtype=torch.float32), indexing="ij"
    )

    def enc(p: torch.Tensor) -> torch.Tensor:
        a = p.reshape(-1, 1) * omega[None]
        return torch.cat([a.sin(), a.cos()], 1)

    out = torch.zeros(grid * grid, d)
    out[:, : 4 * q] = torch.cat([enc(xs), enc(ys)], 1)
    return out


class Attention(nn.Module):
    """Multi-head attention that can prepend prefix keys/values (deep prompt tuning)."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.h, self.dk = heads, d // heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))
        self.post: nn.Module | None = None  # set by a tuning method: y = post(x, y) after out_proj

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.h, self.dk).transpose(1, 2)

    def forward(self, x, kv=None, key_mask=None, causal=False, prefix=None, pattern=None):
        """key_mask: (B, S) True = attend. prefix: (k, v) each (B, L, d), always attended.
        pattern: (T, S) True = query t may see key s, in place of the causal triangle."""
        kv = x if kv is None else kv
        q, k, v = self._split(self.q_proj(x)), self._split(self.k_proj(kv)), self._split(self.v_proj(kv))
        B, T, S = x.shape[0], x.shape[1], kv.shape[1]
        mask = None
        if key_mask is not None:
            mask = key_mask[:, None, None, :].expand(B, 1, T, S)
        if causal or pattern is not None:
            c = torch.ones(T, S, dtype=torch.bool, device=x.device).tril() if pattern is None else pattern
            mask = c[None, None].expand(B, 1, T, S) if mask is None else mask & c
        if prefix is not None:
            pk, pv = self._split(prefix[0]), self._split(prefix[1])
            k, v = torch.cat([pk, k], 2), torch.cat([pv, v], 2)
            if mask is not None:  # the prefix is visible to every query (masks extended)
                ones = torch.ones(B, 1, T, pk.shape[2], dtype=torch.bool, device=x.device)
                mask = torch.cat([ones, mask], -1)
        y = self.out_proj(F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(B, T, -1))
        return y if self.post is None else self.post(x, y)


class FeedForward(nn.Module):
    def __init__(self, d: int, ffn: int, dropout: float):
        super().__init__()
        self.fc1, self.fc2, self.drop = nn.Linear(d, ffn), nn.Linear(ffn, d), nn.Dropout(dropout)

    def forward(self, x):
        return self.fc2(self.drop(F.gelu(self.fc1(x))))


class EncoderLayer(nn.Module):
    def __init__(self, cfg: OFAConfig):
        super().__init__()
        d = cfg.d_model
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.self_attn = Attention(d, cfg.n_heads)
        self.ffn = FeedForward(d, cfg.ffn, cfg.dropout)
        self.drop = nn.Dropout(cfg.dropout)
        self.adapter: nn.Module | None = None  # set by a tuning method (tuning/adapter.py): x + adapter(x)

    def forward(self, x, mask, prefix=None):
        x = x + self.drop(self.self_attn(self.ln1(x), key_mask=mask, prefix=prefix))
        x = x + self.drop(self.ffn(self.ln2(x)))
        return x if self.adapter is None else x + self.adapter(x)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: OFAConfig):
        super().__init__()
        d = cfg.d_model
        self.ln1, self.ln2, self.ln3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.self_attn = Attention(d, cfg.n_heads)
        self.cross_attn = Attention(d, cfg.n_heads)
        self.ffn = FeedForward(d, cfg.ffn, cfg.dropout)
        self.drop = nn.Dropout(cfg.dropout)
        self.adapter: nn.Module | None = None

    def forward(self, y, y_mask, memory, memory_mask, prefix=None, pattern=None):
        y = y + self.drop(self.self_attn(self.ln1(y), key_mask=y_mask, causal=True, prefix=prefix, pattern=pattern))
        y = y + self.drop(self.cross_attn(self.ln2(y), kv=memory, key_mask=memory_mask))
        y = y + self.drop(self.ffn(self.ln3(y)))
        return y if self.adapter is None else y + self.adapter(y)


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout), nn.GELU())


class MiniOFA(VLModel):
    """The built-in unified encoder-decoder (see module docstring)."""

    architecture = "mini-ofa"

    def __init__(self, cfg: OFAConfig, meta: dict | None = None):
        super().__init__()
        self.cfg = cfg
        self.meta = dict(meta or {})
        self.image_size = cfg.image_size
        self.tok = WordTokenizer(cfg.vocab)
        d, (c1, c2) = cfg.d_model, cfg.stem_channels
        self.register_buffer("pixel_mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)
        # receptive field 23 px at stride 8: one token sees a whole object
        self.stem = nn.Sequential(_conv(3, c1, 2), _conv(c1, c2, 2), _conv(c2, c2, 1), nn.Conv2d(c2, d, 3, 2, 1))
        self.grid = cfg.image_size // 8
        self.image_pos = nn.Parameter(torch.randn(1, self.grid * self.grid, d) * 0.02)
        if cfg.image_pos not in IMAGE_POS:
            from ..errors import ConfigError

            raise ConfigError(
                f"unknown image_pos {cfg.image_pos!r} in the model config; choose one of {', '.join(IMAGE_POS)}"
            )
        self.image_ln = nn.LayerNorm(d) if cfg.image_pos == "sincos" else None
        if self.image_ln is not None:
            self.register_buffer("image_pos_fixed", sincos_2d(self.grid, d)[None], persistent=False)
        self.embed_tokens = nn.Embedding(len(self.tok), d)
        nn.init.normal_(self.embed_tokens.weight, std=0.02)
        self.text_pos = nn.Embedding(cfg.max_text_len, d)
        self.dec_pos = nn.Embedding(cfg.max_target_len + 1, d)
        self.type_embed = nn.Embedding(2, d)  # 0 image, 1 text
        self.enc_ln_in, self.enc_ln_out = nn.LayerNorm(d), nn.LayerNorm(d)
        self.encoder = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.enc_layers))
        self.decoder = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.dec_layers))
        self.dec_ln_out = nn.LayerNorm(d)
        for emb in (self.text_pos, self.dec_pos, self.type_embed):
            # same scale as the token embeddings: at torch's default std 1 the position and type
            # vectors drown the word identity and the model barely reads its question
            nn.init.normal_(emb.weight, std=0.02)
        self.prompt: nn.Module | None = None  # set by a tuning method (tuning/prompt.py): layer prefixes

    def layer_groups(self) -> dict[str, list[nn.Module]]:
        """Its transformer layers by tower (where tuning methods put their modules: APT's depth)."""
        return {"encoder": list(self.encoder), "decoder": list(self.decoder)}

    def all_layers(self) -> list[nn.Module]:
        return [layer for group in self.layer_groups().values() for layer in group]

    # ---------------------------------------------------------------- embeddings
    def embed_image(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            raise ValueError(
                f"model expects {self.image_size}x{self.image_size} images, got {tuple(images.shape[-2:])}"
            )
        x = self.stem((images - self.pixel_mean) / self.pixel_std)
        return x.flatten(2).transpose(1, 2)  # (B, grid*grid, d)

    def embed(self, images: torch.Tensor, texts: Sequence[str]) -> Embeds:
        ids, mask = self.tok.batch(texts, self.cfg.max_text_len, device=images.device)
        return Embeds(self.embed_image(images), self.embed_tokens(ids), mask)

    def _prefixes(self, batch: int):
        if self.prompt is None:
            return None, None
        return self.prompt(batch)  # (list for encoder layers or None, list for decoder layers or None)

    def encode(self, e: Embeds):
        B, Nt = e.text.shape[0], e.text.shape[1]
        if self.image_ln is None:
            img = e.image + self.image_pos + self.type_embed.weight[0]
        else:
            img = self.image_ln(e.image) + self.image_pos_fixed + self.image_pos + self.type_embed.weight[0]
        txt = e.text + self.text_pos.weight[:Nt] + self.type_embed.weight[1]
        x = self.enc_ln_in(torch.cat([img, txt], 1))
        mask = torch.cat([torch.ones(B, img.shape[1], dtype=torch.bool, device=x.device), e.text_mask], 1)
        enc_pre, dec_pre = self._prefixes(B)
        for i, layer in enumerate(self.encoder):
            x = layer(x, mask, None if enc_pre is None else enc_pre[i])
        return self.enc_ln_out(x), mask, dec_pre

    def decode(self, memory, memory_mask, dec_pre, y_in: torch.Tensor, positions=None, pattern=None) -> torch.Tensor:
        """Vocabulary logits (B, T, V) for decoder inputs y_in (B, T).

        positions (T,) and pattern (T, T) override the default 0..T-1 positions and causal
        self-attention, so several continuations of one prefix can share a single pass."""
        T = y_in.shape[1]
        y = self.embed_tokens(y_in) + (self.dec_pos.weight[:T] if positions is None else self.dec_pos(positions))
        y_mask = y_in != self.tok.pad_id
        for i, layer in enumerate(self.decoder):
            y = layer(y, y_mask, memory, memory_mask, None if dec_pre is None else dec_pre[i], pattern)
        return self.dec_ln_out(y) @ self.embed_tokens.weight.t()

    # ---------------------------------------------------------------- VLModel API
    def token_nll_from_embeds(self, e: Embeds, targets: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed token NLL (B,) and token counts (B,) of the targets (with <eos>)."""
        memory, mmask, dec_pre = self.encode(e)
        y_in, y_out = self.tok.targets(targets, self.cfg.max_target_len, device=memory.device)
        logits = self.decode(memory, mmask, dec_pre, y_in)
        nll = F.cross_entropy(logits.transpose(1, 2), y_out, ignore_index=-100, reduction="none")
        valid = (y_out != -100).float()
        return (nll * valid).sum(1), valid.sum(1)

    def sequence_loss_from_embeds(self, e: Embeds, targets: Sequence[str]) -> torch.Tensor:
        nll, n = self.token_nll_from_embeds(e, targets)
        return nll / n

    def candidate_logits_from_embeds(self, e: Embeds, candidates: Sequence[str]) -> torch.Tensor:
        memory, mmask, dec_pre = self.encode(e)
        B, K = memory.shape[0], len(candidates)
        y_in, y_out = self.tok.targets(list(candidates), self.cfg.max_target_len, device=memory.device)
        if y_in.shape[1] == 2:  # every candidate is one token: one decoder pass for the first step
            return self._single_token_scores(memory, mmask, dec_pre, y_out[:, 0])
        mem = memory.repeat_interleave(K, 0)
        mm = mmask.repeat_interleave(K, 0)
        pre = None if dec_pre is None else [(k.repeat_interleave(K, 0), v.repeat_interleave(K, 0)) for k, v in dec_pre]
        logits = self.decode(mem, mm, pre, y_in.repeat(B, 1))
        out = y_out.repeat(B, 1)
        logp = torch.log_softmax(logits, -1).gather(-1, out.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return (logp * (out != -100)).sum(1).view(B, K)

    def _single_token_scores(self, memory, mmask, dec_pre, first: torch.Tensor) -> torch.Tensor:
        """log p(w | <bos>) + log p(<eos> | <bos> w) for every one-token candidate w.

        One decoder pass per example over [<bos>, w_1, ..., w_K]: every w_j sits at position 1
        and sees only <bos> and itself, which is exactly the state of the sequence <bos> w_j,
        so the memory is never copied K times (its cross-attention keys dominated the cost)."""
        B, K, dev = memory.shape[0], first.shape[0], memory.device
        bos = torch.full((1,), self.tok.bos_id, dtype=torch.long, device=dev)
        y_in = torch.cat([bos, first]).expand(B, K + 1)
        positions = torch.tensor([0] + [1] * K, device=dev)
        pattern = torch.eye(K + 1, dtype=torch.bool, device=dev)
        pattern[:, 0] = True
        lp = torch.log_softmax(self.decode(memory, mmask, dec_pre, y_in, positions, pattern), -1)  # (B, K+1, V)
        return lp[:, 0, first] + lp[:, 1:, self.tok.eos_id]

    @torch.no_grad()
    def generate_from_embeds(self, e: Embeds, max_len: int = 24, beam: int = 1) -> list[str]:
        memory, mmask, dec_pre = self.encode(e)
        if beam > 1:
            return self._beam(memory, mmask, dec_pre, max_len, beam)
        B = memory.shape[0]
        y = torch.full((B, 1), self.tok.bos_id, dtype=torch.long, device=memory.device)
        done = torch.zeros(B, dtype=torch.bool, device=memory.device)
        for _ in range(min(max_len, self.cfg.max_target_len)):
            nxt = self.decode(memory, mmask, dec_pre, y)[:, -1].argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, self.tok.eos_id), nxt)
            y = torch.cat([y, nxt[:, None]], 1)
            done |= nxt == self.tok.eos_id
            if bool(done.all()):
                break
        return [self.tok.decode(row[1:]) for row in y.tolist()]

    def _beam(self, memory, mmask, dec_pre, max_len: int, beam: int) -> list[str]:
        B, dev = memory.shape[0], memory.device
        rep = lambda t: t.repeat_interleave(beam, 0)  # noqa: E731
        mem, mm = rep(memory), rep(mmask)
        pre = None if dec_pre is None else [(rep(k), rep(v)) for k, v in dec_pre]
        y = torch.full((B * beam, 1), self.tok.bos_id, dtype=torch.long, device=dev)
        score = torch.full((B, beam), -math.inf, device=dev)
        score[:, 0] = 0.0
        done = torch.zeros(B * beam, dtype=torch.bool, device=dev)
        for _ in range(min(max_len, self.cfg.max_target_len)):
            lp = torch.log_softmax(self.decode(mem, mm, pre, y)[:, -1], -1)  # (B*beam, V)
            V = lp.shape[-1]
            lp = torch.where(done[:, None], torch.full_like(lp, -math.inf), lp)
            lp[:, self.tok.eos_id] = torch.where(done, torch.zeros_like(lp[:, 0]), lp[:, self.tok.eos_id])
            cand = (score.view(-1, 1) + lp).view(B, beam * V)
            score, idx = cand.topk(beam, -1)
            src = (idx // V) + torch.arange(B, device=dev)[:, None] * beam
            tok = (idx % V).view(-1)
            y = torch.cat([y[src.view(-1)], tok[:, None]], 1)
            done = done[src.view(-1)] | (tok == self.tok.eos_id)
            if bool(done.all()):
                break
        best = y.view(B, beam, -1)[:, 0]
        return [self.tok.decode(row[1:]) for row in best.tolist()]


def build(preset: str = "small", vocab: Sequence[str] = (), **overrides) -> MiniOFA:
    """A fresh MiniOFA from a size preset ('tiny' for tests, 'small' for the demo)."""
    from ..errors import ConfigError

    if preset not in PRESETS:
        raise ConfigError(f"unknown model preset {preset!r}; choose one of {', '.join(PRESETS)}")
    cfg = OFAConfig(vocab=tuple(vocab), **{**PRESETS[preset], **overrides})
    return MiniOFA(cfg)
