"""Differential attention (Ye et al. 2024, "Differential Transformer"): the difference of two softmax maps.

Each head's query and key (``hd`` channels) split into two halves ``q1, q2, k1, k2`` of ``hd/2`` channels (the
halves keep the rotary pairs ``(p, p + hd/2)`` together, so both maps see relative positions). With causal
softmax maps ``P_r = softmax(q_r k_rᵀ / sqrt(hd/2))``, the head's output is

    y = RMSNorm_hd(P1 v − λ P2 v) · (1 − λ_init)
    λ = exp(λq1·λk1) − exp(λq2·λk2) + λ_init,   λ_init = 0.8 − 0.6 · exp(−0.3 · layer_index)

with learned ``λq1, λk1, λq2, λk2`` (``hd/2`` each, init N(0, 0.1²)), one RMSNorm per head (its weight shared
by the heads, as the paper's sub-layer norm), and ``layer_index`` the layer's depth in the stack (0-based; set
by :class:`~sosm.model.stack.LayerStack`, 0 for a layer built alone). The head dim must divide by 4.

Decoding keeps the full K/V cache (``2·T·d_model`` floats), like dense attention. DePass freezes the
λ-combined weights ``(P1 − λ P2)`` scaled per query and head by the RMSNorm's ``1/rms`` of the real pass and
``(1 − λ_init)`` (``[B, H, T, T]``, signed); the norm's channel weight folds into the value rows.

Example:
    >>> import torch
    >>> from sosm.model import SOSMConfig
    >>> from sosm.model.context import LayerContext
    >>> block = DifferentialAttention(SOSMConfig(d_model=32, n_heads=2, model="diff_attention"))
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
from .attention import AttentionBlock
from .base import register_mixer


def split_maps(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x [..., hd]`` -> the two maps' halves ``[..., hd/2]``: channels ``{r, hd/2 + r}`` for r < hd/4, then the rest."""
    parts = x.unflatten(-1, (2, 2, x.shape[-1] // 4))  # [..., rotary half, map, hd/4]
    return parts[..., :, 0, :].flatten(-2), parts[..., :, 1, :].flatten(-2)


@register_mixer
class DifferentialAttention(AttentionBlock):
    """Causal differential attention and an MLP, pre-norm, residual.

    Args:
        config: ``SOSMConfig`` (d_model, n_heads with head_dim divisible by 4, mlp_ratio, dropout).

    Shapes: ``forward(x [B, T, d_model], ctx) -> [B, T, d_model]``.
    """

    name = "diff_attention"

    def __init__(self, config, struct_dim: Optional[int] = None):
        super().__init__(config)
        if self.head_dim % 4:
            raise ValueError(f"diff_attention needs head_dim % 4 == 0 (two maps of hd/2 channels, rotary pairs "
                             f"kept whole), got head_dim={self.head_dim} (d_model={config.d_model}, "
                             f"n_heads={config.n_heads}); accepted: d_model / n_heads divisible by 4")
        half = self.head_dim // 2
        self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2 = (
            nn.Parameter(torch.randn(half) * 0.1) for _ in range(4))
        self.head_norm = nn.RMSNorm(self.head_dim, eps=1e-5)

    @property
    def lambda_init(self) -> float:
        """``0.8 − 0.6 · exp(−0.3 · layer_index)``."""
        return 0.8 - 0.6 * math.exp(-0.3 * self.layer_index)

    def differential_lambda(self) -> torch.Tensor:
        """λ, a float32 scalar tensor (differentiable in the four λ vectors)."""
        first = torch.exp(torch.dot(self.lambda_q1.float(), self.lambda_k1.float()))
        second = torch.exp(torch.dot(self.lambda_q2.float(), self.lambda_k2.float()))
        return first - second + self.lambda_init

    def _finish(self, combined: torch.Tensor) -> torch.Tensor:
        """Per-head RMSNorm of ``P1 v − λ P2 v`` (in float32) times ``1 − λ_init``, in ``combined``'s dtype."""
        return (self.head_norm(combined.float()) * (1.0 - self.lambda_init)).to(combined.dtype)

    def attend(self, q, k, v, ctx: LayerContext) -> torch.Tensor:
        (q1, q2), (k1, k2) = split_maps(q.transpose(1, 2)), split_maps(k.transpose(1, 2))  # [B, H, T, hd/2]
        v = v.transpose(1, 2)
        out1 = F.scaled_dot_product_attention(q1, k1, v, is_causal=True)  # [B, H, T, hd]
        out2 = F.scaled_dot_product_attention(q2, k2, v, is_causal=True)
        combined = out1 - self.differential_lambda().to(out2.dtype) * out2
        return self._finish(combined).transpose(1, 2)  # [B, T, H, hd]

    def attend_step(self, q: torch.Tensor, cache: dict, ctx: LayerContext) -> torch.Tensor:
        """``q [B, H, hd]`` over every cached key ``0..t``."""
        (q1, q2), (k1, k2) = split_maps(q.float()), split_maps(cache["k"].float())
        scale = 1.0 / math.sqrt(self.head_dim // 2)
        p1 = torch.softmax(torch.einsum("bhd,bnhd->bnh", q1, k1) * scale, dim=1)  # [B, t+1, H]
        p2 = torch.softmax(torch.einsum("bhd,bnhd->bnh", q2, k2) * scale, dim=1)
        weights = p1 - self.differential_lambda() * p2
        combined = torch.einsum("bnh,bnhd->bhd", weights, cache["v"].float())
        return self._finish(combined).to(q.dtype)  # [B, H, hd]

    def attention_maps(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two causal softmax maps ``[B, H, T, T]`` (float32) of ``q, k [B, T, H, hd]``."""
        T = q.shape[1]
        (q1, q2), (k1, k2) = split_maps(q.float()), split_maps(k.float())
        causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
        scale = 1.0 / math.sqrt(self.head_dim // 2)
        return tuple(torch.softmax((torch.einsum("bihd,bjhd->bhij", a, b) * scale).masked_fill(~causal, float("-inf")),
                                   dim=-1) for a, b in ((q1, k1), (q2, k2)))

    def attention_probs(self, x: torch.Tensor, ctx: LayerContext) -> torch.Tensor:
        """Frozen signed weights ``[B, H, T, T]``: ``(P1 − λ P2)`` times the real pass's per-head ``1/rms`` and ``1 − λ_init``."""
        q, k, v = self._qkv(x, ctx)
        p1, p2 = self.attention_maps(q, k)
        weights = p1 - self.differential_lambda().detach() * p2
        combined = torch.einsum("bhij,bjhd->bhid", weights, v.float())  # [B, H, T, hd]
        inverse_rms = torch.rsqrt(combined.pow(2).mean(-1, keepdim=True) + self.head_norm.eps)  # [B, H, T, 1]
        return weights * inverse_rms * (1.0 - self.lambda_init)

    def value_rows(self) -> torch.Tensor:
        """The value rows times the head norm's channel weight (the same for every head)."""
        return super().value_rows() * self.head_norm.weight.repeat(self.n_heads)[:, None]
