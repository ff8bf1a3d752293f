"""A word-level tokenizer over a fixed vocabulary (stored in the checkpoint's config).

ShapesWorld has a closed vocabulary, so words map one to one to ids; anything else
(a misspelling from a character-level text attack, say) becomes <unk>, exactly the
way an out-of-vocabulary word reaches a real model's embedding table.
"""

from __future__ import annotations

import re
from typing import Sequence

import torch

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
_TOKEN_RE = re.compile(r"<bin_\d+>|[a-z]+|\d+|[^\sa-z\d]")


def split_words(text: str) -> list[str]:
    return _TOKEN_RE.findall(text.lower())


class WordTokenizer:
    def __init__(self, words: Sequence[str]):
        self.itos = list(SPECIALS) + [w for w in words if w not in SPECIALS]
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = (self.stoi[s] for s in SPECIALS)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        return [self.stoi.get(w, self.unk_id) for w in split_words(text)]

    def decode(self, ids: Sequence[int]) -> str:
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i in (self.pad_id, self.bos_id):
                continue
            out.append(self.itos[i])
        return " ".join(out)

    def batch(self, texts: Sequence[str], max_len: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded ids (B, T) and mask (B, T); T = longest text, capped at max_len."""
        seqs = [self.encode(t)[:max_len] or [self.unk_id] for t in texts]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        ids = ids.to(device) if device is not None else ids
        return ids, ids != self.pad_id

    def targets(self, texts: Sequence[str], max_len: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder input (<bos> + y) and output (y + <eos>) ids, padded; pads are -100 in outputs."""
        seqs = [self.encode(t)[: max_len - 1] for t in texts]
        width = max(len(s) for s in seqs) + 1
        inp = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        out = torch.full((len(seqs), width), -100, dtype=torch.long)
        for i, s in enumerate(seqs):
            inp[i, : len(s) + 1] = torch.tensor([self.bos_id] + s, dtype=torch.long)
            out[i, : len(s) + 1] = torch.tensor(s + [self.eos_id], dtype=torch.long)
        if device is not None:
            inp, out = inp.to(device), out.to(device)
        return inp, out
