"""cosFormer (Qin et al. 2022): linear attention with ReLU features and a cos re-weighting of distances.

Per head, query i weighs key ``j <= i`` by ``relu(q_i)·relu(k_j) · cos(π/2 · (i − j) / M)`` and divides by the
row's sum of those weights (clamped below at ``1e-6``, so a query whose ReLU features meet no key's reads 0).
``M = SOSMConfig.max_seq_len``: every distance in a sequence is below M, so the re-weighting lies in (0, 1] and
decays with distance. (The paper's causal M is the longest length too; decoding past ``max_seq_len`` is refused.)

The cos splits, ``cos(a_i − a_j) = cos a_i cos a_j + sin a_i sin a_j`` with ``a_t = π t / 2M``, so the weight
is the dot product of ``[relu(q_i) cos a_i, relu(q_i) sin a_i]`` and ``[relu(k_j) cos a_j, relu(k_j) sin a_j]``:
a linear attention with ``2·hd`` key features. The forward is its chunked prefix sum
(:func:`.chunked.scalar_decay_chunked` without decay, the ones channel of the values giving the denominator:
one chunk covering T is the quadratic form); the step keeps the sums ``S = Σ k̃ vᵀ`` and ``z = Σ k̃``,
``H·2hd·(hd + 1)`` floats per sequence. Rotary positions (the model's ``positional``) act on q and k before
the ReLU, as in every attention mixer. DePass freezes the weights ``[B, H, T, T]`` (at analysis sizes).

Example:
    >>> import torch
    >>> from sosm.model import SOSMConfig
    >>> from sosm.model.context import LayerContext
    >>> block = CosFormer(SOSMConfig(d_model=32, n_heads=2, model="cosformer"))
    >>> block(torch.randn(2, 5, 32), LayerContext()).shape
    torch.Size([2, 5, 32])
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from ..context import LayerContext
from .attention import AttentionBlock
from .base import register_mixer
from .chunked import scalar_decay_chunked, scalar_decay_step

DENOMINATOR_FLOOR = 1e-6  # a row's weight sum is clamped below at this


def cos_sin_features(x: torch.Tensor, positions: torch.Tensor, horizon: int) -> torch.Tensor:
    """``x [B, T, H, hd]`` at ``positions [T]`` -> ``[B, T, H, 2 hd]`` float32: ``relu(x)`` times cos and sin of ``π t / 2M``."""
    angle = (math.pi / 2 / horizon) * positions.to(torch.float32)[None, :, None, None]  # [1, T, 1, 1]
    relu = F.relu(x.float())
    return torch.cat([relu * torch.cos(angle), relu * torch.sin(angle)], dim=-1)


@register_mixer
class CosFormer(AttentionBlock):
    """cosFormer causal linear attention and an MLP, pre-norm, residual.

    Args:
        config: ``SOSMConfig`` (d_model, n_heads, mlp_ratio, dropout, max_seq_len = M, chunk_size).

    Shapes: ``forward(x [B, T, d_model], ctx) -> [B, T, d_model]`` (T <= max_seq_len).
    """

    name = "cosformer"

    def __init__(self, config, struct_dim: Optional[int] = None):
        super().__init__(config)
        self.horizon = config.max_seq_len
        self.chunk_size = config.chunk_size or 64

    def _features(self, q, k, positions, last: int):
        if last >= self.horizon:  # last: the largest position, a Python int (no device sync)
            raise ValueError(f"cosformer: position {last} is beyond max_seq_len={self.horizon} "
                             "(its re-weighting cos(π/2·(i−j)/M) needs i − j < M); accepted: positions < max_seq_len")
        return cos_sin_features(q, positions, self.horizon), cos_sin_features(k, positions, self.horizon)

    def attend(self, q, k, v, ctx: LayerContext) -> torch.Tensor:
        positions = torch.arange(q.shape[1], device=q.device)
        feat_q, feat_k = self._features(q, k, positions, q.shape[1] - 1)  # [B, T, H, 2hd]
        values = torch.cat([v.float(), v.new_ones(*v.shape[:-1], 1, dtype=torch.float32)], dim=-1)  # [B, T, H, hd+1]
        out, _ = scalar_decay_chunked(values, values.new_zeros(values.shape[:-1]), feat_k, feat_q, self.chunk_size)
        return (out[..., :-1] / out[..., -1:].clamp_min(DENOMINATOR_FLOOR)).to(q.dtype)  # [B, T, H, hd]

    def cache_and_attend(self, q, k, v, cache: dict, ctx: LayerContext) -> torch.Tensor:
        """``q, k, v [B, H, hd]``: add the new key to the sums ``[B, H, hd+1, 2hd]``, read them with ``q``."""
        if cache.get("position", 0) != ctx.position:
            raise ValueError(f"decoding position {ctx.position} does not follow the cache at {cache.get('position', 0)}")
        feat_q, feat_k = self._features(q[:, None], k[:, None], torch.tensor([ctx.position], device=q.device),
                                        ctx.position)
        values = torch.cat([v.float(), v.new_ones(*v.shape[:-1], 1, dtype=torch.float32)], dim=-1)  # [B, H, hd+1]
        state = cache.get("sums")
        if state is None:
            state = values.new_zeros(*values.shape, 2 * self.head_dim)
        out, cache["sums"] = scalar_decay_step(state, values, values.new_zeros(values.shape[:-1]), feat_k[:, 0],
                                               feat_q[:, 0])
        cache["position"] = ctx.position + 1
        return (out[..., :-1] / out[..., -1:].clamp_min(DENOMINATOR_FLOOR)).to(q.dtype)

    def attention_probs(self, x: torch.Tensor, ctx: LayerContext) -> torch.Tensor:
        """Frozen weights ``[B, H, T, T]`` (float32): the re-weighted ReLU products of ``j <= i`` over the clamped row sum."""
        q, k, _ = self._qkv(x, ctx)
        feat_q, feat_k = self._features(q, k, torch.arange(q.shape[1], device=q.device),
                                        q.shape[1] - 1)
        weights = torch.einsum("bihf,bjhf->bhij", feat_q, feat_k).tril()
        return weights / weights.sum(-1, keepdim=True).clamp_min(DENOMINATOR_FLOOR)

    def state_size(self, seq_len: int) -> int:
        """The sums: ``H · 2hd · (hd + 1)`` floats (and an MoE feed-forward's routing state), whatever T."""
        return self.n_heads * 2 * self.head_dim * (self.head_dim + 1) + self.mlp_state_size(seq_len)
