"""The nn.Modules the CLIP prompt learners set as `MiniCLIP.prompter` (imported only when one is applied).

Kept apart from the method modules (coop.py, vpt.py, maple.py), which the CLI and the
reports import to learn the methods' names and options without loading torch. What a
prompter may define, and where the model calls it, is in models/miniclip.py's docstring.

* Context (CoOp, Zhou et al. 2022): n learned word vectors in place of the template, one
  context shared by every class ("unified"), the class name at the end, the middle or the front.
* VisualPrompts (VPT, Jia et al. 2022): P learned tokens after the image encoder's CLS;
  shallow: given to the first layer only; deep: each layer gets its own.
* Maple (Khattak et al. 2023): a CoOp context for the text encoder's first layer, deep text
  prompts that replace it in the next layers up to `depth`, and in each of those layers visual
  prompts that are a learned linear map of that layer's text prompts (the coupling).
"""

from __future__ import annotations

import torch
from torch import nn


def start(table: torch.Tensor, ids: list[int] | None, n: int) -> torch.Tensor:
    """(n, d) start of a context: rows `ids` of a token-embedding table (CoOp's "a photo of a"), else N(0, 0.02)."""
    if ids:
        return table[torch.tensor(ids, dtype=torch.long)].detach().clone().float()
    return torch.randn(n, table.shape[1]) * 0.02


def _words(model, init: str, n: int) -> torch.Tensor:
    """The built-in CLIP's context start from `init`'s words."""
    return start(model.embed_tokens.weight, model.tok.encode(init) if init else None, n)


class Context(nn.Module):
    """CoOp's learned context: `context(batch)` gives (B, n + 1 [+ s], d) with a hole where the class goes.

    suffix (s, d): fixed word embeddings after everything, before <eos> (CoOp's Dassl prompts end in
    "."; rebuilt from the base, never saved)."""

    def __init__(self, ctx: torch.Tensor, position: str, suffix: torch.Tensor | None = None):
        super().__init__()
        self.ctx = nn.Parameter(ctx)
        self.position = position
        self.register_buffer("suffix", ctx.new_zeros(0, ctx.shape[1]) if suffix is None else suffix, persistent=False)

    def context(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        n, d = self.ctx.shape
        cut = {"end": n, "middle": n // 2, "front": 0}[self.position]
        seq = torch.cat([self.ctx[:cut], self.ctx.new_zeros(1, d), self.ctx[cut:], self.suffix.to(self.ctx.dtype)])
        mask = torch.ones(seq.shape[0], dtype=torch.bool, device=seq.device)
        mask[cut] = False  # the hole (at the very end, it reads as padding: the name goes there all the same)
        return seq.expand(batch, -1, -1), mask.expand(batch, -1)


class VisualPrompts(nn.Module):
    """VPT: `visual(batch)` gives each image layer's prompt tokens (B, P, d), or None where the last ones stay."""

    def __init__(self, layers: int, tokens: int, width: int, deep: bool):
        super().__init__()
        self.prompts = nn.Parameter(torch.randn(layers if deep else 1, tokens, width) * 0.02)
        self.layers = layers

    def visual(self, batch: int) -> list:
        out = [p.expand(batch, -1, -1) for p in self.prompts]
        return out + [None] * (self.layers - len(out))


class LinearHead(nn.Module):
    """A linear probe's head: `head(features, names)` scores the classes it was trained for, only those."""

    def __init__(self, classes: list[str], width: int):
        super().__init__()
        self.classes = list(classes)
        self.weight = nn.Parameter(torch.zeros(len(classes), width))
        self.bias = nn.Parameter(torch.zeros(len(classes)))

    def refusal(self, names) -> str | None:
        """Why it cannot score these class names (one line), or None."""
        if list(names) == self.classes:
            return None
        shown = ", ".join(self.classes[:4]) + (", ..." if len(self.classes) > 4 else "")
        return (
            f"a linear probe scores the {len(self.classes)} classes it was trained on ({shown}), not these; "
            f"evaluate it on its own class set"
        )

    def head(self, features: torch.Tensor, names) -> torch.Tensor:
        why = self.refusal(names)
        if why is not None:
            from ..errors import TaskError

            raise TaskError(why)
        return features @ self.weight.t() + self.bias


class Maple(nn.Module):
    """MaPLe's coupled prompts, in the first `depth` layers of both encoders."""

    def __init__(self, ctx: torch.Tensor, depth: int, image_width: int, image_layers: int, text_layers: int):
        super().__init__()
        n, d = ctx.shape
        self.ctx = nn.Parameter(ctx)  # the text encoder's first-layer prompts
        self.deep = nn.Parameter(torch.randn(depth - 1, n, d) * 0.02)  # its layers 1 .. depth-1
        self.couple = nn.ModuleList(nn.Linear(d, image_width) for _ in range(depth))  # text -> visual prompts
        self.image_layers, self.text_layers = image_layers, text_layers

    def context(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        mask = torch.ones(self.ctx.shape[0], dtype=torch.bool, device=self.ctx.device)
        return self.ctx.expand(batch, -1, -1), mask.expand(batch, -1)  # the class name goes at the end

    def text(self, batch: int) -> list:
        out = [None] + [p.expand(batch, -1, -1) for p in self.deep]
        return out + [None] * (self.text_layers - len(out))

    def visual(self, batch: int) -> list:
        layers = [self.ctx, *self.deep]
        out = [f(p).expand(batch, -1, -1) for f, p in zip(self.couple, layers)]
        return out + [None] * (self.image_layers - len(out))
