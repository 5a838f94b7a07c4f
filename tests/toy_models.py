"""Small stand-ins for a language model and its tokenizer, with outputs known by construction."""
from types import SimpleNamespace

import torch
from torch import nn


class CharTokenizer:
    """One token per character: token id = ord(c) − ord("a") for the letters a..z."""

    def __call__(self, text: str) -> dict:
        return {"input_ids": [ord(c) - ord("a") for c in text]}


class Bigram(nn.Module):
    """logits of the next token = table[current token]."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = nn.Parameter(table)

    def forward(self, ids: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(logits=self.table[ids])


class ResidualReaders(nn.Module):
    """A stack of layers whose q/k/v and up projections read a Gaussian "residual stream" with
    `planted[layer] = (channel, value, every)`: that channel set to `value` on every `every`-th token."""

    def __init__(self, n_layers: int = 8, d: int = 32, vocab: int = 26, planted: dict | None = None, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList()
        for _ in range(n_layers):
            layer = nn.Module()
            layer.self_attn = nn.Module()
            for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
                setattr(layer.self_attn, name, nn.Linear(d, d))
            layer.mlp = nn.Module()
            layer.mlp.up_proj, layer.mlp.down_proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
            self.layers.append(layer)
        self.lm_head = nn.Linear(d, vocab)
        self.planted = planted or {}

    def forward(self, ids: torch.Tensor) -> SimpleNamespace:
        noise = torch.Generator().manual_seed(int(ids.sum()))
        for i, layer in enumerate(self.layers):
            h = torch.randn(*ids.shape, self.embed.embedding_dim, generator=noise)
            if i in self.planted:
                channel, value, every = self.planted[i]
                h[..., channel] = torch.where(torch.arange(ids.shape[-1]) % every == 0, value, h[..., channel])
            attn = layer.self_attn
            attn.o_proj(attn.q_proj(h) + attn.k_proj(h) + attn.v_proj(h))
            layer.mlp.down_proj(layer.mlp.up_proj(h))
        return SimpleNamespace(logits=self.lm_head(h))
