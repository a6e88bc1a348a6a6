"""LSH attention (Kitaev et al. 2020, Reformer), causal: content-addressed sparse attention with shared queries and keys.

One projection gives each head a shared query/key ``x`` (and a value). Hashing: in each of ``R = lsh_rounds``
rounds a fixed random rotation ``R_r [hd, n/2]`` (a buffer, drawn from the torch RNG at construction) maps ``x``
to a bucket ``argmax([x R_r, −x R_r])`` of ``n = lsh_buckets``; it hashes ``x`` before rotary positions, so
equal contents share a bucket wherever they stand. Scores: ``q_i · k̂_j / sqrt(hd)`` with ``q`` the rotated
shared vector and ``k̂`` its rotated unit vector (Reformer's normalised keys).

Who query i attends to:

- in round r, the last ``W = lsh_window`` earlier keys ``j < i`` that share its bucket (older ones of the
  bucket are out of reach);
- the union over rounds, each key counted once (a key found in several rounds is one column of the
  softmax, with its one score);
- itself only when that union is empty (Reformer's rule for shared QK: ``q_i · k̂_i = |q_i|`` would dominate
  every other score; so position 0, and any token first in its buckets, attends to itself alone).

Forms: the forward sorts each round's positions by (bucket, position) and reads the W predecessors of each
query in that order (``O(R·T log T + T·R·W·hd)``, ``[B, H, T, R·W + 1]`` scores); the step hashes the new
token and reads the cached keys of its buckets (full K/V cache plus the R bucket ids per head and position).
:meth:`attention_scores` builds the same pattern densely (``[B, H, T, T]``): what DePass freezes.

Example:
    >>> import torch
    >>> from sosm.model import SOSMConfig
    >>> from sosm.model.context import LayerContext
    >>> block = LSHAttention(SOSMConfig(d_model=32, n_heads=2, model="lsh_attention", lsh_buckets=4, lsh_window=3))
    >>> block(torch.randn(2, 7, 32), LayerContext()).shape
    torch.Size([2, 7, 32])
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..context import LayerContext
from ..positional import apply_rotary
from .attention import AttentionBlock
from .base import register_mixer


def lsh_pattern(buckets: torch.Tensor, window: int) -> torch.Tensor:
    """Dense attention pattern ``[B, H, T, T]`` (bool) of bucket ids ``[B, H, R, T]`` (see the module docstring)."""
    T = buckets.shape[-1]
    earlier = torch.ones(T, T, dtype=torch.bool, device=buckets.device).tril(-1)  # j < i
    same = (buckets[..., :, None] == buckets[..., None, :]) & earlier  # [B, H, R, T, T]
    from_the_right = same.flip(-1).cumsum(-1).flip(-1)  # same-bucket earlier keys in j..i-1
    union = (same & (from_the_right <= window)).any(2)  # [B, H, T, T]
    alone = ~union.any(-1, keepdim=True)  # [B, H, T, 1]
    return union | (torch.eye(T, dtype=torch.bool, device=buckets.device) & alone)


@register_mixer
class LSHAttention(AttentionBlock):
    """Causal shared-QK LSH attention and an MLP, pre-norm, residual.

    Args:
        config: ``SOSMConfig`` (d_model, n_heads, mlp_ratio, dropout, lsh_buckets, lsh_rounds, lsh_window).

    Shapes: ``forward(x [B, T, d_model], ctx) -> [B, T, d_model]``.
    """

    name = "lsh_attention"
    aliases = ("lsh",)

    def __init__(self, config, struct_dim: Optional[int] = None):
        super().__init__(config)
        d = config.d_model
        self.qkv = nn.Linear(d, 2 * d, bias=False)  # shared query/key, value
        self.n_buckets, self.n_rounds, self.window = config.lsh_buckets, config.lsh_rounds, config.lsh_window
        rotations = torch.randn(self.n_rounds, self.n_heads, self.head_dim, self.n_buckets // 2)
        self.register_buffer("rotations", rotations)  # [R, H, hd, n/2]

    def value_rows(self) -> torch.Tensor:
        d = self.n_heads * self.head_dim
        return self.qkv.weight[d: 2 * d]

    def _qkv(self, x: torch.Tensor, ctx: LayerContext):
        """``(shared, shared, v)`` ``[B, T, H, hd]``, before rotary positions (they are applied after hashing)."""
        B, T, _ = x.shape
        shared, v = self.qkv(self.norm_attn(x)).view(B, T, 2, self.n_heads, self.head_dim).unbind(2)
        return shared, shared, v

    def buckets(self, shared: torch.Tensor) -> torch.Tensor:
        """Bucket ids ``[B, H, R, T]`` (int64) of ``shared [B, T, H, hd]``: ``argmax([x R_r, −x R_r])`` per round."""
        projected = torch.einsum("bthd,rhdn->bhrtn", shared.float(), self.rotations.float())
        return torch.cat([projected, -projected], dim=-1).argmax(-1)

    def _queries_keys(self, shared: torch.Tensor, ctx: LayerContext):
        """Rotated queries and rotated unit keys ``[B, T, H, hd]`` (float32)."""
        q = shared.float() if ctx.angles is None else apply_rotary(shared.float(), ctx.angles)
        return q, F.normalize(q, dim=-1)

    def attend(self, q, k, v, ctx: LayerContext) -> torch.Tensor:
        B, T, H, hd = q.shape
        buckets = self.buckets(k)  # [B, H, R, T]
        queries, keys = self._queries_keys(q, ctx)
        positions = torch.arange(T, device=q.device)
        order = (buckets * T + positions).argsort(-1)  # [B, H, R, T]: positions sorted by (bucket, position)
        sorted_buckets = buckets.gather(-1, order)
        back = positions[:, None] - torch.arange(1, self.window + 1, device=q.device)  # [T, W]: sorted predecessors
        flat = back.clamp_min(0).flatten()
        before = order[..., flat].unflatten(-1, back.shape)  # [B, H, R, T(sorted), W] positions
        found = (back >= 0) & (sorted_buckets[..., flat].unflatten(-1, back.shape) == sorted_buckets[..., None])
        rank = order.argsort(-1)  # [B, H, R, T]: where each position sits in the sorted order
        index = rank[..., None].expand(-1, -1, -1, -1, self.window)
        candidates = torch.where(found, before, -1).gather(-2, index)  # [B, H, R, T, W] by query position
        candidates = candidates.permute(0, 1, 3, 2, 4).reshape(B, H, T, -1).sort(-1).values  # [B, H, T, R*W]
        repeated = F.pad(candidates[..., 1:] == candidates[..., :-1], (1, 0))
        valid = (candidates >= 0) & ~repeated  # each key once
        alone = ~valid.any(-1, keepdim=True)
        columns = torch.cat([candidates.clamp_min(0), positions[None, None, :, None].expand(B, H, T, 1)], -1)
        allowed = torch.cat([valid, alone], -1)  # [B, H, T, R*W + 1]
        batch, head = torch.arange(B, device=q.device)[:, None, None, None], torch.arange(H, device=q.device)[:, None, None]
        key_rows = keys.transpose(1, 2)[batch, head, columns]  # [B, H, T, C, hd]
        value_rows = v.float().transpose(1, 2)[batch, head, columns]
        scores = torch.einsum("bthd,bhtcd->bhtc", queries, key_rows) / math.sqrt(hd)
        probs = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
        return torch.einsum("bhtc,bhtcd->bthd", probs, value_rows).to(q.dtype)  # [B, T, H, hd]

    def cache_and_attend(self, q, k, v, cache: dict, ctx: LayerContext) -> torch.Tensor:
        """``q = k, v [B, H, hd]``: hash the new token, cache its unit key, value and buckets; read its buckets' keys."""
        t = ctx.position
        if "k" not in cache:
            cache["k"] = k.new_zeros(k.shape[0], 0, self.n_heads, self.head_dim, dtype=torch.float32)
            cache["v"] = v.new_zeros(v.shape[0], 0, self.n_heads, self.head_dim)
            cache["buckets"] = torch.zeros(k.shape[0], self.n_heads, self.n_rounds, 0, dtype=torch.long,
                                           device=k.device)
        if cache["k"].shape[1] != t:
            raise ValueError(f"decoding position {t} does not follow the cache of length {cache['k'].shape[1]}")
        new_buckets = self.buckets(k[:, None])  # [B, H, R, 1]
        query, key = self._queries_keys(q[:, None], ctx)  # [B, 1, H, hd]
        same = cache["buckets"] == new_buckets  # [B, H, R, t]: earlier keys of its buckets
        union = (same & (same.flip(-1).cumsum(-1).flip(-1) <= self.window)).any(2)  # [B, H, t]
        allowed = torch.cat([union, ~union.any(-1, keepdim=True)], -1)  # [B, H, t+1]
        cache["k"] = torch.cat([cache["k"], key], dim=1)  # [B, t+1, H, hd]
        cache["v"] = torch.cat([cache["v"], v[:, None]], dim=1)
        cache["buckets"] = torch.cat([cache["buckets"], new_buckets], dim=-1)
        scores = torch.einsum("bhd,bnhd->bhn", query[:, 0], cache["k"]) / math.sqrt(self.head_dim)
        probs = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
        return torch.einsum("bhn,bnhd->bhd", probs, cache["v"].float()).to(q.dtype)  # [B, H, hd]

    def attention_scores(self, q: torch.Tensor, k: torch.Tensor, ctx: LayerContext) -> torch.Tensor:
        """Dense scores ``[B, H, T, T]`` (float32), ``-inf`` outside the LSH pattern (:func:`lsh_pattern`)."""
        queries, keys = self._queries_keys(q, ctx)
        scores = torch.einsum("bihd,bjhd->bhij", queries, keys) / math.sqrt(self.head_dim)
        return scores.masked_fill(~lsh_pattern(self.buckets(k), self.window), float("-inf"))

    def state_size(self, seq_len: int) -> int:
        """The K/V cache and the bucket ids: ``2 · T · d_model + R · H · T`` (and an MoE feed-forward's routing state)."""
        return (2 * seq_len * self.n_heads * self.head_dim + self.n_rounds * self.n_heads * seq_len
                + self.mlp_state_size(seq_len))
