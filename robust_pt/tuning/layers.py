"""The nn.Modules the built-in tuning methods add to a MiniOFA (imported only when one is applied).

Kept apart from the method modules (prompt.py, adapter.py), which the CLI and the reports
import to learn the methods' names and options without loading torch.

* PromptEncoder / DeepPrompt (prompt.py, OFA-PT deep prompt tuning): as in OFA's
  PromptEncoder, an Embedding(length, layers*2*d), optionally reparameterised through an
  MLP (Linear d->2d, ReLU, Linear 2d->layers*2*d); dropout on the prefixes; MiniOFA
  prepends them as keys/values in the self-attention of every layer of the chosen depth
  (models/ofa.py extends the attention masks to cover them).
* Bottleneck (adapter.py): a bottleneck MLP after each layer's FFN (Houlsby-style, zero-init up).
* ApproximatePrompt (apt.py, APT): prompts that diffuse into every token after an attention's
  output projection (MiniOFA's `Attention.post`; a Hugging Face ViLT's attention output).
"""

from __future__ import annotations

import torch
from torch import nn


class PromptEncoder(nn.Module):
    def __init__(self, length: int, n_layers: int, d: int, reparam: bool, dropout: float):
        super().__init__()
        self.length, self.n_layers, self.d, self.reparam = length, n_layers, d, reparam
        self.register_buffer("positions", torch.arange(length), persistent=False)
        if reparam:
            self.embedding = nn.Embedding(length, d)
            self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.ReLU(), nn.Linear(2 * d, n_layers * 2 * d))
        else:
            self.embedding = nn.Embedding(length, n_layers * 2 * d)
        nn.init.normal_(self.embedding.weight, std=0.02)
        self.dropout = nn.Dropout(dropout)

    def forward(self, batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        p = self.embedding(self.positions)
        if self.reparam:
            p = self.mlp(p)
        p = self.dropout(p).view(self.length, self.n_layers, 2, self.d)
        p = p.unsqueeze(0).expand(batch, -1, -1, -1, -1)
        return [(p[:, :, i, 0], p[:, :, i, 1]) for i in range(self.n_layers)]


class DeepPrompt(nn.Module):
    """Prefixes for the encoder, the decoder or both; called by MiniOFA.encode."""

    def __init__(self, model, length: int, depth: str, reparam: bool, dropout: float):
        super().__init__()
        d = model.cfg.d_model
        self.enc = (
            PromptEncoder(length, len(model.encoder), d, reparam, dropout) if depth in ("encoder", "both") else None
        )
        self.dec = (
            PromptEncoder(length, len(model.decoder), d, reparam, dropout) if depth in ("decoder", "both") else None
        )

    def forward(self, batch: int):
        return (None if self.enc is None else self.enc(batch), None if self.dec is None else self.dec(batch))


class Bottleneck(nn.Module):
    def __init__(self, d: int, r: int):
        super().__init__()
        self.down, self.act, self.up = nn.Linear(d, r), nn.GELU(), nn.Linear(r, d)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)  # starts as the identity: tuning begins at the base model

    def forward(self, x):
        return self.up(self.act(self.down(x)))


class ApproximatePrompt(nn.Module):
    """APT's information diffusion for one attention (Wu et al. 2023, the authors' `approximate_prompt`).

    Called after the attention's output projection as post(h, x): h (B, N, d) the tokens that
    entered the attention, x (B, N, d) its output. With M prompts P (M, d) and a bias-free
    low-rank update of the prompts (d -> rank -> d):

        K = P + up(down(P))            prompt keys
        A = dropout(ReLU(h K^T))       (B, N, M): no softmax, no 1/sqrt(d)
        E = A P                        the prompts are the values, no projection
        w = max_M A, gradient stopped  (B, N, 1)
        out = (x + w E) * exp(s)

    Initialisation (as the authors'): P ~ N(0, 0.02), down ~ N(0, 1), up = 0 (so K = P at
    the start), s = 0 (so exp(s) = 1). The initial output is therefore x + w E with K = P,
    not x itself: APT starts close to, not at, the base model (|P| ~ 0.02 makes E small).
    Each token's prompt term depends on itself and the prompts only: O(N M d) per layer.
    """

    def __init__(self, d: int, prompts: int, rank: int, dropout: float):
        super().__init__()
        self.prompts = nn.Parameter(torch.empty(prompts, d))
        self.down = nn.Linear(d, rank, bias=False)
        self.up = nn.Linear(rank, d, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.scale = nn.Parameter(torch.zeros(1))
        nn.init.normal_(self.prompts, std=0.02)
        nn.init.normal_(self.down.weight, std=1.0)
        nn.init.zeros_(self.up.weight)

    def keys(self) -> torch.Tensor:
        return self.prompts + self.up(self.down(self.prompts))

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        a = self.dropout(torch.relu(h @ self.keys().t()))
        w = a.amax(-1, keepdim=True).detach()
        return (x + w * (a @ self.prompts)) * self.scale.exp()
