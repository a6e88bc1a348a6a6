"""Baseline layers and stacks, built in the same harness as the hybrid.

- ``"transformer"``: :class:`TransformerBlock` layers (causal dense attention through
  ``F.scaled_dot_product_attention``, 1-D RoPE or none, MLP), plain token embedding.
- ``"mamba"``: TopologicalMamba layers with no structural encoding (no graph at all), plain
  token embedding.
- ``"graph_attention"``: every layer a graph-attention + MLP layer over the semantic graph
  (the original SOSM operator stack), read through the MU semantic state like the hybrid.

The stacks themselves are :class:`sosm.model.hybrid.GraphMambaHybrid` with the layer codes of
``SOSMConfig.layer_types`` (``T``, ``M`` or ``A`` repeated); :func:`make_layer` maps a code to a layer.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .graph_attention_layer import AttentionBlock, GraphAttentionBlock, LayerContext
from .mamba import TopologicalMamba


class TransformerBlock(AttentionBlock):
    """Causal dense multi-head attention and an MLP, pre-norm, residual.

    Args:
        config: ``SOSMConfig`` (d_model, n_heads, mlp_ratio, dropout).

    Shapes: ``forward(x [B, T, d_model], ctx) -> [B, T, d_model]`` (``ctx.angles``: RoPE or None).

    Example:
        >>> from sosm.model import SOSMConfig
        >>> block = TransformerBlock(SOSMConfig(d_model=32, n_heads=2, model="transformer"))
        >>> block(torch.randn(2, 5, 32), LayerContext()).shape
        torch.Size([2, 5, 32])
    """

    def attend(self, q, k, v, ctx: LayerContext) -> torch.Tensor:
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           is_causal=True)  # [B, H, T, d]
        return y.transpose(1, 2)  # [B, T, H, d]

    def attend_step(self, q: torch.Tensor, cache: dict, ctx: LayerContext) -> torch.Tensor:
        """``q [B, H, d]`` over every cached key ``0..t``."""
        scores = torch.einsum("bhd,bnhd->bnh", q.float(), cache["k"].float()) / self.head_dim ** 0.5  # [B, t+1, H]
        probs = torch.softmax(scores, dim=1)
        return torch.einsum("bnh,bnhd->bhd", probs, cache["v"].float()).to(q.dtype)  # [B, H, d]


def make_layer(code: str, config, struct_dim: Optional[int]) -> nn.Module:
    """Layer for one code of ``SOSMConfig.layer_types``: ``A`` graph attention, ``M`` Mamba, ``T`` dense attention."""
    if code == "A":
        return GraphAttentionBlock(config)
    if code == "M":
        return TopologicalMamba(config, struct_dim)
    if code == "T":
        return TransformerBlock(config)
    raise ValueError(f"layer code {code!r} is invalid; accepted: 'A', 'M' or 'T'")
