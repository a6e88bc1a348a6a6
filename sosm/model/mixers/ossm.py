"""OSSM (``"ossm"``): a bank of learnable damped oscillators driven by the sequence, with a parallel scan.

Each of the ``P = d_state`` state pairs is a damped harmonic oscillator ``q'' + 2ζω q' + ω² q = f(t)``
with natural frequency ``ω = softplus(·) > 0`` and damping ratio ``ζ = sigmoid(·) in (0, 1)``
(underdamped: it rings). In its eigenbasis the pair is one complex mode with continuous
eigenvalue ``λ = ω(-ζ + i sqrt(1 - ζ²))`` and its conjugate (kept implicit, ``y = Re(C h)``), so
the 2 × 2 real transition is a complex-diagonal one. Over a step ``Δ`` the exact (zero-order
hold) transition is ``exp(Δλ)``::

    |a_t| = exp(-(Δ_t ζ ω + ε)),   arg a_t = Δ_t ω sqrt(1 - ζ²),   ε = 1e-6

so ``|a_t| <= exp(-ε) < 1`` for **every** parameter value (ε is a floor of one millionth of a
decay per step, so the radius stays below 1 even where ``Δζω`` underflows; tested with random
and extreme parameters). The step is **input-dependent**, as Mamba's is: ``Δ_t = softplus(W_Δ u_t
+ b_Δ)`` per oscillator (``b_Δ`` so that ``Δ ~ logUniform[dt_min, dt_max]`` at init): a token can
hold the oscillators (small Δ) or let them ring down and take it in (large Δ). The bank is
multi-input multi-output over the channels (as S5 and LinOSS): ``B in C^{P × d}``, ``C in C^{d × P}``::

    u   = norm(x)                                    # [B, T, d]
    h_t = a_t ⊙ h_{t-1} + Δ_t ⊙ (B u_t)              # [B, T, P] complex
    y   = Re(C h) + D ⊙ u                            # [B, T, d]
    x   = x + GLU(Linear(d, 2d)(GELU(y)))            # LinOSS's block output (S4D's GLU)

Oscillatory state space models: Rusch and Rus (2025), "Oscillatory State-Space Models" (LinOSS:
forced harmonic oscillators, a parallel associative scan over 2 × 2 transitions); they discretise
undamped oscillators with implicit/IMEX schemes and a fixed step. Here the damping is learned and
the step is input-dependent, discretised exactly. Initialisation: the oscillators start at the
S4D-Lin eigenvalues ``λ_n = -1/2 + iπn`` (Gu et al. 2022), i.e. ``ω_n = |λ_n|`` and
``ζ_n = 1 / (2|λ_n|)`` (``n = 0``: ``ω = 1/2``, ``ζ = 0.999``, a nearly critically damped mode).

Forms, all equal (tested): the log-depth associative scan over the complex-diagonal transitions
(:func:`~sosm.model.mixers.diagonal_scan.diagonal_scan`, :meth:`forward`); one token at a time
(:meth:`step`, state ``[B, P]`` complex); a window from a carried state (:meth:`forward_carry`).
Given the real pass's ``Δ_t``, GELU ratio and GLU gate, the layer is linear in its input
(:meth:`linear_mode`, DePass).
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
from .linear import activation_ratio, norm_linear

#: decay per step added to every oscillator: ``|a| <= exp(-MIN_DECAY) < 1`` in float32
MIN_DECAY = 1e-6


def oscillator_transition(omega_raw: torch.Tensor, damping_logit: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
    """Discrete transitions ``a = exp(Δλ)`` of damped oscillators, floored strictly inside the unit circle.

    Args:
        omega_raw: ``[P]`` raw natural frequencies (``ω = softplus``).
        damping_logit: ``[P]`` raw damping ratios (``ζ = sigmoid``).
        dt: ``[..., P]`` steps ``Δ >= 0``.

    Returns:
        ``[..., P]`` complex64 with ``|a| <= exp(-MIN_DECAY)``.

    Example:
        >>> a = oscillator_transition(torch.zeros(3), torch.zeros(3), torch.ones(3))
        >>> bool((a.abs() < 1).all())
        True
    """
    omega = F.softplus(omega_raw.float())
    zeta = torch.sigmoid(damping_logit.float())
    damped = torch.sqrt(torch.sigmoid(-damping_logit.float()) * (1 + zeta))  # sqrt(1 - ζ²), accurate near ζ = 1
    radius = torch.exp(-(dt * (zeta * omega) + MIN_DECAY))
    angle = dt * (omega * damped)
    return torch.complex(radius * torch.cos(angle), radius * torch.sin(angle))


@register_mixer
class OscillatorySSM(Mixer):
    """Damped-oscillator state space layer (see the module docstring).

    Args:
        config: ``SOSMConfig`` (d_model, d_state = P oscillators, dt_min, dt_max, dropout).

    Shapes: ``forward(x [B, T, d_model], ctx) -> [B, T, d_model]``.

    Example:
        >>> from sosm.model import SOSMConfig
        >>> layer = OscillatorySSM(SOSMConfig(model="ossm", d_model=32, n_heads=2, d_state=8))
        >>> layer(torch.randn(2, 9, 32), LayerContext()).shape
        torch.Size([2, 9, 32])
    """

    name = "ossm"

    def __init__(self, config, struct_dim: Optional[int] = None):
        super().__init__()
        d, P = config.d_model, config.d_state
        self.d_model, self.n_oscillators = d, P
        self.dt_min, self.dt_max = config.dt_min, config.dt_max
        self.norm = nn.RMSNorm(d, eps=1e-5)
        self.dt_proj = nn.Linear(d, P)                              # Δ_t = softplus(W u + b), per oscillator
        self.omega_raw = nn.Parameter(torch.empty(P))               # ω = softplus(.)
        self.damping_logit = nn.Parameter(torch.empty(P))           # ζ = sigmoid(.)
        self.B = nn.Parameter(torch.empty(P, d, 2))                 # complex, (re, im) last
        self.C = nn.Parameter(torch.empty(d, P, 2))
        self.D = nn.Parameter(torch.empty(d))
        self.out_proj = nn.Linear(d, 2 * d)                         # GLU halves
        self.dropout = nn.Dropout(config.dropout)
        self.reset_oscillators()

    def init_parameters(self) -> None:
        """After the model's generic init: the oscillators' own (:meth:`reset_oscillators`)."""
        self.reset_oscillators()

    @torch.no_grad()
    def reset_oscillators(self) -> None:
        """S4D-Lin frequencies and damping; ``B ~ CN(0, 1/d)``, ``C ~ CN(0, 1/P)``, ``D = 1``; Δ bias logUniform."""
        P, d, device = self.n_oscillators, self.d_model, self.D.device
        n = torch.arange(P, dtype=torch.float64)
        magnitude = torch.sqrt(0.25 + (math.pi * n) ** 2)              # |λ_n|, λ_n = -1/2 + iπn
        zeta = (0.5 / magnitude).clamp_max(0.999)
        omega = torch.where(n == 0, torch.full_like(n, 0.5), magnitude)
        self.omega_raw.copy_(omega + torch.log(-torch.expm1(-omega)))  # inverse softplus
        self.damping_logit.copy_(torch.log(zeta / (1 - zeta)))
        self.B.normal_(0.0, (2 * d) ** -0.5)
        self.C.normal_(0.0, (2 * P) ** -0.5)
        self.D.fill_(1.0)
        low, high = math.log(self.dt_min), math.log(self.dt_max)
        dt = torch.exp(torch.rand(P, device=device) * (high - low) + low)
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))

    def recurrence(self, u: torch.Tensor, dt: Optional[torch.Tensor] = None):
        """``(a, b, Δ)`` ``[..., T, P]`` of ``h_t = a_t h_{t-1} + b_t`` (complex64) for the normed input ``u [..., T, d]``.

        ``dt``: the steps to use (DePass passes the real pass's); None computes them from ``u``.
        """
        u = u.float()
        if dt is None:
            dt = F.softplus(F.linear(u, self.dt_proj.weight.float(), self.dt_proj.bias.float()))  # [..., T, P]
        a = oscillator_transition(self.omega_raw, self.damping_logit, dt)
        B = self.B.float()
        drive = torch.complex(F.linear(u, B[..., 0]), F.linear(u, B[..., 1]))  # B u: [..., T, P]
        return a, dt * drive, dt

    def readout(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """``y = Re(C h) + D u``: ``h [..., T, P]`` complex, ``u [..., T, d]`` -> ``[..., T, d]`` float32."""
        C = self.C.float()
        return F.linear(h.real, C[..., 0]) - F.linear(h.imag, C[..., 1]) + self.D.float() * u.float()

    def _output(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x + self.dropout(F.glu(self.out_proj(F.gelu(y.to(x.dtype))), dim=-1))

    def _mix(self, x: torch.Tensor, h0: Optional[torch.Tensor] = None):
        u = self.norm(x)
        with torch.autocast(x.device.type, enabled=False):
            a, b, _ = self.recurrence(u)
            h = diagonal_scan(a, b, h0)  # [B, T, P]
            y = self.readout(h, u)
        return self._output(x, y), h[:, -1].clone()  # the last state alone, not a view of all of them

    def forward(self, x: torch.Tensor, ctx: LayerContext) -> torch.Tensor:
        return self._mix(x)[0]

    def allocate_cache(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> dict:
        """``h``: the oscillators of a fresh sequence, zeros ``[B, P]`` complex64."""
        return {"h": torch.zeros(batch_size, self.n_oscillators, device=device, dtype=torch.complex64)}

    def step(self, x: torch.Tensor, ctx: LayerContext, cache: dict) -> torch.Tensor:
        """One token ``x [B, 1, d]``: ``h = a h + b``, ``y = Re(C h) + D u`` (updates ``cache["h"]``)."""
        if "h" not in cache:
            cache.update(self.allocate_cache(x.shape[0], x.device, x.dtype))
        u = self.norm(x)
        with torch.autocast(x.device.type, enabled=False):
            a, b, _ = self.recurrence(u)  # [B, 1, P]
            h = a[:, 0] * cache["h"] + b[:, 0]
            y = self.readout(h[:, None], u)
        cache["h"] = h
        return self._output(x, y)

    def forward_carry(self, x: torch.Tensor, ctx: LayerContext, cache: dict) -> torch.Tensor:
        """A window ``x [B, T, d]`` from ``cache["h"]`` (missing: zeros), advancing it: the scan from ``h0``."""
        if x.dim() != 3:
            raise ValueError(f"x must be [B, T, d_model], got shape {tuple(x.shape)}")
        out, cache["h"] = self._mix(x, cache.get("h"))
        return out

    def state_size(self, seq_len: int) -> int:
        """``2 P`` floats (``P`` complex oscillators), whatever the length."""
        return 2 * self.n_oscillators

    def linear_mode(self, x: torch.Tensor, xc: torch.Tensor, ctx: LayerContext, bias_index: int, router=None):
        """DePass: norm scales, the steps ``Δ_t``, the GELU ratio and the GLU gate frozen; biases to ``bias_index``."""
        d = x.shape[-1]
        u = self.norm(x)
        with torch.autocast(x.device.type, enabled=False):
            a, b, dt = self.recurrence(u)
            y = self.readout(diagonal_scan(a, b), u).to(x.dtype)  # [B, T, d] real
            u_c = norm_linear(self.norm, x, xc).float()  # [C, B, T, d]
            _, b_c, _ = self.recurrence(u_c, dt=dt.expand(xc.shape[0], *dt.shape))
            h_c = diagonal_scan(a.expand(xc.shape[0], *a.shape).flatten(0, 1), b_c.flatten(0, 1))
            y_c = self.readout(h_c.view(b_c.shape), u_c).to(x.dtype)  # [C, B, T, d]
        value, gate = self.out_proj(F.gelu(y)).chunk(2, dim=-1)
        value_c = F.linear(y_c * activation_ratio(y, F.gelu), self.out_proj.weight[:d])
        value_c[bias_index] += self.out_proj.bias[:d]
        return self(x, ctx), xc + value_c * torch.sigmoid(gate), None
