"""RetNet (``"retnet"``): multi-scale retention and an FFN, Sun et al. 2023, "Retentive Network".

Per token (pre-norm LayerNorm, residual around each half; H heads of key width d_k = d / H and
value width d_v = 2d / H, the paper's allocation)::

    X = LN(h)
    Q = (X W_Q) ⊙ Θ,  K = (X W_K) ⊙ Θ̄ / sqrt(d_k),  V = X W_V           Θ_n = e^{i n θ}
    head h, decay γ_h = 1 - 2^(-5-h):
        parallel    o = (Q K^T ⊙ D) V,  D_nm = γ^(n-m) for n >= m, else 0
        recurrent   S_n = γ S_{n-1} + K_n^T V_n,  o_n = Q_n S_n
        chunkwise   the parallel form inside a chunk, the recurrence between chunks
    o_n ← ĉ_n o_n / max(|ĉ_n Σ_m (Q K^T ⊙ D)_nm|, 1),  ĉ_n = 1 / sqrt(Σ_{i<=n} γ^i)   (the paper's normalisations)
    h = h + W_O (swish(X W_G) ⊙ GroupNorm_H(o))
    h = h + FFN(LN(h)),  FFN(x) = gelu(x W_1 + b_1) W_2 + b_2       (hidden width config.mlp_hidden; the paper: 2d)

Positions: the paper's relative rotation ``Θ_n = e^{i n θ}`` (xPos with its scaling replaced by the
decay), i.e. RoPE on Q and K at absolute positions with RoPE's frequencies ``θ_p = rope_base^(-p/P)``;
pairs are ``(p, p + d_k/2)`` (:func:`~sosm.model.positional.apply_rotary`) rather than interleaved,
the same up to a fixed permutation of the learned projections. The retention owns its positions:
it ignores ``ctx.angles``. The normalisations need no extra pass: retention of a column of ones
beside V gives ``Σ_m (Q K^T ⊙ D)_nm`` in every form, and ``ĉ_n`` depends on n only, so the three
forms stay equal (tested at odd lengths, chunks that do not divide T).

Decoding keeps ``S [B, H, d_v + 1, d_k]`` (float32, the ones column included) and the position;
:meth:`RetNet.forward_carry` carries the same. DePass freezes Q, K (so the retention weights), the
normalisations, the group norm's scale, the swish gate and the GELU ratio: the layer is then linear
in V and in the FFN's input (:meth:`RetNet.linear_mode`).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..context import LayerContext
from ..positional import apply_rotary, rope_angles
from .attention import MLP
from .base import Mixer, register_mixer
from .chunked import scalar_decay_chunked, scalar_decay_step
from .linear import activation_ratio, group_norm_linear, layer_norm_linear

FORMS = ("parallel", "chunkwise", "recurrent")

CHUNK_SIZE = 64  # chunk length when config.chunk_size is 0: the quadratic part is per head, so long chunks pay



def retention_decays(n_heads: int) -> torch.Tensor:
    """``log γ_h`` with ``γ_h = 1 - 2^(-5-h)``, ``h = 0..H-1`` (the paper's decays), ``[H]`` float32."""
    return torch.log1p(-(2.0 ** (-5.0 - torch.arange(n_heads, dtype=torch.float64)))).float()


def retention_parallel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor) -> torch.Tensor:
    """Parallel form ``(Q K^T ⊙ D) V``: ``q``, ``k`` ``[B, T, H, d_k]``, ``v [B, T, H, d_v]``, ``log_decay [H]``."""
    T = q.shape[1]
    n = torch.arange(T, device=q.device)
    gap = n[:, None] - n[None, :]  # [T, T]: n - m
    decay = torch.exp(gap.clamp_min(0) * log_decay[:, None, None]) * (gap >= 0)  # [H, T, T]: γ^(n-m), causal
    scores = torch.einsum("bihd,bjhd->bhij", q, k) * decay
    return torch.einsum("bhij,bjhd->bihd", scores, v)  # [B, T, H, d_v]


@register_mixer
class RetNet(Mixer):
    """RetNet layer: multi-scale retention (gated, group-normed) and a GELU FFN, each pre-norm with a residual.

    Args:
        config: ``SOSMConfig`` (d_model, n_heads, mlp_ratio, chunk_size, rope_base, dropout).

    Shapes: ``forward(x [B, T, d_model], ctx) -> [B, T, d_model]``.

    Example:
        >>> from sosm.model import SOSMConfig
        >>> block = RetNet(SOSMConfig(d_model=32, n_heads=2, model="retnet"))
        >>> block(torch.randn(2, 9, 32), LayerContext()).shape
        torch.Size([2, 9, 32])
    """

    name = "retnet"
    needs_mlp = True  # its block's FFN (width mlp_hidden) is part of the architecture

    def __init__(self, config, struct_dim: Optional[int] = None):
        super().__init__()
        d, H = config.d_model, config.n_heads
        self.n_heads, self.key_dim, self.value_dim = H, d // H, 2 * d // H
        self.chunk_size, self.rope_base = config.chunk_size or CHUNK_SIZE, config.rope_base
        self.norm_retention = nn.LayerNorm(d, eps=1e-5)
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, 2 * d, bias=False)
        self.g_proj = nn.Linear(d, 2 * d, bias=False)
        self.group_norm = nn.GroupNorm(H, 2 * d, eps=1e-5)
        self.out_proj = nn.Linear(2 * d, d, bias=False)
        self.norm_mlp = nn.LayerNorm(d, eps=1e-5)
        self.mlp = MLP(d, config.mlp_hidden)
        self.dropout = nn.Dropout(config.dropout)

    def _qkv(self, h: torch.Tensor, offset: int):
        """Normed ``h [B, T, d]`` at positions ``offset..`` -> rotated q, scaled rotated k ``[B, T, H, d_k]``, v."""
        b, T, _ = h.shape
        angles = rope_angles(torch.arange(offset, offset + T, device=h.device), self.key_dim, self.rope_base)
        q = apply_rotary(self.q_proj(h).view(b, T, self.n_heads, self.key_dim), angles).float()
        k = apply_rotary(self.k_proj(h).view(b, T, self.n_heads, self.key_dim), angles).float()
        k = k / math.sqrt(self.key_dim)
        return q, k, self.v_proj(h).view(b, T, self.n_heads, self.value_dim).float()

    def _normaliser(self, sums: torch.Tensor, offset: int) -> torch.Tensor:
        """``ĉ_n / max(|ĉ_n sums_n|, 1)`` ``[B, T, H, 1]`` from the retention of ones ``sums [B, T, H, 1]``."""
        log_decay = retention_decays(self.n_heads).to(sums.device)  # [H]
        n = torch.arange(offset, offset + sums.shape[1], device=sums.device, dtype=torch.float32)
        window = torch.expm1((n[:, None] + 1) * log_decay) / torch.expm1(log_decay)  # [T, H]: Σ_{i<=n} γ^i
        c = torch.rsqrt(window)[None, :, :, None]
        return c / (c * sums).abs().clamp_min(1.0)

    def retention(self, h: torch.Tensor, offset: int = 0, state: Optional[torch.Tensor] = None,
                  form: str = "chunkwise"):
        """Normalised multi-scale retention of the normed input ``h [B, T, d]`` at positions ``offset..``.

        Args:
            h: ``[B, T, d_model]`` (after the layer's LayerNorm).
            offset: position of the first token.
            state: ``[B, H, d_v + 1, d_k]`` carried state (None: zeros; the parallel form takes none).
            form: ``"parallel"``, ``"chunkwise"`` (chunks of ``config.chunk_size``, 64 by default) or ``"recurrent"``.

        Returns:
            ``(o [B, T, H, d_v] float32, final state or None for the parallel form, normaliser [B, T, H, 1])``.
        """
        if form not in FORMS:
            raise ValueError(f"form={form!r} is invalid; accepted: one of {FORMS}")
        if form == "parallel" and state is not None:
            raise ValueError("the parallel form starts from an empty state; accepted: state=None, or form "
                             "'chunkwise' / 'recurrent' to carry one")
        q, k, v = self._qkv(h, offset)
        b, T, H, _ = q.shape
        values = torch.cat([v, v.new_ones(b, T, H, 1)], dim=-1)  # the ones column gives Σ_m of the weights
        log_decay = retention_decays(H).to(h.device)
        with torch.autocast(h.device.type, enabled=False):
            if form == "parallel":
                raw = retention_parallel(q, k, values, log_decay)
            elif form == "chunkwise":
                raw, state = scalar_decay_chunked(values, log_decay.expand(b, T, H), k, q, self.chunk_size, state)
            else:
                state = (torch.zeros(b, H, self.value_dim + 1, self.key_dim, device=h.device) if state is None
                         else state.float())
                outs = []
                for t in range(T):
                    o_t, state = scalar_decay_step(state, values[:, t], log_decay.expand(b, H), k[:, t], q[:, t])
                    outs.append(o_t)
                raw = torch.stack(outs, dim=1)
            scale = self._normaliser(raw[..., -1:], offset)
        return raw[..., :-1] * scale, state, scale

    def _retention_out(self, h: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        """``W_O (swish(h W_G) ⊙ GroupNorm(o))``: ``o [B, T, H, d_v]`` -> ``[B, T, d_model]``."""
        b, T = o.shape[:2]
        y = self.group_norm(o.reshape(b * T, -1).to(h.dtype)).view(b, T, -1)
        return self.out_proj(F.silu(self.g_proj(h)) * y)

    def _block(self, x: torch.Tensor, cache: Optional[dict], offset: int, form: str) -> torch.Tensor:
        h = self.norm_retention(x)
        o, state, _ = self.retention(h, offset, None if cache is None else cache.get("state"), form)
        if cache is not None:
            cache["state"], cache["position"] = state, offset + x.shape[1]
        x = x + self.dropout(self._retention_out(h, o))
        return x + self.dropout(self.mlp(self.norm_mlp(x)))

    def forward(self, x: torch.Tensor, ctx: LayerContext) -> torch.Tensor:
        return self._block(x, None, 0, "chunkwise")  # [B, T, d_model]

    def allocate_cache(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> dict:
        """``state [B, H, d_v + 1, d_k]`` (float32, zeros) and ``position`` 0."""
        return {"state": torch.zeros(batch_size, self.n_heads, self.value_dim + 1, self.key_dim, device=device),
                "position": 0}

    def step(self, x: torch.Tensor, ctx: LayerContext, cache: dict) -> torch.Tensor:
        """One decoding step ``x [B, 1, d_model]`` at ``ctx.position`` through the recurrence; updates ``cache``."""
        return self._block(x, cache, ctx.position, "recurrent")

    def forward_carry(self, x: torch.Tensor, ctx: LayerContext, cache: dict) -> torch.Tensor:
        """A window ``x [B, T, d_model]`` (chunkwise) from the carried ``cache`` and its position, which it advances."""
        return self._block(x, cache, cache.get("position", 0), "chunkwise")

    def state_size(self, seq_len: int) -> int:
        """``H · (d_v + 1) · d_k = 2d²/H + d`` floats (the ones column's sums included), whatever the length."""
        return self.n_heads * (self.value_dim + 1) * self.key_dim

    def linear_mode(self, x: torch.Tensor, xc: torch.Tensor, ctx: LayerContext, bias_index: int, router=None):
        """DePass: Q, K, the normalisations, the group norm's scale, the swish gate and the GELU ratio frozen.

        Returns ``(x_out [B, T, d], xc_out [C, B, T, d], None)``.
        """
        C, b, T, d = xc.shape
        h = self.norm_retention(x)
        o, _, scale = self.retention(h)
        q, k, _ = self._qkv(h, 0)
        h_c = layer_norm_linear(self.norm_retention, x, xc, bias_index)
        v_c = F.linear(h_c, self.v_proj.weight).reshape(C * b, T, self.n_heads, self.value_dim).float()
        rep = [t.expand(C, *t.shape).reshape(C * b, *t.shape[1:]) for t in (q, k)]
        log_decay = retention_decays(self.n_heads).to(x.device).expand(C * b, T, self.n_heads)
        o_c, _ = scalar_decay_chunked(v_c, log_decay, rep[1], rep[0], self.chunk_size)
        o_c = o_c.reshape(C, b, T, self.n_heads, self.value_dim) * scale
        y_c = group_norm_linear(self.group_norm, o.reshape(b, T, -1), o_c.reshape(C, b, T, -1), bias_index)
        x_mid = x + self._retention_out(h, o)
        xc_mid = xc + F.linear(F.silu(self.g_proj(h)) * y_c, self.out_proj.weight)
        pre = self.mlp.fc_in(self.norm_mlp(x_mid))  # [B, T, hidden] real pre-activation
        hidden_c = F.linear(layer_norm_linear(self.norm_mlp, x_mid, xc_mid, bias_index), self.mlp.fc_in.weight)
        hidden_c[bias_index] += self.mlp.fc_in.bias
        ffn_c = F.linear(hidden_c * activation_ratio(pre, F.gelu), self.mlp.fc_out.weight)
        ffn_c[bias_index] += self.mlp.fc_out.bias
        return self(x, ctx), xc_mid + ffn_c, None
