"""Graph attention + MLP: each query attends to itself and its neighbours in the semantic graph.

Attention runs through ``sosm.kernels.graph_attention`` over the neighbour lists the model builds
once per forward (``ctx.neighbors`` and the shared ``ctx.layout``); nothing here calls a GPU kernel
directly. Under Graph-ALiBi the score of (i, j) gets ``-slope_h · max_l |c_i,l - c_j,l|`` from the
landmark coordinates ``ctx.alibi_coords``.

Long-term memory (``SOSMConfig.memory``, :mod:`sosm.model.memory_attention`): when ``ctx.memory``
and ``ctx.memory_slots`` are set, each query also attends to its retrieved memory keys/values; the
graph part and the memory part are merged exactly by log-sum-exp. Incremental decoding
(:meth:`GraphAttention.step`) attends over itself and its neighbours' cached K/V, and over its
memory slots the same way when the decoder reads memory.

Example:
    >>> import torch
    >>> from sosm.model import SOSMConfig
    >>> from sosm.model.context import LayerContext
    >>> block = GraphAttention(SOSMConfig(d_model=32, n_heads=2, model="graph_attention"))
    >>> nbrs = torch.tensor([[[-1], [0], [0], [1]]])
    >>> block(torch.randn(1, 4, 32), LayerContext(neighbors=nbrs)).shape
    torch.Size([1, 4, 32])
"""
from __future__ import annotations

from typing import Optional

import torch

from ...kernels import graph_attention
from ...kernels.graph_attention.reference import graph_attention_scores
from ..context import LayerContext
from ..positional import alibi_slopes, apply_rotary
from .attention import AttentionBlock
from .base import register_mixer


@register_mixer
class GraphAttention(AttentionBlock):
    """Graph-restricted multi-head attention (+ self) and an MLP, pre-norm, residual.

    Args:
        config: ``SOSMConfig`` (d_model, n_heads, mlp_ratio, dropout, positional, graph.max_distance).

    Shapes: ``forward(x [B, T, d_model], ctx) -> [B, T, d_model]``; ``ctx.neighbors [B, T, Kn]``.
    """

    name = "graph_attention"
    aliases = ("A",)
    needs_graph = True
    bidirectional_capable = True  # a bidirectional model builds a non-causal graph: neighbours on both sides

    def __init__(self, config, struct_dim: Optional[int] = None):
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
            raise ValueError("graph_attention needs ctx.neighbors [B, T, Kn] (the model builds them)")
        slopes, coords = (self.alibi_slopes, ctx.alibi_coords) if self.use_alibi else (None, None)
        slots = ctx.memory_slots
        with_memory = ctx.memory is not None and slots is not None and slots.shape[-1] > 0 and bool((slots >= 0).any())
        with torch.autocast(q.device.type, enabled=False):  # the kernel computes the softmax in fp32 itself
            out = graph_attention(q, k, v, ctx.neighbors, alibi_slopes=slopes, alibi_coords=coords,
                                  layout=ctx.layout, return_lse=with_memory)  # [B, T, H, d] (, lse [B, T, H])
            if not with_memory:
                return out
            from ..memory_attention import alibi_memory_penalty, memory_attention, merge_attention
            out, lse_g = out
            scale = self.head_dim ** -0.5
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
        out = torch.einsum("bnh,bnhd->bhd", probs, values)  # [B, H, d] float32
        slots = ctx.memory_slots
        if ctx.memory is None or slots is None or slots.shape[-1] == 0 or not bool((slots >= 0).any()):
            return out.to(q.dtype)
        from ..memory_attention import alibi_memory_penalty, memory_attention, merge_attention
        mem_k, mem_v = ctx.memory.gather(self.attention_index, slots)  # [B, 1, Km, H, d] each
        penalty = alibi_memory_penalty(self.alibi_slopes, self.max_distance) if self.use_alibi else None
        out_m, lse_m = memory_attention(q[:, None], mem_k.to(q.dtype), mem_v.to(q.dtype), slots,
                                        self.head_dim ** -0.5, angles=ctx.angles, penalty=penalty)
        lse_g = torch.logsumexp(scores, dim=1)[:, None]  # [B, 1, H]
        return merge_attention(out[:, None], lse_g, out_m, lse_m)[:, 0].to(q.dtype)  # [B, H, d]

    def attention_scores(self, q: torch.Tensor, k: torch.Tensor, ctx: LayerContext) -> torch.Tensor:
        """The kernel's own score definition (``graph_attention_scores``): self + neighbours, Graph-ALiBi included."""
        slopes, coords = (self.alibi_slopes, ctx.alibi_coords) if self.use_alibi else (None, None)
        return graph_attention_scores(q, k, ctx.neighbors, self.head_dim ** -0.5, slopes, coords)
