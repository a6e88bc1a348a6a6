"""Graph attention layer: multi-head attention restricted to graph edges (+ self), then an MLP.

Each layer is pre-norm (RMSNorm per token) with residuals. Attention runs through
``sosm.kernels.graph_attention`` over the neighbour lists that the model builds once per
forward (``LayerContext.neighbors`` and the shared ``GraphLayout``); nothing here calls a
GPU kernel directly. For incremental decoding, :meth:`GraphAttentionBlock.step` attends
from the new token over itself and its neighbours' cached K/V.

Long-term memory (``SOSMConfig.memory``, see :mod:`sosm.model.memory_attention`): when
``ctx.memory`` and ``ctx.memory_slots`` are set, each query also attends to its retrieved
memory keys/values; the graph part (kernel) and the memory part are merged exactly by
log-sum-exp. With no memory slots the kernel output is returned unchanged. Incremental
decoding (:meth:`step`) does not read memory.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..kernels import graph_attention
from .positional import alibi_slopes, apply_rotary


@dataclass
class LayerContext:
    """Everything the layers share in one forward pass (or one decoding step).

    Args:
        angles: rotary angles ``[B or 1, T, head_dim/2]`` (None: no rotary positions).
        neighbors: ``[B, T, Kn]`` key positions of each query's graph neighbours, -1 padded
            (decoding: ``[B, 1, Kn]`` for the new token). None without a graph.
        layout: the kernels' ``GraphLayout`` of ``neighbors``, built once, shared by all layers.
        alibi_coords: ``[B, T, L]`` float landmark coordinates for Graph-ALiBi (decoding: the
            coordinates of positions ``0..t``), or None.
        structure: ``[B, T, S]`` structural encoding for Mamba's Δ (None: absent).
        position: decoding only: the index t of the new token.
        memory: a :class:`~sosm.model.memory_attention.ModelMemory` to read (None: no memory).
        memory_slots: ``[B, T, Km]`` memory ids of each query's memory edges, -1 padded.
        record_kv: when a list, each graph-attention layer appends its ``(k, v)`` ``[B, T, H, d]``
            (k before rotary positions, detached), in layer order, for writing into memory.
    """

    angles: Optional[torch.Tensor] = None
    neighbors: Optional[torch.Tensor] = None
    layout: Optional[object] = None
    alibi_coords: Optional[torch.Tensor] = None
    structure: Optional[torch.Tensor] = None
    position: int = 0
    memory: Optional[object] = None
    memory_slots: Optional[torch.Tensor] = None
    record_kv: Optional[list] = None


class MLP(nn.Module):
    """``Linear(d, hidden) -> GELU -> Linear(hidden, d)``; shapes ``[..., d] -> [..., d]``."""

    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.fc_in = nn.Linear(d_model, hidden)
        self.fc_out = nn.Linear(hidden, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(F.gelu(self.fc_in(x)))


class AttentionBlock(nn.Module):
    """Shared parts of the attention layers: pre-norm, QKV, rotary positions, out-projection, MLP.

    Subclasses implement ``attend(q, k, v, ctx) -> [B, T, H, d]`` and
    ``attend_step(q [B, H, d], cache, ctx) -> [B, H, d]``.
    """

    def __init__(self, config):
        super().__init__()
        d = config.d_model
        self.n_heads, self.head_dim = config.n_heads, config.head_dim
        self.norm_attn = nn.RMSNorm(d, eps=1e-5)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.out_proj = nn.Linear(d, d, bias=False)
        self.norm_mlp = nn.RMSNorm(d, eps=1e-5) if config.mlp_hidden else None
        self.mlp = MLP(d, config.mlp_hidden) if config.mlp_hidden else None  # None: mlp_ratio=0 (Zoology's MQAR models)
        self.dropout = nn.Dropout(config.dropout)

    def _qkv(self, x: torch.Tensor, ctx: LayerContext):
        B, T, _ = x.shape
        q, k, v = self.qkv(self.norm_attn(x)).view(B, T, 3, self.n_heads, self.head_dim).unbind(2)  # [B, T, H, d]
        if ctx.angles is not None:
            q, k = apply_rotary(q, ctx.angles), apply_rotary(k, ctx.angles)
        return q, k, v

    def forward(self, x: torch.Tensor, ctx: LayerContext) -> torch.Tensor:
        """``x [B, T, d_model]`` -> ``[B, T, d_model]``."""
        B, T, d = x.shape
        q, k, v = self._qkv(x, ctx)
        y = self.attend(q, k, v, ctx).reshape(B, T, d)  # [B, T, d_model]
        x = x + self.dropout(self.out_proj(y))
        return x if self.mlp is None else x + self.dropout(self.mlp(self.norm_mlp(x)))

    def step(self, x: torch.Tensor, ctx: LayerContext, cache: dict) -> torch.Tensor:
        """One decoding step: ``x [B, 1, d_model]`` at position ``ctx.position``; appends K/V to ``cache``."""
        B, _, d = x.shape
        q, k, v = self._qkv(x, ctx)  # [B, 1, H, d]
        t = ctx.position
        if "k" not in cache:
            cache["k"] = k.new_zeros(B, 0, self.n_heads, self.head_dim)
            cache["v"] = v.new_zeros(B, 0, self.n_heads, self.head_dim)
        if cache["k"].shape[1] != t:
            raise ValueError(f"decoding position {t} does not follow the cache of length {cache['k'].shape[1]}")
        cache["k"] = torch.cat([cache["k"], k], dim=1)  # [B, t+1, H, d]
        cache["v"] = torch.cat([cache["v"], v], dim=1)
        y = self.attend_step(q[:, 0], cache, ctx).reshape(B, 1, d)  # [B, 1, d_model]
        x = x + self.out_proj(y)
        return x if self.mlp is None else x + self.mlp(self.norm_mlp(x))


class GraphAttentionBlock(AttentionBlock):
    """Graph-restricted multi-head attention (+ self) and an MLP, pre-norm, residual.

    Args:
        config: ``SOSMConfig`` (d_model, n_heads, mlp_ratio, dropout, positional).

    Shapes: ``forward(x [B, T, d_model], ctx) -> [B, T, d_model]``; ``ctx.neighbors [B, T, Kn]``.

    Example:
        >>> from sosm.model import SOSMConfig
        >>> block = GraphAttentionBlock(SOSMConfig(d_model=32, n_heads=2, model="graph_attention"))
        >>> nbrs = torch.tensor([[[-1], [0], [0], [1]]])
        >>> block(torch.randn(1, 4, 32), LayerContext(neighbors=nbrs)).shape
        torch.Size([1, 4, 32])
    """

    def __init__(self, config):
        super().__init__(config)
        self.use_alibi = config.positional == "graph_alibi"
        self.register_buffer("alibi_slopes", alibi_slopes(config.n_heads), persistent=False)
        self.max_distance = config.graph.max_distance
        self.attention_index = 0  # order among the model's graph-attention layers (set by SOSMModel): memory bank row

    def _qkv(self, x: torch.Tensor, ctx: LayerContext):
        B, T, _ = x.shape
        q, k, v = self.qkv(self.norm_attn(x)).view(B, T, 3, self.n_heads, self.head_dim).unbind(2)  # [B, T, H, d]
        if ctx.record_kv is not None:
            ctx.record_kv.append((k.detach(), v.detach()))  # unrotated keys: memory keys carry no position
        if ctx.angles is not None:
            q, k = apply_rotary(q, ctx.angles), apply_rotary(k, ctx.angles)
        return q, k, v

    def attend(self, q, k, v, ctx: LayerContext) -> torch.Tensor:
        if ctx.neighbors is None:
            raise ValueError("GraphAttentionBlock needs ctx.neighbors [B, T, Kn] (the model builds them)")
        slopes, coords = (self.alibi_slopes, ctx.alibi_coords) if self.use_alibi else (None, None)
        with torch.autocast(q.device.type, enabled=False):  # the kernel computes the softmax in fp32 itself
            out = graph_attention(q, k, v, ctx.neighbors, alibi_slopes=slopes, alibi_coords=coords,
                                  layout=ctx.layout)  # [B, T, H, d]
            slots = ctx.memory_slots
            if ctx.memory is None or slots is None or slots.shape[-1] == 0 or not bool((slots >= 0).any()):
                return out
            from .memory_attention import (alibi_memory_penalty, graph_logsumexp, memory_attention,
                                           merge_attention)
            scale = self.head_dim ** -0.5
            lse_g = graph_logsumexp(q, k, ctx.neighbors, scale, slopes, coords)  # [B, T, H]
            mem_k, mem_v = ctx.memory.gather(self.attention_index, slots)  # [B, T, Km, H, d] each
            penalty = alibi_memory_penalty(self.alibi_slopes, self.max_distance) if self.use_alibi else None
            out_m, lse_m = memory_attention(q, mem_k.to(q.dtype), mem_v.to(q.dtype), slots, scale,
                                            angles=ctx.angles, penalty=penalty)
            return merge_attention(out, lse_g, out_m, lse_m).to(q.dtype)  # [B, T, H, d]

    def attend_step(self, q: torch.Tensor, cache: dict, ctx: LayerContext) -> torch.Tensor:
        """Softmax over self + neighbours (``ctx.neighbors [B, 1, Kn]``) of the cached K/V; ``q [B, H, d]``."""
        B, t = q.shape[0], ctx.position
        nbrs = ctx.neighbors[:, 0].long()  # [B, Kn]
        keys_at = torch.cat([nbrs, nbrs.new_full((B, 1), t)], dim=1)  # [B, Kn+1], self last (Kn may be 0)
        valid = keys_at >= 0
        batch = torch.arange(B, device=q.device)[:, None]
        keys = cache["k"][batch, keys_at.clamp_min(0)].float()  # [B, Kn+1, H, d]
        values = cache["v"][batch, keys_at.clamp_min(0)].float()
        scores = torch.einsum("bhd,bnhd->bnh", q.float(), keys) / self.head_dim ** 0.5  # [B, Kn+1, H]
        if self.use_alibi:
            coords = ctx.alibi_coords  # [B, t+1, L]
            dist = (coords[:, t, None, :] - coords[batch, keys_at.clamp_min(0)]).abs().amax(-1)  # [B, Kn+1]
            scores = scores - dist[..., None] * self.alibi_slopes
        # a neighbour listed twice (or self listed) is one key: keep its first occurrence only
        dup = (keys_at[:, :, None] == keys_at[:, None, :]).tril(-1).any(-1)  # [B, Kn+1]
        scores = scores.masked_fill(~(valid & ~dup)[..., None], float("-inf"))
        probs = torch.softmax(scores, dim=1)
        return torch.einsum("bnh,bnhd->bhd", probs, values).to(q.dtype)  # [B, H, d]
