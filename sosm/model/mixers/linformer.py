"""Linformer (``"linformer"``): attention over keys and values projected along the sequence axis; bidirectional only.

Wang et al. (2020), "Linformer: Self-Attention with Linear Complexity": keys and values ``[T, d]``
are projected to ``k`` rows by learned ``E, F in R^{k × max_seq_len}`` (shared by the heads,
the paper's headwise sharing), so the score matrix is ``T × k``::

    K' = E[:, :T] K,   V' = F[:, :T] V                           # [B, k, H, hd]
    y  = softmax(Q K'^T / sqrt(hd)) V'                            # [B, T, H, hd]

A sequence shorter than ``max_seq_len`` uses the first ``T`` columns of ``E`` and ``F``. Every
projected key mixes every position, so there is no causal form (``causal_capable=False``: a causal
model that names it fails at construction, saying so). The rest of the block (pre-norm, QKV,
rotary positions, out-projection, MLP) is :class:`~sosm.model.mixers.attention.AttentionBlock`'s.

DePass: with the probabilities ``P [B, H, T, k]`` frozen, the output is ``(P F[:, :T]) V``: the
``[B, H, T, T]`` mixing matrix ``P F`` takes the place of attention probabilities in the shared
linear mode (its rows sum to ``sum_j F_j``, not 1: a Linformer "attention" is not a distribution).

Example:
    >>> import torch
    >>> from sosm.model import SOSMConfig
    >>> from sosm.model.context import LayerContext
    >>> layer = Linformer(SOSMConfig(d_model=32, n_heads=2, model="linformer", causal=False, linformer_k=4,
    ...                              max_seq_len=16))
    >>> layer(torch.randn(2, 13, 32), LayerContext()).shape
    torch.Size([2, 13, 32])
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn

from ..context import LayerContext
from .attention import AttentionBlock
from .base import register_mixer


@register_mixer
class Linformer(AttentionBlock):
    """Multi-head attention over ``linformer_k`` sequence-projected keys and values, and an MLP.

    Args:
        config: ``SOSMConfig`` (d_model, n_heads, mlp_ratio, dropout, linformer_k, max_seq_len); built only
            with ``causal=False``.

    Shapes: ``forward(x [B, T, d_model], ctx) -> [B, T, d_model]`` with ``T <= max_seq_len``.
    """

    name = "linformer"
    causal_capable = False
    bidirectional_capable = True

    def __init__(self, config, struct_dim: Optional[int] = None):
        super().__init__(config)
        self.k, self.max_seq_len = config.linformer_k, config.max_seq_len
        self.E = nn.Parameter(torch.empty(self.k, self.max_seq_len))  # key projection along the sequence
        self.F = nn.Parameter(torch.empty(self.k, self.max_seq_len))  # value projection
        self.init_parameters()

    @torch.no_grad()
    def init_parameters(self) -> None:
        """``E, F ~ N(0, 1/k)`` (the paper's random-projection scale)."""
        self.E.normal_(0.0, self.k ** -0.5)
        self.F.normal_(0.0, self.k ** -0.5)

    def _projections(self, seq_len: int):
        if seq_len > self.max_seq_len:
            raise ValueError(f"linformer: sequence length {seq_len} exceeds max_seq_len={self.max_seq_len} "
                             "(E and F have one column per position)")
        return self.E[:, :seq_len], self.F[:, :seq_len]  # [k, T] each

    def _probs(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Probabilities ``[B, H, T, k]`` (float32) over the projected keys."""
        E, _ = self._projections(k.shape[1])
        keys = torch.einsum("kt,bthd->bkhd", E.float(), k.float())  # [B, k, H, hd]
        return torch.softmax(torch.einsum("bihd,bkhd->bhik", q.float(), keys) / math.sqrt(self.head_dim), dim=-1)

    def attend(self, q, k, v, ctx: LayerContext) -> torch.Tensor:
        _, F_ = self._projections(v.shape[1])
        values = torch.einsum("kt,bthd->bkhd", F_.to(v.dtype), v)  # [B, k, H, hd]
        return torch.einsum("bhik,bkhd->bihd", self._probs(q, k).to(v.dtype), values)  # [B, T, H, hd]

    def step(self, x: torch.Tensor, ctx: LayerContext, cache: dict) -> torch.Tensor:
        raise NotImplementedError("mixer 'linformer' is bidirectional only: its projected keys and values mix every "
                                  "position, so it has no one-token-at-a-time step")

    def state_size(self, seq_len: int) -> int:
        """The projected keys and values a query reads: ``2 · k · d_model``, whatever the length."""
        return 2 * self.k * self.n_heads * self.head_dim

    def attention_probs(self, x: torch.Tensor, ctx: LayerContext) -> torch.Tensor:
        """The frozen ``[B, H, T, T]`` mixing matrix ``P F[:, :T]`` (float32) of the real input (DePass)."""
        q, k, _ = self._qkv(x, ctx)
        _, F_ = self._projections(x.shape[1])
        return torch.einsum("bhik,kt->bhit", self._probs(q, k), F_.float())
