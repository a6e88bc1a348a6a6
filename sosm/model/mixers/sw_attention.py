"""Sigmoid sliding-window attention: causal, each query reads itself and the ``W − 1`` tokens before it.

Per head, with ``s_ij = q_i·k_j / sqrt(hd)`` and temperature ``τ`` (``SOSMConfig.sigmoid_temperature``), the
weights over the window ``i − W < j <= i`` (``W = SOSMConfig.attention_window``) are

    w_ij = σ(s_ij / τ) / Σ_{i−W < j' <= i, j' >= 0} σ(s_ij' / τ)

— the sigmoids divided by their row sum (a row always holds the query itself, so the sum is positive and
each row of weights sums to 1). Keys outside the window, or before position 0, get weight 0.

Forms: the forward gathers each query's window with ``unfold`` (``O(T·W·d)`` time, ``[B, T, H, W]``
scores); the step keeps a rolling K/V cache of W entries (slot ``t mod W``): ``2·min(T, W)·d_model`` floats
per sequence, never more than ``2·W·d_model`` however long the sequence. DePass freezes the weights ``[B, H, T, T]`` (band matrix, materialised at analysis sizes).

Example:
    >>> import torch
    >>> from sosm.model import SOSMConfig
    >>> from sosm.model.context import LayerContext
    >>> block = SlidingWindowSigmoidAttention(SOSMConfig(d_model=32, n_heads=2, model="sw_attention", attention_window=4))
    >>> block(torch.randn(2, 9, 32), LayerContext()).shape
    torch.Size([2, 9, 32])
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from ..context import LayerContext
from .attention import AttentionBlock
from .base import register_mixer


@register_mixer
class SlidingWindowSigmoidAttention(AttentionBlock):
    """Causal sigmoid attention over a sliding window, and an MLP, pre-norm, residual.

    Args:
        config: ``SOSMConfig`` (d_model, n_heads, mlp_ratio, dropout, attention_window, sigmoid_temperature).

    Shapes: ``forward(x [B, T, d_model], ctx) -> [B, T, d_model]``.
    """

    name = "sw_attention"
    aliases = ("swa",)

    def __init__(self, config, struct_dim: Optional[int] = None):
        super().__init__(config)
        self.window = config.attention_window
        self.temperature = float(config.sigmoid_temperature)

    def _scale(self) -> float:
        return 1.0 / (math.sqrt(self.head_dim) * self.temperature)

    def attend(self, q, k, v, ctx: LayerContext) -> torch.Tensor:
        T, W = q.shape[1], self.window
        keys = F.pad(k.float(), (0, 0, 0, 0, W - 1, 0)).unfold(1, W, 1)  # [B, T, H, hd, W]: keys t-W+1..t
        values = F.pad(v.float(), (0, 0, 0, 0, W - 1, 0)).unfold(1, W, 1)
        scores = torch.einsum("bthd,bthdw->bthw", q.float(), keys) * self._scale()  # [B, T, H, W]
        slot_position = torch.arange(T, device=q.device)[:, None] - (W - 1) + torch.arange(W, device=q.device)
        weights = torch.sigmoid(scores) * (slot_position >= 0)[None, :, None, :]  # [B, T, H, W]
        weights = weights / weights.sum(-1, keepdim=True)
        return torch.einsum("bthw,bthdw->bthd", weights, values).to(q.dtype)  # [B, T, H, hd]

    def cache_and_attend(self, q, k, v, cache: dict, ctx: LayerContext) -> torch.Tensor:
        """``q, k, v [B, H, hd]``: write slot ``t mod W`` of the rolling cache ``[B, W, H, hd]``, attend over the filled slots."""
        t, W = ctx.position, self.window
        if cache.get("position", 0) != t:
            raise ValueError(f"decoding position {t} does not follow the cache at {cache.get('position', 0)}")
        if "k" not in cache:
            cache["k"] = k.new_zeros(k.shape[0], W, self.n_heads, self.head_dim)
            cache["v"] = v.new_zeros(v.shape[0], W, self.n_heads, self.head_dim)
        cache["k"][:, t % W], cache["v"][:, t % W] = k, v
        cache["position"] = t + 1
        filled = min(t + 1, W)
        scores = torch.einsum("bhd,bwhd->bwh", q.float(), cache["k"][:, :filled].float()) * self._scale()
        weights = torch.sigmoid(scores)
        weights = weights / weights.sum(1, keepdim=True)  # [B, filled, H]
        return torch.einsum("bwh,bwhd->bhd", weights, cache["v"][:, :filled].float()).to(q.dtype)

    def attention_probs(self, x: torch.Tensor, ctx: LayerContext) -> torch.Tensor:
        """Frozen weights ``[B, H, T, T]`` (float32): normalised sigmoids inside the causal band of width W, 0 outside."""
        q, k, _ = self._qkv(x, ctx)
        T = q.shape[1]
        scores = torch.einsum("bihd,bjhd->bhij", q.float(), k.float()) * self._scale()
        gap = torch.arange(T, device=q.device)[:, None] - torch.arange(T, device=q.device)
        weights = torch.sigmoid(scores) * ((gap >= 0) & (gap < self.window))
        return weights / weights.sum(-1, keepdim=True)

    def state_size(self, seq_len: int) -> int:
        """The rolling K/V cache: ``2 · min(T, W) · d_model`` floats (and an MoE feed-forward's routing state).

        Bounded by ``2 · W · d_model`` whatever T; below W tokens only T entries hold anything (as dense attention).
        """
        return 2 * min(seq_len, self.window) * self.n_heads * self.head_dim + self.mlp_state_size(seq_len)
