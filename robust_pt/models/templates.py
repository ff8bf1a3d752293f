"""Class names written into prompt templates, on embeddings: what every dual encoder's text side reads.

Why one function: zero-shot classification (tasks/classify.py) scores each image against its
template with each class name in it ("a picture of a {}" -> "a picture of a red circle"),
and the template arrives as embeddings with a *hole* where "{}" was: the text mask is False
there and True on both sides (models/miniclip.py's docstring). The built-in CLIP and the
Hugging Face CLIP compose the same way, so it is written once; a template without a hole
takes the name at its end (the Hugging Face CLIP's closed-answer "question answer" texts).
"""

from __future__ import annotations

import torch

SLOT = "{}"  # where a template takes its class name


def split_template(text: str) -> tuple[str, str, bool]:
    """(words before the class, words after it, whether the text has a slot "{}")."""
    if SLOT not in text:
        return text, "", False
    before, _, after = text.partition(SLOT)
    return before, after.replace(SLOT, " "), True


def slots(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(slot index, length including the hole, whether there is a hole), each (B,), from a text mask.

    The hole is the first False position followed by a True one; without one the slot is the
    first padding position (the class name goes at the end)."""
    B, T = mask.shape
    pos = torch.arange(T, device=mask.device)
    length = torch.where(mask, pos + 1, torch.zeros_like(pos)).amax(1)  # one past the last real token
    inner = (~mask) & (pos[None] < length[:, None])
    has = inner.any(1)
    first = torch.where(inner, pos, torch.full_like(pos, T)).amin(1)
    return torch.where(has, first, length), length, has


def fill(text: torch.Tensor, mask: torch.Tensor, names: torch.Tensor, lengths: torch.Tensor, eos: torch.Tensor):
    """Every template of the batch with every class name in its hole, then `eos`.

    text (B, T, d), mask (B, T): templates with holes; names (K, M, d): the class names' token
    embeddings (padded), lengths (K,); eos (d,). Returns sequences (B*K, W, d), their masks
    (B*K, W) and each one's `eos` position (B*K,)."""
    B, T, d = text.shape
    K, M, _ = names.shape
    slot, length, hole = slots(mask)
    rest = length - slot - hole.long()  # template words after the slot
    end = slot[:, None] + lengths[None, :] + rest[:, None]  # (B, K): where eos goes
    width = int(end.max()) + 1
    t = torch.arange(width, device=text.device)[None, None, :]  # (1, 1, W)
    s, c = slot[:, None, None], lengths[None, :, None]
    in_head = t < s
    in_name = (t >= s) & (t < s + c)
    in_tail = (t >= s + c) & (t < end[..., None])
    src = torch.where(in_head, t, t - c + hole.long()[:, None, None]).clamp(0, T - 1)  # (B, K, W)
    words = text[torch.arange(B, device=text.device)[:, None, None], src]  # (B, K, W, d)
    name = names[torch.arange(K, device=text.device)[None, :, None], (t - s).clamp(0, M - 1)]
    seq = torch.where((in_head | in_tail)[..., None], words, torch.zeros_like(words))
    seq = torch.where(in_name[..., None], name, seq)
    seq = torch.where((t == end[..., None])[..., None], eos.expand_as(seq), seq)
    keep = t <= end[..., None]
    return seq.reshape(B * K, width, d), keep.reshape(B * K, width), end.reshape(-1)
