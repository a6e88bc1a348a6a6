"""Multi-block attention (``"multi_block"``): each head addresses by one group of the MU semantic blocks.

The semantic state of the graph models' front end is ``[B, T, 64]``: 16 named blocks of 4 dims
(:mod:`sosm.common.blocks`). With ``H`` heads (``H`` must divide 16), head ``h`` owns the group of
``16 / H`` consecutive blocks ``h·16/H .. (h+1)·16/H - 1`` (with 4 heads: ``I D R1 R2``,
``K M T P``, ``S C N X``, ``E F A Z``). "Reads a group" means, precisely:

- its **queries and keys** are projected from that group of the semantic state only
  (``s_g [B, T, 64/H]``, RMS-normalised per group, then a per-head ``[64/H, head_dim]`` projection;
  rotary positions as the other attention mixers), so *where* head ``h`` looks is decided by
  similarity in its blocks alone (identity, domain, relations, ...);
- its **values** come from the residual stream (``norm(x)``, one ``d × d`` projection as in
  dense attention), so *what* it carries is the layer's hidden state.

Attention is dense softmax over every earlier position (causal; with ``causal=False`` over every
position), then the out-projection and the MLP of
:class:`~sosm.model.mixers.attention.AttentionBlock`. The semantic state keeps its gradient, so
training teaches the blocks to address. Decoding reads the new token's ``ctx.semantic [B, 1, 64]``
and the K/V cache; DePass freezes the probabilities (the semantic state is not a component of the
residual stream: it only routes).

Example:
    >>> import torch
    >>> from sosm.model import SOSMConfig
    >>> from sosm.model.context import LayerContext
    >>> layer = MultiBlockAttention(SOSMConfig(d_model=32, n_heads=4, model="multi_block"))
    >>> layer(torch.randn(2, 7, 32), LayerContext(semantic=torch.randn(2, 7, 64))).shape
    torch.Size([2, 7, 32])
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from ...common.blocks import BLOCK_DIM, BLOCK_NAMES, N_BLOCKS, SEMANTIC_DIM, block_slice
from ..context import LayerContext
from ..positional import apply_rotary
from .attention import DenseAttention
from .base import register_mixer


def block_groups(n_heads: int) -> list[tuple[str, ...]]:
    """The semantic block names each head reads: ``n_heads`` groups of ``16 / n_heads`` consecutive blocks."""
    if not isinstance(n_heads, int) or n_heads < 1 or N_BLOCKS % n_heads:
        raise ValueError(f"n_heads={n_heads!r} is invalid for multi_block attention; accepted: a divisor of the "
                         f"{N_BLOCKS} semantic blocks (each head reads one group of blocks)")
    size = N_BLOCKS // n_heads
    return [BLOCK_NAMES[h * size:(h + 1) * size] for h in range(n_heads)]


@register_mixer
class MultiBlockAttention(DenseAttention):
    """Dense attention whose head ``h`` takes queries and keys from semantic block group ``h``, values from ``x``.

    Args:
        config: ``SOSMConfig`` (d_model, n_heads dividing 16, mlp_ratio, dropout, causal).

    Shapes: ``forward(x [B, T, d_model], ctx) -> [B, T, d_model]``; needs ``ctx.semantic [B, T, 64]``
    (the graph models' front end sets it).
    """

    name = "multi_block"
    aliases = ()
    needs_graph = True  # the model builds the MU front end (and its graph), which gives ctx.semantic

    def __init__(self, config, struct_dim: Optional[int] = None):
        super().__init__(config)
        self.groups = block_groups(self.n_heads)
        starts = [block_slice(group[0]).start for group in self.groups]
        assert starts == [h * SEMANTIC_DIM // self.n_heads for h in range(self.n_heads)], starts  # consecutive blocks
        width = len(self.groups[0]) * BLOCK_DIM  # 64 / H
        d = config.d_model
        del self.qkv  # queries and keys come from the semantic state; the values alone from x
        self.value = nn.Linear(d, d, bias=False)
        self.norm_semantic = nn.RMSNorm(width, eps=1e-5)  # per group
        self.q_weight = nn.Parameter(torch.empty(self.n_heads, width, self.head_dim))
        self.k_weight = nn.Parameter(torch.empty(self.n_heads, width, self.head_dim))
        self.init_parameters()

    @torch.no_grad()
    def init_parameters(self) -> None:
        """Query and key projections ``N(0, 1/width)``: unit-scale queries and keys from normalised blocks."""
        width = self.q_weight.shape[1]
        self.q_weight.normal_(0.0, width ** -0.5)
        self.k_weight.normal_(0.0, width ** -0.5)

    def _qkv(self, x: torch.Tensor, ctx: LayerContext):
        B, T, _ = x.shape
        if ctx.semantic is None or tuple(ctx.semantic.shape) != (B, T, SEMANTIC_DIM):
            got = None if ctx.semantic is None else tuple(ctx.semantic.shape)
            raise ValueError(f"multi_block needs ctx.semantic [B, T, {SEMANTIC_DIM}] = {(B, T, SEMANTIC_DIM)} (the MU "
                             f"semantic state of a graph model's front end), got {got}")
        groups = self.norm_semantic(ctx.semantic.to(x.dtype).view(B, T, self.n_heads, -1))  # [B, T, H, 64/H]
        q = torch.einsum("bthw,hwd->bthd", groups, self.q_weight.to(x.dtype))  # [B, T, H, hd]
        k = torch.einsum("bthw,hwd->bthd", groups, self.k_weight.to(x.dtype))
        v = self.value(self.norm_attn(x)).view(B, T, self.n_heads, self.head_dim)
        if ctx.angles is not None:
            q, k = apply_rotary(q, ctx.angles), apply_rotary(k, ctx.angles)
        return q, k, v

    def value_rows(self) -> torch.Tensor:
        return self.value.weight
