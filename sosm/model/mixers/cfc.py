"""Closed-form continuous-time cell (``"cfc"``): a liquid time-constant recurrence over the sequence.

Hasani et al. (2022), "Closed-form continuous-time neural networks" (Nature Machine
Intelligence): the liquid time-constant ODE ``x' = -[1/τ + f(x, I)] x + f(x, I) A`` has an
input-dependent time constant; CfC replaces its solution by a closed form. Two variants
(``SOSMConfig.cfc_variant``), both on a pre-norm residual block ``x + W_out cell(norm(x))``
(hidden width ``d_model``; the paper's model has no MLP, so neither has this block):

``"cfc"`` (default: the paper's cell, eq. 10, with its code's gate). A backbone
``bb_t = lecun_tanh(W_i u_t + W_h x_{t-1} + b)`` (``d_model`` units) and heads::

    x_t = (1 - σ_t) ⊙ tanh(W_1 bb_t + b_1) + σ_t ⊙ tanh(W_2 bb_t + b_2),
    σ_t = sigmoid(W_a bb_t Δt + W_b bb_t + b_t)

where ``W_a bb_t`` is the input-dependent rate ``f`` and ``Δt = 1`` between tokens, so the two time
heads of the paper's code sum to one linear head (kept as one). Every head reads ``x_{t-1}``:
the recurrence is **nonlinear in the state**, so it has no parallel form; the forward is the
sequential loop, vectorised over batch and channels (the input half of the backbone is computed
for all tokens at once; per token two matrix products remain). It costs T sequential steps.

``"ltc"`` (the parallel option). The LTC ODE with a conductance that depends on the input only,
``f_t = softplus(W_f u_t + b_f)``, a leak ``1/τ = softplus(w) + ε`` and an input-dependent
reversal potential ``v_t = W_v u_t``, solved exactly over the unit step with the input held::

    a_t = exp(-(1/τ + f_t)),   x_t = a_t ⊙ x_{t-1} + (1 - a_t) ⊙ f_t / (1/τ + f_t) ⊙ v_t

**linear in the state** with an input-dependent decay ``a_t in (0, 1)``, so the forward is the
log-depth associative scan (:func:`~sosm.model.mixers.diagonal_scan.diagonal_scan`); this is the
closed form CfC approximates, restricted to a state-independent ``f``.

The default is ``"cfc"`` because the name promises the paper's cell; ``"ltc"`` trades its
state-dependent gating for the parallel scan (faster at long contexts).

Forms (tested equal): the forward (loop or scan); :meth:`step` one token at a time (state
``[B, d_model]``); :meth:`forward_carry`. DePass (:meth:`linear_mode`): ``"ltc"`` freezes
``a_t`` and ``f_t / (1/τ + f_t)`` and is linear in ``v``; ``"cfc"`` freezes, at every step, the
backbone's and both heads' activation ratios (``act(z) / z`` of the real pre-activations) and the
gate ``σ_t``, so the step is linear in the components of ``(u_t, x_{t-1})`` and they carry
through the recurrence; biases to ``bias_index``.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..context import LayerContext
from .base import Mixer, register_mixer
from .diagonal_scan import diagonal_scan
from .linear import norm_linear

CFC_VARIANTS = ("cfc", "ltc")
LECUN_SCALE, LECUN_SLOPE = 1.7159, 0.666  # lecun_tanh(z) = 1.7159 tanh(0.666 z), as the CfC code
MIN_LEAK = 1e-4                             # 1/τ >= MIN_LEAK: the LTC's decay stays below 1


def lecun_tanh(z: torch.Tensor) -> torch.Tensor:
    """LeCun's scaled tanh ``1.7159 tanh(0.666 z)`` (the CfC backbone's activation)."""
    return LECUN_SCALE * torch.tanh(LECUN_SLOPE * z)


def tanh_ratio(z: torch.Tensor, scale: float = 1.0, slope: float = 1.0) -> torch.Tensor:
    """``scale · tanh(slope · z) / z`` with its limit ``scale · slope`` at ``z = 0`` (frozen DePass ratio)."""
    safe = torch.where(z == 0, torch.ones_like(z), z)
    return torch.where(z == 0, torch.full_like(z, scale * slope), scale * torch.tanh(slope * safe) / safe)


@register_mixer
class CfC(Mixer):
    """Closed-form continuous-time (liquid) recurrent layer; see the module docstring for the two variants.

    Args:
        config: ``SOSMConfig`` (d_model, cfc_variant, dt_min, dt_max for the LTC's rates, dropout).

    Shapes: ``forward(x [B, T, d_model], ctx) -> [B, T, d_model]``.

    Example:
        >>> from sosm.model import SOSMConfig
        >>> layer = CfC(SOSMConfig(model="cfc", d_model=32, n_heads=2))
        >>> layer(torch.randn(2, 9, 32), LayerContext()).shape
        torch.Size([2, 9, 32])
    """

    name = "cfc"

    def __init__(self, config, struct_dim: Optional[int] = None):
        super().__init__()
        d = config.d_model
        self.variant, self.hidden = config.cfc_variant, d
        self.dt_min, self.dt_max = config.dt_min, config.dt_max
        self.norm = nn.RMSNorm(d, eps=1e-5)
        if self.variant == "cfc":
            self.backbone_in = nn.Linear(d, d)                   # W_i u + b (every token at once)
            self.backbone_rec = nn.Linear(d, d, bias=False)      # W_h x_{t-1}
            self.heads = nn.Linear(d, 3 * d)                     # tanh head 1, tanh head 2, time gate
        else:
            self.in_proj = nn.Linear(d, 2 * d)                   # conductance f (pre-softplus), potential v
            self.leak_raw = nn.Parameter(torch.empty(d))         # 1/τ = softplus(.) + MIN_LEAK
        self.out_proj = nn.Linear(d, d, bias=False)
        self.dropout = nn.Dropout(config.dropout)
        self.reset_cell_parameters()

    def init_parameters(self) -> None:
        """After the model's generic init: the cell's own (:meth:`reset_cell_parameters`)."""
        self.reset_cell_parameters()

    @torch.no_grad()
    def reset_cell_parameters(self) -> None:
        """``"cfc"``: Xavier-uniform cell weights, zero biases (the CfC code's init). ``"ltc"``: rates logUniform."""
        if self.variant == "cfc":
            for layer in (self.backbone_in, self.backbone_rec, self.heads):
                nn.init.xavier_uniform_(layer.weight)
                if layer.bias is not None:
                    layer.bias.zero_()
            return
        d, device = self.hidden, self.leak_raw.device
        low, high = math.log(self.dt_min), math.log(self.dt_max)
        for target in (self.leak_raw, self.in_proj.bias[:d]):  # leak 1/τ and conductance f ~ logUniform
            rate = torch.exp(torch.rand(d, device=device) * (high - low) + low)
            target.copy_(rate + torch.log(-torch.expm1(-rate)))  # inverse softplus
        self.in_proj.bias[d:].zero_()

    def _cell(self, pre_in: torch.Tensor, h: torch.Tensor, weights: tuple):
        """One CfC step from the input half of the backbone ``pre_in [B, d]`` and the state ``h [B, d]``.

        ``weights``: ``(W_h^T, heads' W^T, heads' bias)`` (transposed once per sequence). Returns
        ``(h_new, (backbone pre-activation, head pre-activations [B, 3d], gate))``.
        """
        rec_t, heads_t, heads_bias = weights
        pre = torch.addmm(pre_in, h, rec_t)
        heads = torch.addmm(heads_bias, lecun_tanh(pre), heads_t)
        first, second, gate = heads.chunk(3, dim=-1)
        sigma = torch.sigmoid(gate)
        first = torch.tanh(first)
        return first + sigma * (torch.tanh(second) - first), (pre, heads, sigma)  # (1 - σ) tanh1 + σ tanh2

    def _weights(self, dtype: torch.dtype) -> tuple:
        return (self.backbone_rec.weight.t().to(dtype), self.heads.weight.t().to(dtype), self.heads.bias.to(dtype))

    def _cfc_states(self, u: torch.Tensor, h0: Optional[torch.Tensor] = None, record: bool = False):
        """The sequential CfC over ``u [B, T, d]`` from ``h0``: states ``[B, T, d]`` (and the per-step internals)."""
        pre_in = self.backbone_in(u)  # [B, T, d]: the input half of every step at once
        weights = self._weights(pre_in.dtype)
        h = pre_in.new_zeros(u.shape[0], self.hidden) if h0 is None else h0.to(pre_in.dtype)
        states, internals = [], []
        for pre_t in pre_in.unbind(1):
            h, frozen = self._cell(pre_t, h, weights)
            states.append(h)
            if record:
                internals.append(frozen)
        return torch.stack(states, dim=1), internals

    def _ltc_recurrence(self, u: torch.Tensor):
        """``(a, coefficient, v)`` of the LTC: ``x_t = a_t x_{t-1} + coefficient_t ⊙ v_t``, each ``[..., T, d]``."""
        f_raw, v = self.in_proj(u).chunk(2, dim=-1)
        with torch.autocast(u.device.type, enabled=False):
            f = F.softplus(f_raw.float())
            rate = F.softplus(self.leak_raw.float()) + MIN_LEAK + f  # 1/τ + f > 0
            a = torch.exp(-rate)
            coefficient = -torch.expm1(-rate) * f / rate            # (1 - a) f / (1/τ + f)
        return a, coefficient, v.float()

    def _states(self, u: torch.Tensor, h0: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.variant == "cfc":
            return self._cfc_states(u, h0)[0]
        a, coefficient, v = self._ltc_recurrence(u)
        with torch.autocast(u.device.type, enabled=False):
            return diagonal_scan(a, coefficient * v, None if h0 is None else h0.float())

    def _output(self, x: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        return x + self.dropout(self.out_proj(states.to(x.dtype)))

    def forward(self, x: torch.Tensor, ctx: LayerContext) -> torch.Tensor:
        return self._output(x, self._states(self.norm(x)))

    def allocate_cache(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> dict:
        """``h``: the hidden state of a fresh sequence, zeros ``[B, d_model]`` (float32 for ``"ltc"``)."""
        state_dtype = dtype if self.variant == "cfc" else torch.float32
        return {"h": torch.zeros(batch_size, self.hidden, device=device, dtype=state_dtype)}

    def step(self, x: torch.Tensor, ctx: LayerContext, cache: dict) -> torch.Tensor:
        """One token ``x [B, 1, d]`` from ``cache["h"]`` (updated)."""
        if "h" not in cache:
            cache.update(self.allocate_cache(x.shape[0], x.device, x.dtype))
        u = self.norm(x)
        if self.variant == "cfc":
            pre_in = self.backbone_in(u[:, 0])
            h, _ = self._cell(pre_in, cache["h"].to(pre_in.dtype), self._weights(pre_in.dtype))
        else:
            a, coefficient, v = self._ltc_recurrence(u)
            h = a[:, 0] * cache["h"] + coefficient[:, 0] * v[:, 0]
        cache["h"] = h
        return self._output(x, h[:, None])

    def forward_carry(self, x: torch.Tensor, ctx: LayerContext, cache: dict) -> torch.Tensor:
        """A window ``x [B, T, d]`` from ``cache["h"]`` (missing: zeros), advancing it."""
        if x.dim() != 3:
            raise ValueError(f"x must be [B, T, d_model], got shape {tuple(x.shape)}")
        states = self._states(self.norm(x), cache.get("h"))
        cache["h"] = states[:, -1].clone()  # the last state alone, not a view of all of them
        return self._output(x, states)

    def state_size(self, seq_len: int) -> int:
        """``d_model`` floats (the hidden state), whatever the length."""
        return self.hidden

    def linear_mode(self, x: torch.Tensor, xc: torch.Tensor, ctx: LayerContext, bias_index: int, router=None):
        """DePass (see the module docstring): ``(x_out [B, T, d], xc_out [C, B, T, d], None)``."""
        u_c = norm_linear(self.norm, x, xc)  # [C, B, T, d]
        if self.variant == "ltc":
            a, coefficient, _ = self._ltc_recurrence(self.norm(x))
            v_c = F.linear(u_c, self.in_proj.weight[self.hidden:])
            v_c[bias_index] += self.in_proj.bias[self.hidden:]
            n = xc.shape[0]
            b_c = (coefficient * v_c.float()).flatten(0, 1)
            states_c = diagonal_scan(a.expand(n, *a.shape).flatten(0, 1), b_c).view(v_c.shape)
        else:
            _, internals = self._cfc_states(self.norm(x), record=True)
            pre_in_c = F.linear(u_c, self.backbone_in.weight)  # [C, B, T, d]
            pre_in_c[bias_index] += self.backbone_in.bias
            h_c, states = xc.new_zeros(xc.shape[0], xc.shape[1], self.hidden), []
            for t, (pre, heads, sigma) in enumerate(internals):
                backbone_c = (pre_in_c[:, :, t] + F.linear(h_c, self.backbone_rec.weight)) * tanh_ratio(
                    pre, LECUN_SCALE, LECUN_SLOPE)
                heads_c = F.linear(backbone_c, self.heads.weight)
                heads_c[bias_index] += self.heads.bias
                first_c, second_c, _ = (heads_c * tanh_ratio(heads)).chunk(3, dim=-1)
                h_c = (1 - sigma) * first_c + sigma * second_c
                states.append(h_c)
            states_c = torch.stack(states, dim=2)
        return self(x, ctx), xc + F.linear(states_c.to(x.dtype), self.out_proj.weight), None
