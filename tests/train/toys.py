"""Tiny test models: a causal one with dropout (so RNG state matters) and a deliberately leaky one."""
from __future__ import annotations

import torch
import torch.nn.functional as F


class TinyCausalLM(torch.nn.Module):
    """Embedding -> one causal self-attention layer -> dropout -> tied head. ~10k params at width 16."""

    def __init__(self, vocab_size: int, width: int = 16, dropout: float = 0.1):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab_size, width)
        self.qkv = torch.nn.Linear(width, 3 * width)
        self.norm = torch.nn.LayerNorm(width)
        self.dropout = torch.nn.Dropout(dropout)

    def forward(self, input_ids):
        x = self.embed(input_ids)                                       # (B, T, W)
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        x = x + self.dropout(F.scaled_dot_product_attention(q, k, v, is_causal=True))
        logits = self.norm(x) @ self.embed.weight.T / self.embed.weight.shape[1] ** 0.5  # (B, T, V), tied head
        return logits, None


class LeakyLM(TinyCausalLM):
    """Adds the NEXT token's embedding at every position: it sees its own label."""

    def forward(self, input_ids):
        logits, state = super().forward(input_ids)
        nxt = torch.cat([input_ids[:, 1:], input_ids[:, -1:]], dim=1)  # (B, T)
        return logits + self.embed(nxt) @ self.embed.weight.T / self.embed.weight.shape[1] ** 0.5, state


def tiny_factory(model_section, vocab_size, block_size):
    """Model factory for Trainer: TinyCausalLM, or LeakyLM when ``model_section["leaky_toy"]``."""
    cls = LeakyLM if model_section.get("leaky_toy") else TinyCausalLM
    return cls(vocab_size, width=model_section.get("width", 16), dropout=model_section.get("dropout", 0.1))
