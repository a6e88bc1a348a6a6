"""TopologicalMamba: a Mamba-1 block whose step size Δ also reads the graph's structural encoding.

Per token (pre-norm RMSNorm, residual)::

    x, z   = in_proj(norm(h))                      # [B, T, E] each, E = expand * d_model
    x      = silu(causal_depthwise_conv(x))        # width d_conv, left-padded
    dt, B, C = x_proj(x)                           # [B, T, R], [B, T, N], [B, T, N]
    Δ      = softplus(W_dt dt + W_s s + b_dt)      # s: structural encoding [B, T, S] (absent: no term)
    y      = selective_scan(x, Δ, A, B, C, D, z)   # A = -exp(A_log), S4D-real init A_log = log(1..N)
    h      = h + out_proj(y)

A token far from its predecessor in the graph can learn a large Δ (its state resets), a close
one a small Δ. The scan is ``sosm.kernels.selective_scan``; one-step decoding uses
``sosm.kernels.selective_state_update`` with a conv state ``[B, E, d_conv - 1]`` and an SSM
state ``[B, E, N]``: O(1) per token.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..kernels import causal_conv1d, selective_scan, selective_state_update
from .context import LayerContext


def causal_depthwise_conv(x: torch.Tensor, conv: nn.Conv1d, activation: Optional[str] = None) -> torch.Tensor:
    """Causal depthwise ``conv`` (``groups = channels``, left context only) of ``x [B, T, E]`` -> ``[B, T, E]``.

    Through ``sosm.kernels.causal_conv1d``: cuDNN on GPUs, the native C loop on CPU (SiLU
    fused when ``activation="silu"``), shifted multiply-adds where that is unavailable.

    Example:
        >>> conv = nn.Conv1d(6, 6, 4, groups=6, padding=3)
        >>> x = torch.randn(2, 5, 6)
        >>> torch.allclose(causal_depthwise_conv(x, conv), conv(x.transpose(1, 2))[..., :5].transpose(1, 2), atol=1e-6)
        True
    """
    return causal_conv1d(x, conv.weight[:, 0, :], conv.bias, activation)


class TopologicalMamba(nn.Module):
    """Mamba-1 block with structure-aware Δ.

    Args:
        config: ``SOSMConfig`` (d_model, expand, d_state, d_conv, dt_rank, dt_min, dt_max, dropout).
        struct_dim: width S of the structural encoding, or None for a plain Mamba block.

    Shapes: ``forward(x [B, T, d_model], ctx) -> [B, T, d_model]``; ``ctx.structure [B, T, S]``.

    Example:
        >>> from sosm.model import SOSMConfig
        >>> block = TopologicalMamba(SOSMConfig(d_model=32, n_heads=2, model="mamba"), struct_dim=None)
        >>> block(torch.randn(2, 9, 32), LayerContext()).shape
        torch.Size([2, 9, 32])
    """

    def __init__(self, config, struct_dim: Optional[int]):
        super().__init__()
        d, inner, n_state = config.d_model, config.d_inner, config.d_state
        self.inner, self.d_state, self.d_conv = inner, n_state, config.d_conv
        self.dt_rank = config.resolved_dt_rank
        self.dt_min, self.dt_max = config.dt_min, config.dt_max
        self.norm = nn.RMSNorm(d, eps=1e-5)
        self.in_proj = nn.Linear(d, 2 * inner, bias=False)
        self.conv = nn.Conv1d(inner, inner, kernel_size=config.d_conv, groups=inner, padding=config.d_conv - 1)
        self.x_proj = nn.Linear(inner, self.dt_rank + 2 * n_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, inner, bias=True)
        self.struct_proj = nn.Linear(struct_dim, inner, bias=False) if struct_dim else None
        self.A_log = nn.Parameter(torch.empty(inner, n_state))
        self.D = nn.Parameter(torch.empty(inner))
        self.out_proj = nn.Linear(inner, d, bias=False)
        self.dropout = nn.Dropout(config.dropout)
        self.reset_ssm_parameters()

    @torch.no_grad()
    def reset_ssm_parameters(self) -> None:
        """Mamba's special inits: S4D-real A, D = 1, dt bias with softplus(b) ~ logUniform[dt_min, dt_max]."""
        n = torch.arange(1, self.d_state + 1, dtype=torch.float32, device=self.A_log.device)
        self.A_log.copy_(torch.log(n).expand(self.inner, -1))
        self.D.fill_(1.0)
        bound = self.dt_rank ** -0.5
        self.dt_proj.weight.uniform_(-bound, bound)
        u = torch.rand(self.inner, device=self.dt_proj.bias.device)
        dt = torch.exp(u * (math.log(self.dt_max) - math.log(self.dt_min)) + math.log(self.dt_min)).clamp_min(1e-4)
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        if self.struct_proj is not None:
            self.struct_proj.weight.normal_(0.0, 0.02)

    def _ssm_inputs(self, x: torch.Tensor, structure: Optional[torch.Tensor]):
        """``x [..., E]`` after conv -> (Δ before bias [..., E], B [..., N], C [..., N])."""
        dt, Bm, Cm = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.linear(dt, self.dt_proj.weight)  # [..., E]; bias is added inside the scan
        if self.struct_proj is not None:
            if structure is None:
                raise ValueError("TopologicalMamba with struct_dim needs ctx.structure [B, T, S]")
            delta = delta + self.struct_proj(structure)
        return delta, Bm, Cm

    def forward(self, x: torch.Tensor, ctx: LayerContext) -> torch.Tensor:
        B, T, _ = x.shape
        xs, z = self.in_proj(self.norm(x)).chunk(2, dim=-1)  # [B, T, E] each
        xs = causal_depthwise_conv(xs, self.conv, "silu")  # [B, T, E], causal: left context only
        delta, Bm, Cm = self._ssm_inputs(xs, ctx.structure)  # [B, T, E], [B, T, N] x2
        xs = xs.transpose(1, 2)  # [B, E, T] views: the scan's layout
        with torch.autocast(x.device.type, enabled=False):  # the scan manages its own precision (fp32 state)
            y = selective_scan(xs, delta.transpose(1, 2).to(xs.dtype), -torch.exp(self.A_log.float()),
                               Bm.transpose(1, 2), Cm.transpose(1, 2), D=self.D.float(), z=z.transpose(1, 2),
                               delta_bias=self.dt_proj.bias.float(), delta_softplus=True)  # [B, E, T]
        return x + self.dropout(self.out_proj(y.transpose(1, 2)))  # [B, T, d_model]

    def step(self, x: torch.Tensor, ctx: LayerContext, cache: dict) -> torch.Tensor:
        """One decoding step ``x [B, 1, d_model]``; updates ``cache`` (``conv`` [B, E, d_conv-1], ``ssm`` [B, E, N])."""
        B = x.shape[0]
        xs, z = self.in_proj(self.norm(x[:, 0])).chunk(2, dim=-1)  # [B, E] each
        conv_state = cache.get("conv")
        if conv_state is None:
            conv_state = xs.new_zeros(B, self.inner, self.d_conv - 1)
        window = torch.cat([conv_state, xs[..., None]], dim=-1)  # [B, E, d_conv], oldest first
        cache["conv"] = window[..., 1:]
        xs = F.silu((window * self.conv.weight[:, 0, :]).sum(-1) + self.conv.bias)  # [B, E]
        structure = None if ctx.structure is None else ctx.structure[:, 0]
        delta, Bm, Cm = self._ssm_inputs(xs, structure)
        ssm_state = cache.get("ssm")
        if ssm_state is None:
            ssm_state = torch.zeros(B, self.inner, self.d_state, dtype=torch.float32, device=x.device)
        y, cache["ssm"] = selective_state_update(ssm_state, xs, delta, -torch.exp(self.A_log.float()), Bm, Cm,
                                                 D=self.D.float(), z=z, delta_bias=self.dt_proj.bias.float(),
                                                 delta_softplus=True)  # [B, E]
        return x + self.out_proj(y)[:, None]  # [B, 1, d_model]
