"""Dense causal multi-head attention + MLP (the Transformer baseline), and the parts every attention mixer shares.

:class:`AttentionBlock` is pre-norm attention and an MLP with residuals: RMSNorm, one QKV
projection, rotary positions from ``ctx.angles``, an out-projection, then RMSNorm and a GELU MLP
(or, with ``SOSMConfig.moe_experts``, a mixture-of-experts feed-forward: :mod:`.moe`).
A subclass supplies how queries attend (``attend`` over a sequence, ``attend_step`` over the cache)
and its dense score matrix (``attention_scores``), from which the DePass linear mode and the frozen
probabilities follow. Mixers whose output is not a softmax over scores (linear attention, sigmoid
or differential attention) override ``attention_probs`` with their frozen per-query weights over
the values (``[B, H, T, T]``; rows need not sum to 1) and, where a per-channel factor follows the
weighted sum, ``value_rows``.

:class:`DenseAttention` (``"attention"``; aliases ``"T"``, ``"transformer"``): causal softmax
attention over every earlier position through ``F.scaled_dot_product_attention``; decoding keeps
the whole K/V cache (``2 · T · d_model`` floats per layer).

Example:
    >>> import torch
    >>> from sosm.model import SOSMConfig
    >>> from sosm.model.context import LayerContext
    >>> block = DenseAttention(SOSMConfig(d_model=32, n_heads=2, model="transformer"))
    >>> block(torch.randn(2, 5, 32), LayerContext()).shape
    torch.Size([2, 5, 32])
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..context import LayerContext
from ..positional import apply_rotary
from .base import Mixer, register_mixer
from .linear import identity_router, mlp_linear, norm_linear
from .moe import MoEFeedForward


class MLP(nn.Module):
    """``Linear(d, hidden) -> GELU -> Linear(hidden, d)``; shapes ``[..., d] -> [..., d]``."""

    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.fc_in = nn.Linear(d_model, hidden)
        self.fc_out = nn.Linear(hidden, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(F.gelu(self.fc_in(x)))

    def step(self, x: torch.Tensor, position: int, cache: dict) -> torch.Tensor:
        """Decoding: position-wise, so the forward (the MoE feed-forward that can fill this slot carries state)."""
        return self(x)

    def linear_mode(self, norm: nn.RMSNorm, x: torch.Tensor, xc: torch.Tensor, bias_index: int) -> torch.Tensor:
        """DePass components ``[C, B, T, d]`` of ``self(norm(x))``."""
        return mlp_linear(self, norm, x, xc, bias_index)

    def state_size(self, seq_len: int) -> int:
        return 0


class AttentionBlock(Mixer):
    """Shared parts of the attention mixers: pre-norm, QKV, rotary positions, out-projection, MLP.

    Subclasses implement ``attend(q, k, v, ctx) -> [B, T, H, d]``, ``attend_step(q [B, H, d],
    cache, ctx) -> [B, H, d]`` and ``attention_scores(q, k, ctx) -> [B, H, T, T]`` (float32,
    ``-inf`` where a query may not attend: the dense form DePass freezes).
    """

    has_feed_forward = True

    def __init__(self, config, struct_dim: Optional[int] = None):
        super().__init__()
        d = config.d_model
        self.n_heads, self.head_dim = config.n_heads, config.head_dim
        self.causal = config.causal  # False: a bidirectional model (queries read every position)
        self.norm_attn = nn.RMSNorm(d, eps=1e-5)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.out_proj = nn.Linear(d, d, bias=False)
        if config.moe_experts:  # the MLP slot as a mixture of experts
            self.norm_mlp, self.mlp = nn.RMSNorm(d, eps=1e-5), MoEFeedForward.from_config(config)
        elif config.mlp_hidden:
            self.norm_mlp, self.mlp = nn.RMSNorm(d, eps=1e-5), MLP(d, config.mlp_hidden)
        else:  # mlp_ratio=0: attention only (Zoology's MQAR models)
            self.norm_mlp = self.mlp = None
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
        if not self.causal:
            raise NotImplementedError(f"mixer {self.name!r} is built bidirectional (causal=False): a query reads later "
                                      "positions, so it has no one-token-at-a-time step")
        B, _, d = x.shape
        q, k, v = self._qkv(x, ctx)  # [B, 1, H, d]
        t = ctx.position
        y = self.cache_and_attend(q[:, 0], k[:, 0], v[:, 0], cache, ctx).reshape(B, 1, d)  # [B, 1, d_model]
        x = x + self.out_proj(y)
        return x if self.mlp is None else x + self.mlp.step(self.norm_mlp(x), t, cache.setdefault("mlp", {}))

    def cache_and_attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: dict,
                         ctx: LayerContext) -> torch.Tensor:
        """Decoding: store the new ``k, v [B, H, d]`` in ``cache``, then ``attend_step(q [B, H, d])`` -> ``[B, H, d]``.

        Default: append to the full K/V cache. Mixers with another state (running sums, a rolling window) override it.
        """
        t = ctx.position
        if "k" not in cache:
            cache["k"] = k.new_zeros(k.shape[0], 0, self.n_heads, self.head_dim)
            cache["v"] = v.new_zeros(v.shape[0], 0, self.n_heads, self.head_dim)
        if cache["k"].shape[1] != t:
            raise ValueError(f"decoding position {t} does not follow the cache of length {cache['k'].shape[1]}")
        cache["k"] = torch.cat([cache["k"], k[:, None]], dim=1)  # [B, t+1, H, d]
        cache["v"] = torch.cat([cache["v"], v[:, None]], dim=1)
        return self.attend_step(q, cache, ctx)

    def mlp_state_size(self, seq_len: int) -> int:
        """Decoding state of the MLP slot (an MoE feed-forward's routing state; 0 for a dense MLP or none)."""
        return 0 if self.mlp is None else self.mlp.state_size(seq_len)

    def state_size(self, seq_len: int) -> int:
        """The K/V cache: ``2 · seq_len · d_model`` floats (and an MoE feed-forward's routing state)."""
        return 2 * seq_len * self.n_heads * self.head_dim + self.mlp_state_size(seq_len)

    def attention_probs(self, x: torch.Tensor, ctx: LayerContext) -> torch.Tensor:
        """Attention probabilities ``[B, H, T, T]`` (float32) of the real input ``x [B, T, d]`` (dense; for analysis)."""
        q, k, _ = self._qkv(x, ctx)  # [B, T, H, hd]
        return torch.softmax(self.attention_scores(q, k, ctx), dim=-1)

    def value_rows(self) -> torch.Tensor:
        """The ``[d_model, d_model]`` rows of the value projection (``[H, hd]`` layout) the frozen weights act on."""
        d = self.n_heads * self.head_dim
        return self.qkv.weight[2 * d: 3 * d]

    def linear_mode(self, x: torch.Tensor, xc: torch.Tensor, ctx: LayerContext, bias_index: int,
                    router=None, probs: Optional[torch.Tensor] = None):
        """DePass: attention probabilities, norm scales and the GELU ratio frozen (see :class:`Mixer`)."""
        C, B, T, d = xc.shape
        H, hd = self.n_heads, self.head_dim
        probs = self.attention_probs(x, ctx) if probs is None else probs
        values = F.linear(norm_linear(self.norm_attn, x, xc), self.value_rows()).view(C, B, T, H, hd)
        attended = (router or identity_router)(probs, values).reshape(C, B, T, d)
        xc_mid = xc + F.linear(attended, self.out_proj.weight)
        x_mid = x + self.out_proj(torch.einsum("bhij,bjhd->bihd", probs, values.sum(0)).reshape(B, T, d))
        if self.mlp is None:  # mlp_ratio=0: attention only
            return self(x, ctx), xc_mid, probs
        return self(x, ctx), xc_mid + self.mlp.linear_mode(self.norm_mlp, x_mid, xc_mid, bias_index), probs


@register_mixer
class DenseAttention(AttentionBlock):
    """Causal dense multi-head attention and an MLP, pre-norm, residual (the Transformer's layer).

    In a bidirectional model (``SOSMConfig.causal=False``) every query reads every position.

    Args:
        config: ``SOSMConfig`` (d_model, n_heads, mlp_ratio, dropout).

    Shapes: ``forward(x [B, T, d_model], ctx) -> [B, T, d_model]`` (``ctx.angles``: RoPE or None).
    """

    name = "attention"
    aliases = ("T", "transformer")
    bidirectional_capable = True

    def attend(self, q, k, v, ctx: LayerContext) -> torch.Tensor:
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           is_causal=self.causal)  # [B, H, T, d]
        return y.transpose(1, 2)  # [B, T, H, d]

    def attend_step(self, q: torch.Tensor, cache: dict, ctx: LayerContext) -> torch.Tensor:
        """``q [B, H, d]`` over every cached key ``0..t``."""
        scores = torch.einsum("bhd,bnhd->bnh", q.float(), cache["k"].float()) / self.head_dim ** 0.5  # [B, t+1, H]
        probs = torch.softmax(scores, dim=1)
        return torch.einsum("bnh,bnhd->bhd", probs, cache["v"].float()).to(q.dtype)  # [B, H, d]

    def attention_scores(self, q: torch.Tensor, k: torch.Tensor, ctx: LayerContext) -> torch.Tensor:
        """Dense scores ``[B, H, T, T]``: ``q . k / sqrt(d)``, ``-inf`` above the diagonal (causal models)."""
        T = q.shape[1]
        scores = torch.einsum("bihd,bjhd->bhij", q.float(), k.float()) / math.sqrt(self.head_dim)
        if not self.causal:
            return scores
        causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
        return scores.masked_fill(~causal, float("-inf"))
