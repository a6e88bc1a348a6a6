"""RWKV-6 "Finch" (``"rwkv"``, alias ``"rwkv6"``): Peng et al. 2024, "Eagle and Finch", time mix + channel mix.

Version 6 because its decay is data-dependent (like Mamba's Δ), which puts it beside the
selective SSMs of this zoo; RWKV-5 "Eagle" is this layer with a constant decay per channel.
Per token (pre-norm LayerNorm before each half, residual around each; H heads of N = d / H)::

    time mix (x = ln1(h), x' = the previous token's, zeros before the first):
        ddlerp_□ = x + (x' - x) ⊙ (μ_□ + tanh((x + (x' - x) ⊙ μ_x) A_mix) B_mix,□)     □ ∈ {w,k,v,r,g}
        r, k, v  = W_r ddlerp_r, W_k ddlerp_k, W_v ddlerp_v ;  g = silu(W_g ddlerp_g)
        w        = exp(-exp(d + tanh(ddlerp_w A_w) B_w))            # per-channel decay in (0, 1), data-dependent
        per head, state S [N, N]:
            o_t = r_t (S_{t-1} + diag(u) k_t^T v_t)                 # u: the bonus of the current token
            S_t = diag(w_t) S_{t-1} + k_t^T v_t
        h = h + W_o (GroupNorm_H(o) ⊙ g)
    channel mix (x = ln2(h)):
        h = h + sigmoid(W_r' (x + (x' - x) ⊙ μ_r')) ⊙ W_v' relu(W_k' (x + (x' - x) ⊙ μ_k'))²

The channel mix is RWKV's own FFN (hidden width ``config.mlp_hidden``; the paper uses 3.5 d), so
the layer has no separate MLP. LoRA widths 32 (token-shift mix) and 64 (decay), as the paper's
models below 4096 channels, from d_model = 128 up; narrower layers take d / 4 and d / 2 (so that
parameters grow as d², and a parameter-matched width exists).

Forms, all equal (tested at odd lengths, chunks that do not divide T): the chunked form
(:func:`wkv6_chunked`: quadratic inside a chunk of ``config.chunk_size`` steps, 16 by default; the state passed
between chunks; one chunk is the parallel form) in :meth:`RWKV6.forward`; the recurrence
(:func:`wkv6_step`) one token at a time from the two token-shift states ``[B, d]`` and the WKV
state ``[B, H, N, N]`` (:meth:`RWKV6.step`); a window from a carried state
(:meth:`RWKV6.forward_carry`). DePass freezes r, k, w, the gate g, the data-dependent mix
coefficients, the norms' scales, the squared-ReLU ratio and the channel mix's receptance: the
layer is then linear in v and in the channel mix's key input (:meth:`RWKV6.linear_mode`).

Initialisation as the paper's code (RWKV-LM ``RWKV_Tmix_x060``), with one deviation: the mixer
does not know its depth, so every layer takes the init of the middle of the stack
(``layer / (n_layers - 1) = 0.5`` and ``1 - layer / n_layers = 0.5``).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..context import LayerContext
from .base import Mixer, no_weight_decay, register_mixer
from .linear import group_norm_linear, layer_norm_linear

LORA_MIX = 32     # width of the token-shift mix LoRA (five mixes: w, k, v, r, g); min(32, d / 4)
LORA_DECAY = 64   # width of the decay LoRA; min(64, d / 2)
DEPTH_RATIO = 0.5  # the paper's layer / (n_layers - 1) and 1 - layer / n_layers at mid depth
CHUNK_SIZE = 16   # chunk length when config.chunk_size is 0: the quadratic part is per channel (O(T L d))


def wkv6_chunked(r: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_w: torch.Tensor, bonus: torch.Tensor,
                 chunk_size: int, initial_state: Optional[torch.Tensor] = None):
    """RWKV-6's WKV in chunks: ``o_t = r_t (S_{t-1} + diag(u) k_t^T v_t)``, ``S_t = diag(w_t) S_{t-1} + k_t^T v_t``.

    Inside a chunk, ``o_i = Σ_{j<i} (Σ_c r_ic k_jc Π_{j<s<i} w_sc) v_j + (r_i · u ⊙ k_i) v_i`` plus the
    carried state's ``(r_i ⊙ Π_{s<i} w_s) S``. The decay is per channel, so the first term costs
    ``O(T · L · d)`` (a ``[L, L, N]`` tensor per chunk and head): small chunks (16) suit it. Its
    exponents are differences of float64 prefix sums (exact to float32 however strong the decays
    before them); the state between chunks uses sums from the chunk's ends only.

    Args:
        r, k, log_w: ``[B, T, H, N]`` receptance, key and log decay (``log w <= 0``).
        v: ``[B, T, H, V]``.
        bonus: ``[H, N]`` (u).
        chunk_size: chunk length L (any value >= 1).
        initial_state: ``[B, H, N, V]`` (None: zeros).

    Returns:
        ``(o [B, T, H, V], final state [B, H, N, V])``.
    """
    b, T, H, N = r.shape
    V = v.shape[-1]
    L = max(1, min(chunk_size, T))
    n = -(-T // L)
    pad = n * L - T
    if pad:  # padded steps: k = v = 0 and w = 1, so the final state is unchanged
        r, k, v, log_w = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (r, k, v, log_w))
    r, k, log_w = (t.reshape(b, n, L, H, N).transpose(2, 3) for t in (r, k, log_w))  # [b, n, H, L, N]
    v = v.reshape(b, n, L, H, V).transpose(2, 3)  # [b, n, H, L, V]
    through = torch.cumsum(log_w.double(), dim=-2)  # Σ_{s<=i} in float64
    between = (through - log_w.double())[..., :, None, :] - through[..., None, :, :]  # [.., i, j, N]: Σ_{j<s<i}
    below = torch.ones(L, L, dtype=torch.bool, device=r.device).tril(-1)[:, :, None]  # j < i
    decay = torch.exp(between.float().masked_fill(~below, float("-inf")))  # [b, n, H, L, L, N]
    scores = torch.einsum("...in,...ijn->...ij", r, decay * k[..., None, :, :])  # strictly below the diagonal
    current = (r * bonus[:, None] * k).sum(-1, keepdim=True)  # [b, n, H, L, 1]: the current token's bonus term
    o = scores @ v + current * v
    prefix = torch.cumsum(log_w, dim=-2)  # from the chunk's start: Σ_{s<=i}
    before = torch.exp(F.pad(prefix[..., :-1, :], (0, 0, 1, 0)))  # Π_{s<i} w_s
    suffix = torch.flip(torch.cumsum(torch.flip(log_w, [-2]), dim=-2), [-2])  # to the chunk's end: Σ_{s>=j}
    after = torch.exp(F.pad(suffix[..., 1:, :], (0, 0, 0, 1)))  # Π_{s>j} w_s
    chunk_states = (k * after).transpose(-1, -2) @ v  # [b, n, H, N, V] from a zero state
    total = torch.exp(prefix[..., -1, :, None])  # [b, n, H, N, 1]
    state = r.new_zeros(b, H, N, V) if initial_state is None else initial_state.to(r.dtype)
    starts = []
    for c in range(n):  # the recurrence between chunks
        starts.append(state)
        state = total[:, c] * state + chunk_states[:, c]
    o = o + (r * before) @ torch.stack(starts, dim=1)
    return o.transpose(2, 3).reshape(b, n * L, H, V)[:, :T], state


def wkv6_step(state: torch.Tensor, r: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_w: torch.Tensor,
              bonus: torch.Tensor):
    """One step: ``state [B, H, N, V]``, ``r``/``k``/``log_w [B, H, N]``, ``v [B, H, V]``, ``bonus [H, N]``.

    Returns ``(o [B, H, V], new state)``.
    """
    kv = k[..., :, None] * v[..., None, :]  # [B, H, N, V]
    o = torch.einsum("bhn,bhnv->bhv", r, state + bonus[..., None] * kv)
    return o, torch.exp(log_w)[..., None] * state + kv


def _shift(x: torch.Tensor, last: Optional[torch.Tensor]) -> torch.Tensor:
    """The previous token's ``x [..., T, d]`` (``last [..., d]`` before the first; None: zeros)."""
    first = torch.zeros_like(x[..., :1, :]) if last is None else last[..., None, :].to(x.dtype)
    return torch.cat([first, x[..., :-1, :]], dim=-2)


@register_mixer
class RWKV6(Mixer):
    """RWKV-6 "Finch" layer: time mix (data-dependent decay, bonus) and channel mix, each pre-norm with a residual.

    Args:
        config: ``SOSMConfig`` (d_model, n_heads, mlp_ratio, chunk_size, dropout).

    Shapes: ``forward(x [B, T, d_model], ctx) -> [B, T, d_model]``.

    Example:
        >>> from sosm.model import SOSMConfig
        >>> block = RWKV6(SOSMConfig(d_model=32, n_heads=2, model="rwkv"))
        >>> block(torch.randn(2, 9, 32), LayerContext()).shape
        torch.Size([2, 9, 32])
    """

    name = "rwkv"
    needs_mlp = True  # its block's FFN (width mlp_hidden) is part of the architecture
    aliases = ("rwkv6",)

    def __init__(self, config, struct_dim: Optional[int] = None):
        super().__init__()
        d, H = config.d_model, config.n_heads
        self.d_model, self.n_heads, self.head_dim = d, H, d // H
        self.chunk_size = config.chunk_size or CHUNK_SIZE
        self.lora_mix, lora_decay = max(1, min(LORA_MIX, d // 4)), max(1, min(LORA_DECAY, d // 2))
        self.norm_time = nn.LayerNorm(d, eps=1e-5)
        self.time_maa_x = nn.Parameter(torch.empty(d))
        # per-channel vectors stay 1-D (no weight decay, as the paper's code)
        self.time_maa_w, self.time_maa_k, self.time_maa_v, self.time_maa_r, self.time_maa_g = (
            nn.Parameter(torch.empty(d)) for _ in range(5))
        self.time_maa_w1 = nn.Parameter(torch.empty(d, 5 * self.lora_mix))
        self.time_maa_w2 = nn.Parameter(torch.empty(5, self.lora_mix, d))
        self.time_decay = nn.Parameter(torch.empty(d))
        self.time_decay_w1 = nn.Parameter(torch.empty(d, lora_decay))
        self.time_decay_w2 = nn.Parameter(torch.empty(lora_decay, d))
        no_weight_decay(self, "time_maa_w1", "time_maa_w2", "time_decay_w1", "time_decay_w2")  # as RWKV-6
        self.time_bonus = nn.Parameter(torch.empty(d))  # u, [H * N]
        self.receptance = nn.Linear(d, d, bias=False)
        self.key = nn.Linear(d, d, bias=False)
        self.value = nn.Linear(d, d, bias=False)
        self.gate = nn.Linear(d, d, bias=False)
        self.out_proj = nn.Linear(d, d, bias=False)
        self.ln_x = nn.GroupNorm(H, d, eps=1e-5 * 8 ** 2)  # eps as the paper's code (head_size_divisor 8)
        self.norm_channel = nn.LayerNorm(d, eps=1e-5)
        self.channel_maa_k, self.channel_maa_r = nn.Parameter(torch.empty(d)), nn.Parameter(torch.empty(d))
        self.ffn_key = nn.Linear(d, config.mlp_hidden, bias=False)
        self.ffn_receptance = nn.Linear(d, d, bias=False)
        self.fc_out = nn.Linear(config.mlp_hidden, d, bias=False)  # W_v' (named for the residual-output init)
        self.dropout = nn.Dropout(config.dropout)
        self.reset_rwkv_parameters()

    def init_parameters(self) -> None:
        """After the model's generic init: RWKV-6's own (:meth:`reset_rwkv_parameters`)."""
        self.reset_rwkv_parameters()

    @torch.no_grad()
    def reset_rwkv_parameters(self) -> None:
        """The paper code's init of the mixes, decays and bonus (at mid depth; see the module docstring)."""
        d = self.d_model
        r01, r10 = DEPTH_RATIO, DEPTH_RATIO
        ddd = torch.arange(d, dtype=torch.float32) / d
        channel = torch.arange(d, dtype=torch.float32) / (d - 1)
        self.time_maa_x.copy_(1.0 - ddd ** r10)
        for mix, value in zip(self._time_mixes(), (1.0 - ddd ** r10, 1.0 - ddd ** r10, 1.0 - (ddd ** r10 + 0.3 * r01),
                                                   1.0 - ddd ** (0.5 * r10), 1.0 - ddd ** (0.5 * r10))):
            mix.copy_(value)
        self.time_maa_w1.zero_()
        self.time_maa_w2.uniform_(-0.01, 0.01)
        self.time_decay.copy_(-6.0 + 5.0 * channel ** (0.7 + 1.3 * r01))
        self.time_decay_w1.zero_()
        self.time_decay_w2.uniform_(-0.01, 0.01)
        zigzag = ((torch.arange(d) + 1) % 3 - 1).float() * 0.1
        self.time_bonus.copy_(r01 * (1.0 - channel) + zigzag)
        self.channel_maa_k.copy_(1.0 - ddd ** r10)
        self.channel_maa_r.copy_(1.0 - ddd ** r10)

    def _time_mixes(self) -> tuple:
        return self.time_maa_w, self.time_maa_k, self.time_maa_v, self.time_maa_r, self.time_maa_g

    def _time_inputs(self, xn: torch.Tensor, previous: torch.Tensor):
        """``(xr, xk, xv, xg, log w, mix)`` of the normed input ``xn [..., T, d]`` and its shifted copy.

        ``mix [..., T, 5, d]`` are the data-dependent interpolation weights μ_□ + LoRA_□ (w, k, v, r, g).
        """
        xx = previous - xn
        lora = torch.tanh((xn + xx * self.time_maa_x) @ self.time_maa_w1).unflatten(-1, (5, self.lora_mix))
        mix = torch.stack(self._time_mixes()) + torch.einsum("...fr,frd->...fd", lora, self.time_maa_w2)  # [.., 5, d]
        xw, xk, xv, xr, xg = (xn[..., None, :] + xx[..., None, :] * mix).unbind(-2)
        log_w = -torch.exp((self.time_decay + torch.tanh(xw @ self.time_decay_w1) @ self.time_decay_w2).float())
        return xr, xk, xv, xg, log_w, mix

    def _bonus(self) -> torch.Tensor:
        return self.time_bonus.float().view(self.n_heads, self.head_dim)  # u [H, N]

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        return t.unflatten(-1, (self.n_heads, self.head_dim)).float()  # [..., T, H, N]

    def _time_mix(self, xn: torch.Tensor, cache: Optional[dict], recurrent: bool) -> torch.Tensor:
        """The time mix of the normed input ``xn [B, T, d]`` from ``cache``'s states (advanced when given)."""
        b, T, d = xn.shape
        cache = {} if cache is None else cache
        xr, xk, xv, xg, log_w, _ = self._time_inputs(xn, _shift(xn, cache.get("time_shift")))
        r, k, v, log_w = (self._heads(t) for t in (self.receptance(xr), self.key(xk), self.value(xv), log_w))
        state = cache.get("wkv")
        with torch.autocast(xn.device.type, enabled=False):  # WKV runs in float32
            bonus = self._bonus()
            if recurrent:
                state = r.new_zeros(b, self.n_heads, self.head_dim, self.head_dim) if state is None else state.float()
                outs = []
                for t in range(T):
                    o_t, state = wkv6_step(state, r[:, t], k[:, t], v[:, t], log_w[:, t], bonus)
                    outs.append(o_t)
                o = torch.stack(outs, dim=1)
            else:
                o, state = wkv6_chunked(r, k, v, log_w, bonus, self.chunk_size, state)
        cache["time_shift"], cache["wkv"] = xn[:, -1], state
        y = self.ln_x(o.reshape(b * T, d).to(xn.dtype)).view(b, T, d)
        return self.out_proj(y * F.silu(self.gate(xg)))

    def _channel_mix(self, xn: torch.Tensor, cache: Optional[dict]) -> torch.Tensor:
        previous = _shift(xn, None if cache is None else cache.get("channel_shift"))
        if cache is not None:
            cache["channel_shift"] = xn[:, -1]
        xx = previous - xn
        xk, xr = xn + xx * self.channel_maa_k, xn + xx * self.channel_maa_r
        return torch.sigmoid(self.ffn_receptance(xr)) * self.fc_out(torch.relu(self.ffn_key(xk)) ** 2)

    def _block(self, x: torch.Tensor, cache: Optional[dict], recurrent: bool = False) -> torch.Tensor:
        x = x + self.dropout(self._time_mix(self.norm_time(x), cache, recurrent))
        return x + self.dropout(self._channel_mix(self.norm_channel(x), cache))

    def forward(self, x: torch.Tensor, ctx: LayerContext) -> torch.Tensor:
        return self._block(x, None)  # [B, T, d_model]

    def allocate_cache(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> dict:
        """Zeros: token-shift states ``time_shift``/``channel_shift [B, d]``, WKV state ``wkv [B, H, N, N]`` float32."""
        return {"time_shift": torch.zeros(batch_size, self.d_model, device=device, dtype=dtype),
                "channel_shift": torch.zeros(batch_size, self.d_model, device=device, dtype=dtype),
                "wkv": torch.zeros(batch_size, self.n_heads, self.head_dim, self.head_dim, device=device,
                                   dtype=torch.float32)}

    def step(self, x: torch.Tensor, ctx: LayerContext, cache: dict) -> torch.Tensor:
        """One decoding step ``x [B, 1, d_model]`` through the recurrence; updates ``cache`` in place."""
        return self._block(x, cache, recurrent=True)

    def forward_carry(self, x: torch.Tensor, ctx: LayerContext, cache: dict) -> torch.Tensor:
        """A window ``x [B, T, d_model]`` (chunked form) from the carried ``cache``, which it advances."""
        return self._block(x, cache)

    def state_size(self, seq_len: int) -> int:
        """Two token-shift states ``2 d`` plus the WKV state ``H · N · N = d · N``, whatever the length."""
        return 2 * self.d_model + self.d_model * self.head_dim

    def linear_mode(self, x: torch.Tensor, xc: torch.Tensor, ctx: LayerContext, bias_index: int, router=None):
        """DePass: r, k, w, g, the mix coefficients, norm scales, ``relu(a)`` of the squared ReLU and the
        channel mix's receptance frozen; v and the channel mix's key input carry the components.

        Returns ``(x_out [B, T, d], xc_out [C, B, T, d], None)``.
        """
        C, b, T, d = xc.shape
        xn = self.norm_time(x)
        xr, xk, xv, xg, log_w, mix = self._time_inputs(xn, _shift(xn, None))
        r, k, log_w = (self._heads(t) for t in (self.receptance(xr), self.key(xk), log_w))
        bonus = self._bonus()
        o_real, _ = wkv6_chunked(r, k, self._heads(self.value(xv)), log_w, bonus, self.chunk_size)
        gate = F.silu(self.gate(xg))
        xn_c = layer_norm_linear(self.norm_time, x, xc, bias_index)  # [C, B, T, d]
        xv_c = xn_c + (_shift(xn_c, None) - xn_c) * mix[..., 2, :]
        v_c = self._heads(F.linear(xv_c, self.value.weight)).reshape(C * b, T, self.n_heads, self.head_dim)
        rep = [t.expand(C, *t.shape).reshape(C * b, *t.shape[1:]) for t in (r, k, log_w)]
        o_c, _ = wkv6_chunked(rep[0], rep[1], v_c, rep[2], bonus, self.chunk_size)
        y_c = group_norm_linear(self.ln_x, o_real.reshape(b, T, d), o_c.reshape(C, b, T, d), bias_index)
        x_mid = x + self._time_mix(xn, None, recurrent=False)
        xc_mid = xc + F.linear(y_c * gate, self.out_proj.weight)
        xn2 = self.norm_channel(x_mid)
        xn2_c = layer_norm_linear(self.norm_channel, x_mid, xc_mid, bias_index)
        xx2 = _shift(xn2, None) - xn2
        pre = self.ffn_key(xn2 + xx2 * self.channel_maa_k)  # [B, T, hidden]: relu(pre)^2 = pre * relu(pre)
        k_c = F.linear(xn2_c + (_shift(xn2_c, None) - xn2_c) * self.channel_maa_k, self.ffn_key.weight)
        receptance = torch.sigmoid(self.ffn_receptance(xn2 + xx2 * self.channel_maa_r))
        ffn_c = receptance * F.linear(k_c * torch.relu(pre), self.fc_out.weight)
        return self(x, ctx), xc_mid + ffn_c, None
