"""TopologicalMamba (``"mamba"``, alias ``"M"``): a Mamba-1 block whose step size Δ also reads the graph's structure.

Per token (pre-norm RMSNorm, residual)::

    x, z   = in_proj(norm(h))                      # [B, T, E] each, E = expand * d_model
    x      = silu(causal_depthwise_conv(x))        # width d_conv, left-padded
    dt, B, C = x_proj(x)                           # [B, T, R], [B, T, N], [B, T, N]
    Δ      = softplus(W_dt dt + W_s s + b_dt)      # s: structural encoding [B, T, S] (absent: no term)
    y      = selective_scan(x, Δ, A, B, C, D, z)   # A = -exp(A_log), S4D-real init A_log = log(1..N)
    h      = h + out_proj(y)

A token far from its predecessor in the graph can learn a large Δ (its state resets), a close
one a small Δ; without a structural encoding (the pure Mamba baseline) this is plain Mamba-1.

Forms, all equal (tested): the parallel scan ``sosm.kernels.selective_scan`` (:meth:`forward`);
one-step decoding through ``sosm.kernels.selective_state_update`` with a conv state
``[B, E, d_conv - 1]`` and an SSM state ``[B, E, N]``, O(1) per token (:meth:`step`); a window from
a carried state (:meth:`forward_carry`, long-context streaming). DePass freezes Δ, B, C, the gate
``silu(z)`` and the post-conv SiLU ratio (:meth:`linear_mode`).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...kernels import causal_conv1d, selective_scan, selective_state_update
from ..context import LayerContext
from .base import Mixer, no_weight_decay, register_mixer
from .linear import activation_ratio, norm_linear

_SCAN_CHUNK_ELEMENTS = 1 << 24  # DePass: components per selective_scan call are chunked to bound memory


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


@register_mixer
class TopologicalMamba(Mixer):
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

    name = "mamba"
    aliases = ("M",)
    reads_structure = True

    def __init__(self, config, struct_dim: Optional[int] = None):
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
        no_weight_decay(self, "A_log")  # as mamba_ssm: decay would shrink the state's decay rates
        self.out_proj = nn.Linear(inner, d, bias=False)
        self.dropout = nn.Dropout(config.dropout)
        self.reset_ssm_parameters()

    def init_parameters(self) -> None:
        """After the model's generic init: Mamba's own (:meth:`reset_ssm_parameters`)."""
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

    def allocate_cache(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> dict:
        """``conv [B, E, d_conv - 1]`` and ``ssm [B, E, N]`` (float32) states of a fresh sequence: zeros."""
        return {"conv": torch.zeros(batch_size, self.inner, self.d_conv - 1, device=device, dtype=dtype),
                "ssm": torch.zeros(batch_size, self.inner, self.d_state, device=device, dtype=torch.float32)}

    def state_size(self, seq_len: int) -> int:
        """The recurrent state, whatever the length: SSM ``E · N`` plus conv ``E · (d_conv - 1)`` floats."""
        return self.inner * (self.d_state + self.d_conv - 1)

    def forward_carry(self, x: torch.Tensor, ctx: LayerContext, cache: dict) -> torch.Tensor:
        """Run a whole window starting from ``cache`` and advance it.

        The window-to-window carry of long-context streaming (``sosm.stream``): ``cache`` holds
        the same state as one-token decoding (:meth:`step`): ``"conv"``
        ``[B, E, d_conv - 1]`` (the last conv inputs, oldest first) and ``"ssm"`` ``[B, E, N]``
        float32; missing entries mean zeros (a fresh stream). The scan runs through
        ``sosm.kernels.selective_scan`` from a zero state; the initial state's contribution is
        added in closed form, ``y_t += C_t . (exp(A * sum_{s<=t} dt_s) h_0) * silu(z_t)``, and
        the final state is ``h_T = last_state + exp(A * sum_s dt_s) h_0``, so the result equals
        feeding the window token by token through ``step`` (tested).

        Args:
            x: ``[B, T, d_model]`` residual stream of the window.
            ctx: the window's ``LayerContext`` (``structure [B, T, S]`` when the layer reads it).
            cache: dict updated in place.

        Returns:
            ``[B, T, d_model]``.

        Example:
            >>> from sosm.model import SOSMConfig
            >>> layer, cache = TopologicalMamba(SOSMConfig(d_model=32, n_heads=2, model="mamba")), {}
            >>> layer.forward_carry(torch.randn(1, 5, 32), LayerContext(), cache).shape, cache["ssm"].shape
            (torch.Size([1, 5, 32]), torch.Size([1, 64, 16]))
        """
        if x.dim() != 3:
            raise ValueError(f"x must be [B, T, d_model], got shape {tuple(x.shape)}")
        B, T, _ = x.shape
        E, width = self.inner, self.d_conv
        xs, z = self.in_proj(self.norm(x)).chunk(2, dim=-1)  # [B, T, E] each
        conv_state = cache.get("conv")
        if conv_state is None:
            conv_state = xs.new_zeros(B, E, width - 1)
        history = torch.cat([conv_state.to(xs.dtype), xs.transpose(1, 2)], dim=-1)  # [B, E, width-1+T]
        cache["conv"] = history[..., history.shape[-1] - (width - 1):]
        u = F.silu(F.conv1d(history, self.conv.weight, self.conv.bias, groups=E))  # [B, E, T]
        delta, Bm, Cm = self._ssm_inputs(u.transpose(1, 2), ctx.structure)  # [B, T, E], [B, T, N] x2
        A = -torch.exp(self.A_log.float())  # [E, N]
        with torch.autocast(x.device.type, enabled=False):
            y, last = selective_scan(u, delta.transpose(1, 2).to(u.dtype), A, Bm.transpose(1, 2), Cm.transpose(1, 2),
                                     D=self.D.float(), z=z.transpose(1, 2), delta_bias=self.dt_proj.bias.float(),
                                     delta_softplus=True, return_last_state=True)  # [B, E, T], [B, E, N]
            h0 = cache.get("ssm")
            if h0 is not None:
                dt = F.softplus(delta.float() + self.dt_proj.bias.float()).transpose(1, 2)  # [B, E, T]
                decay = torch.exp(A[None, :, None, :] * torch.cumsum(dt, dim=-1)[..., None])  # [B, E, T, N]
                carried = torch.einsum("betn,ben,bnt->bet", decay, h0.float(), Cm.float().transpose(1, 2))
                y = y.float() + carried * F.silu(z.float().transpose(1, 2))
                last = last.float() + decay[:, :, -1] * h0.float()
        cache["ssm"] = last.float()
        return x + self.out_proj(y.transpose(1, 2).to(x.dtype))  # [B, T, d_model]

    def linear_mode(self, x: torch.Tensor, xc: torch.Tensor, ctx: LayerContext, bias_index: int, router=None):
        """DePass: Δ, B, C, silu(z) and the post-conv SiLU ratio frozen; the conv bias to ``bias_index``.

        Returns ``(x_out [B, T, d], xc_out [C, B, T, d], None)`` (no attention to report).
        """
        C, B, T, d = xc.shape
        E = self.inner
        xs, z = self.in_proj(self.norm(x)).chunk(2, dim=-1)  # [B, T, E] each
        pre = self.conv(xs.transpose(1, 2))[..., :T]  # [B, E, T] real conv output
        u = F.silu(pre)
        dt, Bm, Cm = self.x_proj(u.transpose(1, 2)).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.linear(dt, self.dt_proj.weight)  # [B, T, E]
        if self.struct_proj is not None:
            delta = delta + self.struct_proj(ctx.structure)
        xs_c = F.linear(norm_linear(self.norm, x, xc), self.in_proj.weight[:E])  # [C, B, T, E]
        conv_c = F.conv1d(xs_c.reshape(C * B, T, E).transpose(1, 2), self.conv.weight, None,
                          padding=self.d_conv - 1, groups=E)[..., :T].reshape(C, B, E, T)
        if self.conv.bias is not None:
            conv_c[bias_index] += self.conv.bias[:, None]
        u_c = conv_c * activation_ratio(pre, F.silu)  # [C, B, E, T]
        frozen = (delta.transpose(1, 2), Bm.transpose(1, 2), Cm.transpose(1, 2), z.transpose(1, 2))
        per_call = max(1, _SCAN_CHUNK_ELEMENTS // max(1, B * E * T * self.d_state))
        outs = []
        for start in range(0, C, per_call):
            chunk = u_c[start: start + per_call]
            n = chunk.shape[0]
            rep = [t.expand(n, *t.shape).reshape(n * B, *t.shape[1:]) for t in frozen]
            y = selective_scan(chunk.reshape(n * B, E, T), rep[0], -torch.exp(self.A_log.float()), rep[1], rep[2],
                               D=self.D.float(), z=rep[3], delta_bias=self.dt_proj.bias.float(), delta_softplus=True)
            outs.append(y.reshape(n, B, E, T))
        y_c = torch.cat(outs).transpose(2, 3)  # [C, B, T, E]
        return self(x, ctx), xc + F.linear(y_c, self.out_proj.weight), None
