"""Mamba-2 (``"mamba2"``): the SSD layer of Dao & Gu 2024, "Transformers are SSMs".

Per token (pre-norm RMSNorm, residual; E = expand · d_model, H heads of P = E / H channels,
G groups of heads sharing B and C, state size N)::

    z, xBC, dt = in_proj(norm(h))                   # [B, T, E], [B, T, E + 2GN], [B, T, H]
    x, B, C    = silu(causal_depthwise_conv(xBC))   # one depthwise conv (width d_conv) over x, B and C
    Δ          = softplus(dt + dt_bias)             # [B, T, H]
    per head (A = -exp(A_log) a scalar: A·I, the SSD restriction of Mamba-1's diagonal A):
        S_t = exp(Δ_t A) S_{t-1} + Δ_t x_t B_t^T     # S [P, N]
        y_t = S_t C_t + D x_t
    y          = RMSNorm_per_group(y · silu(z))     # gated RMSNorm (norm after the gate), one group per B/C group
    h          = h + out_proj(y)

Forms, all equal (tested at odd lengths, chunks that do not divide T): the chunked SSD form
(:func:`~sosm.model.mixers.chunked.scalar_decay_chunked`: quadratic inside a chunk of
``config.chunk_size`` steps, 64 by default; the state passed between chunks; one chunk is the parallel form) in
:meth:`Mamba2.forward`; the recurrence one token at a time from a conv state ``[B, E + 2GN, d_conv - 1]``
and an SSM state ``[B, H, P, N]`` (:meth:`Mamba2.step`); a window from a carried state
(:meth:`Mamba2.forward_carry`). DePass freezes Δ, B, C, the gate ``silu(z)``, the post-conv SiLU
ratio of x and the gated norm's scale: the layer is then linear in x (:meth:`Mamba2.linear_mode`).

Initialisation as Mamba-2: ``A = -U[1, 16]`` per head, ``D = 1``, ``dt_bias`` with
``softplus(dt_bias) ~ logUniform[dt_min, dt_max]`` (floor 1e-4).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..context import LayerContext
from .base import Mixer, register_mixer
from .chunked import scalar_decay_chunked, scalar_decay_step
from .linear import activation_ratio, norm_linear
from .mamba import causal_depthwise_conv

CHUNK_SIZE = 64  # chunk length when config.chunk_size is 0: the SSD's quadratic part is per head, so long chunks pay



@register_mixer
class Mamba2(Mixer):
    """Mamba-2 block: the SSD layer with scalar-times-identity A per head.

    Args:
        config: ``SOSMConfig`` (d_model, expand, n_heads, d_state, mamba2_groups, d_conv, chunk_size,
            dt_min, dt_max, dropout).

    Shapes: ``forward(x [B, T, d_model], ctx) -> [B, T, d_model]``.

    Example:
        >>> from sosm.model import SOSMConfig
        >>> block = Mamba2(SOSMConfig(d_model=32, n_heads=2, model="mamba2"))
        >>> block(torch.randn(2, 9, 32), LayerContext()).shape
        torch.Size([2, 9, 32])
    """

    name = "mamba2"

    def __init__(self, config, struct_dim: Optional[int] = None):
        super().__init__()
        d = config.d_model
        self.inner, self.n_heads, self.d_state = config.d_inner, config.n_heads, config.d_state
        self.head_dim = self.inner // self.n_heads
        self.n_groups, self.d_conv = config.mamba2_groups, config.d_conv
        self.chunk_size = config.chunk_size or CHUNK_SIZE
        self.dt_min, self.dt_max = config.dt_min, config.dt_max
        self.conv_dim = self.inner + 2 * self.n_groups * self.d_state
        self.norm = nn.RMSNorm(d, eps=1e-5)
        self.in_proj = nn.Linear(d, self.inner + self.conv_dim + self.n_heads, bias=False)
        self.conv = nn.Conv1d(self.conv_dim, self.conv_dim, kernel_size=self.d_conv, groups=self.conv_dim,
                              padding=self.d_conv - 1)
        self.dt_bias = nn.Parameter(torch.empty(self.n_heads))
        self.A_log = nn.Parameter(torch.empty(self.n_heads))
        self.D = nn.Parameter(torch.empty(self.n_heads))
        self.gate_norm_weight = nn.Parameter(torch.ones(self.inner))
        self.out_proj = nn.Linear(self.inner, d, bias=False)
        self.dropout = nn.Dropout(config.dropout)
        self.reset_ssm_parameters()

    def init_parameters(self) -> None:
        """After the model's generic init: Mamba-2's own (:meth:`reset_ssm_parameters`)."""
        self.reset_ssm_parameters()

    @torch.no_grad()
    def reset_ssm_parameters(self) -> None:
        """``A_log = log U[1, 16]``, ``D = 1``, ``softplus(dt_bias) ~ logUniform[dt_min, dt_max]``, norm weight 1."""
        self.A_log.copy_(torch.log(torch.empty_like(self.A_log).uniform_(1.0, 16.0)))
        self.D.fill_(1.0)
        u = torch.rand_like(self.dt_bias)
        dt = torch.exp(u * (math.log(self.dt_max) - math.log(self.dt_min)) + math.log(self.dt_min)).clamp_min(1e-4)
        self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.gate_norm_weight.fill_(1.0)

    def _split(self, h: torch.Tensor):
        """``norm(x) [..., d]`` -> ``(z [..., E], xBC [..., E + 2GN], dt [..., H])``."""
        return self.in_proj(h).split([self.inner, self.conv_dim, self.n_heads], dim=-1)

    def _ssm_inputs(self, xBC: torch.Tensor, dt: torch.Tensor):
        """Post-conv ``xBC [B, T, E + 2GN]``, ``dt [B, T, H]`` -> (x [B,T,H,P], Δ [B,T,H], B, C [B,T,G,N]) in float32.

        Head h reads B/C group ``h // (H / G)``.
        """
        b, T, _ = xBC.shape
        x, Bm, Cm = xBC.float().split([self.inner, self.n_groups * self.d_state, self.n_groups * self.d_state], -1)
        Bm, Cm = Bm.view(b, T, self.n_groups, self.d_state), Cm.view(b, T, self.n_groups, self.d_state)
        delta = F.softplus(dt.float() + self.dt_bias.float())  # [B, T, H]
        return x.view(b, T, self.n_heads, self.head_dim), delta, Bm, Cm

    def _gated_norm(self, y: torch.Tensor, z: torch.Tensor, scale: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``RMSNorm_per_group(y · silu(z)) · weight`` of ``y``, ``z`` ``[..., E]`` (``scale``: frozen, per group)."""
        gated = (y * F.silu(z.float())).unflatten(-1, (self.n_groups, -1))  # [..., G, E/G]
        if scale is None:
            scale = self._norm_scale(gated)
        return (gated * scale).flatten(-2) * self.gate_norm_weight

    @staticmethod
    def _norm_scale(gated: torch.Tensor) -> torch.Tensor:
        return torch.rsqrt(gated.pow(2).mean(-1, keepdim=True) + 1e-5)  # [..., G, 1]

    def _scan(self, xBC: torch.Tensor, dt: torch.Tensor, initial_state: Optional[torch.Tensor] = None):
        """Chunked SSD over post-conv ``xBC``: ``(y [B, T, E] float32 before the gate, final state [B, H, P, N])``."""
        x, delta, Bm, Cm = self._ssm_inputs(xBC, dt)
        A = -torch.exp(self.A_log.float())  # [H]
        y, state = scalar_decay_chunked(x * delta[..., None], delta * A, Bm, Cm, self.chunk_size, initial_state)
        y = y + x * self.D.float()[:, None]  # [B, T, H, P]
        return y.flatten(-2), state

    def forward(self, x: torch.Tensor, ctx: LayerContext) -> torch.Tensor:
        z, xBC, dt = self._split(self.norm(x))  # [B, T, E], [B, T, E + 2GN], [B, T, H]
        xBC = causal_depthwise_conv(xBC, self.conv, "silu")  # causal: left context only
        with torch.autocast(x.device.type, enabled=False):  # the scan runs in float32
            y, _ = self._scan(xBC, dt)
            y = self._gated_norm(y, z)
        return x + self.dropout(self.out_proj(y.to(x.dtype)))  # [B, T, d_model]

    def allocate_cache(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> dict:
        """Zeros: ``conv [B, E + 2GN, d_conv - 1]`` (last conv inputs, oldest first), ``ssm [B, H, P, N]`` float32."""
        return {"conv": torch.zeros(batch_size, self.conv_dim, self.d_conv - 1, device=device, dtype=dtype),
                "ssm": torch.zeros(batch_size, self.n_heads, self.head_dim, self.d_state, device=device,
                                   dtype=torch.float32)}

    def step(self, x: torch.Tensor, ctx: LayerContext, cache: dict) -> torch.Tensor:
        """One decoding step ``x [B, 1, d_model]`` through the recurrence; updates ``cache`` in place."""
        b = x.shape[0]
        z, xBC, dt = self._split(self.norm(x))  # [B, 1, ...]
        conv_state = cache.get("conv")
        if conv_state is None:
            conv_state = xBC.new_zeros(b, self.conv_dim, self.d_conv - 1)
        window = torch.cat([conv_state.to(xBC.dtype), xBC.transpose(1, 2)], dim=-1)  # [B, E + 2GN, d_conv]
        cache["conv"] = window[..., 1:]
        xBC = F.silu((window * self.conv.weight[:, 0, :]).sum(-1) + self.conv.bias)[:, None]  # [B, 1, E + 2GN]
        xs, delta, Bm, Cm = self._ssm_inputs(xBC, dt)
        state = cache.get("ssm")
        if state is None:
            state = torch.zeros(b, self.n_heads, self.head_dim, self.d_state, device=x.device)
        A = -torch.exp(self.A_log.float())
        y, cache["ssm"] = scalar_decay_step(state.float(), xs[:, 0] * delta[:, 0, :, None], delta[:, 0] * A,
                                            Bm[:, 0], Cm[:, 0])  # [B, H, P]
        y = (y + xs[:, 0] * self.D.float()[:, None]).flatten(-2)[:, None]  # [B, 1, E]
        return x + self.out_proj(self._gated_norm(y, z).to(x.dtype))

    def forward_carry(self, x: torch.Tensor, ctx: LayerContext, cache: dict) -> torch.Tensor:
        """A window ``x [B, T, d_model]`` from the carried ``cache`` (as :meth:`step`'s), which it advances.

        Equal to feeding the window token by token through :meth:`step` (tested); missing
        entries mean a fresh stream.
        """
        b, T, _ = x.shape
        z, xBC, dt = self._split(self.norm(x))
        conv_state = cache.get("conv")
        if conv_state is None:
            conv_state = xBC.new_zeros(b, self.conv_dim, self.d_conv - 1)
        history = torch.cat([conv_state.to(xBC.dtype), xBC.transpose(1, 2)], dim=-1)  # [B, E + 2GN, d_conv - 1 + T]
        cache["conv"] = history[..., history.shape[-1] - (self.d_conv - 1):]
        xBC = F.silu(F.conv1d(history, self.conv.weight, self.conv.bias, groups=self.conv_dim)).transpose(1, 2)
        with torch.autocast(x.device.type, enabled=False):
            y, cache["ssm"] = self._scan(xBC, dt, cache.get("ssm"))
            y = self._gated_norm(y, z)
        return x + self.out_proj(y.to(x.dtype))

    def state_size(self, seq_len: int) -> int:
        """The recurrent state, whatever the length: SSM ``H · P · N = E · N``, conv ``(E + 2GN)(d_conv - 1)``."""
        return self.inner * self.d_state + self.conv_dim * (self.d_conv - 1)

    def linear_mode(self, x: torch.Tensor, xc: torch.Tensor, ctx: LayerContext, bias_index: int, router=None):
        """DePass: Δ, B, C, ``silu(z)``, the SiLU ratio of the conv's x channels and the gated norm's scale frozen.

        Only x (the SSM's input) carries the components; the conv bias of the x channels goes to
        ``bias_index``. Returns ``(x_out [B, T, d], xc_out [C, B, T, d], None)``.
        """
        C, b, T, d = xc.shape
        E = self.inner
        h = self.norm(x)
        z, xBC_in, dt = self._split(h)
        pre = self.conv(xBC_in.transpose(1, 2))[..., :T]  # [B, E + 2GN, T] real conv output
        xBC = F.silu(pre).transpose(1, 2)  # [B, T, E + 2GN]
        _, delta, Bm, Cm = self._ssm_inputs(xBC, dt)
        y_real, _ = self._scan(xBC, dt)
        scale = self._norm_scale((y_real * F.silu(z.float())).unflatten(-1, (self.n_groups, -1)))
        x_in = F.linear(norm_linear(self.norm, x, xc), self.in_proj.weight[E: 2 * E])  # [C, B, T, E]
        conv_c = F.conv1d(x_in.reshape(C * b, T, E).transpose(1, 2), self.conv.weight[:E], None,
                          padding=self.d_conv - 1, groups=E)[..., :T].reshape(C, b, E, T)
        if self.conv.bias is not None:
            conv_c[bias_index] += self.conv.bias[:E, None]
        u_c = (conv_c * activation_ratio(pre[:, :E], F.silu)).transpose(2, 3)  # [C, B, T, E]
        u_c = u_c.reshape(C * b, T, self.n_heads, self.head_dim)
        rep = [t.expand(C, *t.shape).reshape(C * b, *t.shape[1:]) for t in (delta, Bm, Cm)]
        A = -torch.exp(self.A_log.float())
        y_c, _ = scalar_decay_chunked(u_c * rep[0][..., None], rep[0] * A, rep[1], rep[2], self.chunk_size)
        y_c = (y_c + u_c * self.D.float()[:, None]).reshape(C, b, T, E)
        out_c = F.linear(self._gated_norm(y_c, z, scale), self.out_proj.weight)  # [C, B, T, d]
        return self(x, ctx), xc + out_c, None
