"""S4 (``"s4"``): a structured state space layer per channel, HiPPO-initialised, then a GLU and an MLP.

Each of the ``d_model`` channels ``u`` runs its own linear state space model (continuous time,
step ``Δ`` per channel, learned as ``log Δ``; ``log Δ ~ U[log dt_min, log dt_max]`` at init)::

    x'(t) = A x(t) + B u(t),   y(t) = C x(t) + D u(t)

discretised (``SOSMConfig.s4_discretization``) to ``x_t = Ā x_{t-1} + B̄ u_t``, ``y_t = C x_t + D u_t``:

- ``"zoh"`` (zero-order hold, default): ``Ā = exp(ΔA)``, ``B̄ = A^{-1}(Ā - I) B``;
- ``"bilinear"``: ``Ā = (I - ΔA/2)^{-1}(I + ΔA/2)``, ``B̄ = (I - ΔA/2)^{-1} Δ B``;
- ``"euler"`` (forward): ``Ā = I + ΔA``, ``B̄ = Δ B``.

ZOH and bilinear map every eigenvalue with negative real part strictly inside the unit circle,
for every ``Δ > 0``; forward Euler only where ``|1 + Δλ| < 1`` (a warning at construction says
how many modes start outside it: with HiPPO's high frequencies, most do).

The state matrix (``SOSMConfig.s4_matrix``; ``N = d_state``):

- ``"legs"`` (default): **S4D-LegS** — diagonal, ``N/2`` complex modes kept with their conjugates
  implicit (``y = 2 Re(C x)``): ``A`` is the eigenvalues of the normal part of HiPPO-LegS
  (``A_legs + P P^T``, ``P_n = sqrt(n + 1/2)``; every real part is ``-1/2``) and ``B = V^* B_legs``
  in its eigenbasis ``V``; ``C ~ CN(0, 1)``. The diagonal initialisation derived from HiPPO-LegS of
  Gu, Gupta, Goel and Ré (2022), "On the Parameterization and Initialization of Diagonal State
  Space Models" (S4D), whose kernel tends to S4's HiPPO-LegS kernel as ``N`` grows.
- ``"lin"``: **S4D-Lin** (the same paper) — ``A_n = -1/2 + iπn``, ``B_n = 1``.
- ``"hippo"``: the lower-triangular HiPPO-LegS matrix itself, dense ``N × N`` (one per layer,
  shared by the channels; ``B_n = sqrt(2n + 1)`` per channel): ``A_nk = -sqrt(2n+1) sqrt(2k+1)``
  below the diagonal, ``-(n + 1)`` on it. The strictly lower part is learned freely and the
  diagonal as ``-exp(·)``, so ``A`` stays lower triangular with negative eigenvalues (its
  diagonal): stable under ZOH and bilinear for every parameter value. ``O(N^2)`` per channel and
  step (``O(N^3)`` to discretise): for small ``N``.

In the diagonal cases ``log(-Re A)`` and ``Im A`` are learned (``Re A < 0`` always). The layer is
S4's language-model layer (its WikiText-103 model replaced attention by S4 in a Transformer block):
pre-norm, the SSM, GELU, ``Linear(d, 2d)`` and a GLU (S4D's output), residual; then a pre-norm MLP
with its residual.

Forms, all equal (tested, odd lengths, against a textbook loop): the convolution with the kernel
``K_l = C Ā^l B̄`` (:meth:`forward` through :meth:`S4.ssm`: chunks of ``CHUNK`` tokens, a Toeplitz
product inside each and the state carried across in closed form); the global FFT convolution
(:meth:`S4.ssm_fft`, the textbook training form — not the forward, because its roundoff lets the
future touch the past at ~1e-7, which the exact causality invariant forbids); the recurrence one
token at a time (:meth:`step`, state ``[B, d, N/2]`` complex or ``[B, d, N]`` real); a window from
a carried state (:meth:`forward_carry`). DePass freezes the norm scales, the GELU ratio and the
GLU gate; the SSM itself is linear (:meth:`linear_mode`).
"""
from __future__ import annotations

import math
import warnings
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..context import LayerContext
from .attention import MLP
from .base import Mixer, no_weight_decay, register_mixer
from .linear import activation_ratio, mlp_linear, norm_linear

S4_DISCRETIZATIONS = ("zoh", "bilinear", "euler")
S4_MATRICES = ("legs", "lin", "hippo")
CHUNK = 64  # tokens per chunk of the exactly causal convolution (Toeplitz product inside, state across)


def hippo_legs(n_state: int) -> tuple[torch.Tensor, torch.Tensor]:
    """HiPPO-LegS ``(A [N, N], B [N])`` in float64: ``A`` lower triangular, ``B_n = sqrt(2n + 1)``.

    Example:
        >>> A, B = hippo_legs(3)
        >>> A.diagonal().tolist(), round(A[1, 0].item() ** 2, 6), [round(b * b, 6) for b in B.tolist()]
        ([-1.0, -2.0, -3.0], 3.0, [1.0, 3.0, 5.0])
    """
    q = torch.arange(n_state, dtype=torch.float64)
    root = (2 * q + 1).sqrt()
    return -torch.tril(root[:, None] * root[None, :], -1) - torch.diag(q + 1), root


def s4d_legs(n_state: int) -> tuple[torch.Tensor, torch.Tensor]:
    """S4D-LegS: ``(A [N/2], B [N/2])`` complex128, the upper-half-plane eigenvalues of HiPPO-LegS's normal part.

    ``A_legs + P P^T`` (``P_n = sqrt(n + 1/2)``) is normal, ``-I/2`` plus a skew-symmetric matrix;
    of each conjugate pair of its eigenvalues the one with positive imaginary part is kept (sorted
    by frequency) and ``B`` is HiPPO's ``B`` in the eigenbasis, ``V^* B``.
    """
    A, B = hippo_legs(n_state)
    p = (torch.arange(n_state, dtype=torch.float64) + 0.5).sqrt()
    eigenvalues, vectors = torch.linalg.eig(A + p[:, None] * p[None, :])
    keep = torch.argsort(eigenvalues.imag)[n_state // 2:]  # the upper half plane, by frequency
    return eigenvalues[keep], vectors[:, keep].conj().transpose(0, 1) @ B.to(vectors.dtype)


def s4d_lin(n_state: int) -> tuple[torch.Tensor, torch.Tensor]:
    """S4D-Lin: ``A_n = -1/2 + iπn``, ``B_n = 1`` for ``n < N/2`` (complex128)."""
    n = torch.arange(n_state // 2, dtype=torch.float64)
    return torch.complex(torch.full_like(n, -0.5), math.pi * n), torch.ones_like(n, dtype=torch.complex128)


def discretize_diagonal(A: torch.Tensor, B: torch.Tensor, dt: torch.Tensor, method: str):
    """``(Ā, B̄)`` of diagonal modes ``A, B [..., M]`` (complex) with steps ``dt [..., 1]`` (real) by ``method``."""
    dtA = dt * A
    if method == "zoh":
        Abar = torch.exp(dtA)
        return Abar, (Abar - 1) / A * B
    if method == "bilinear":
        inverse = 1 / (1 - dtA / 2)
        return (1 + dtA / 2) * inverse, dt * inverse * B
    if method == "euler":
        return 1 + dtA, dt * B
    raise ValueError(f"method={method!r} is invalid; accepted: one of {S4_DISCRETIZATIONS}")


def discretize_dense(A: torch.Tensor, B: torch.Tensor, dt: torch.Tensor, method: str):
    """``(Ā [H, N, N], B̄ [H, N])`` of a dense ``A [N, N]`` with ``B [H, N]`` and steps ``dt [H]`` by ``method``.

    ZOH through the exponential of the augmented matrix ``[[ΔA, ΔB], [0, 0]]`` (no inverse of ``A``).
    """
    H, N = B.shape
    dtA = dt[:, None, None] * A  # [H, N, N]
    eye = torch.eye(N, dtype=A.dtype, device=A.device)
    if method == "zoh":
        augmented = torch.zeros(H, N + 1, N + 1, dtype=A.dtype, device=A.device)
        augmented[:, :N, :N] = dtA
        augmented[:, :N, N] = dt[:, None] * B
        expm = torch.linalg.matrix_exp(augmented)
        return expm[:, :N, :N], expm[:, :N, N]
    if method == "bilinear":
        lhs = eye - dtA / 2
        Abar = torch.linalg.solve_triangular(lhs, eye + dtA / 2, upper=False)
        Bbar = torch.linalg.solve_triangular(lhs, (dt[:, None] * B)[..., None], upper=False)[..., 0]
        return Abar, Bbar
    if method == "euler":
        return eye + dtA, dt[:, None] * B
    raise ValueError(f"method={method!r} is invalid; accepted: one of {S4_DISCRETIZATIONS}")


def krylov(Abar: torch.Tensor, v: torch.Tensor, length: int) -> torch.Tensor:
    """``[v, Ā v, Ā^2 v, ...]`` (``length`` terms) as ``[..., N, length]``, by repeated squaring (log2 rounds)."""
    out, power = v[..., None], Abar  # [..., N, 1], [..., N, N]
    while out.shape[-1] < length:
        out = torch.cat([out, power @ out], dim=-1)
        power = power @ power
    return out[..., :length]


def causal_fft_conv(u: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``y_t = sum_{l <= t} K_l u_{t-l}`` for ``u [..., H, T]`` and ``kernel [H, T]`` by FFT (zero padded to 2T)."""
    T = u.shape[-1]
    n = 1 << (2 * T - 1).bit_length()
    product = torch.fft.rfft(u, n=n) * torch.fft.rfft(kernel, n=n)
    return torch.fft.irfft(product, n=n)[..., :T]


@register_mixer
class S4(Mixer):
    """S4 layer (S4D-LegS by default): pre-norm SSM per channel, GELU, GLU; then a pre-norm MLP.

    Args:
        config: ``SOSMConfig`` (d_model, d_state = N, s4_matrix, s4_discretization, dt_min, dt_max,
            mlp_ratio, dropout).

    Shapes: ``forward(x [B, T, d_model], ctx) -> [B, T, d_model]``.

    Example:
        >>> from sosm.model import SOSMConfig
        >>> layer = S4(SOSMConfig(model="s4", d_model=32, n_heads=2, d_state=8))
        >>> layer(torch.randn(2, 9, 32), LayerContext()).shape
        torch.Size([2, 9, 32])
    """

    name = "s4"
    needs_mlp = True  # its block's FFN (width mlp_hidden) is part of the architecture

    def __init__(self, config, struct_dim: Optional[int] = None):
        super().__init__()
        d, n_state = config.d_model, config.d_state
        self.n_state, self.matrix, self.method = n_state, config.s4_matrix, config.s4_discretization
        self.dt_min, self.dt_max = config.dt_min, config.dt_max
        self.norm = nn.RMSNorm(d, eps=1e-5)
        self.log_dt = nn.Parameter(torch.empty(d))
        self.D = nn.Parameter(torch.empty(d))
        if self.matrix == "hippo":
            self.A_lower = nn.Parameter(torch.empty(n_state, n_state))  # strictly lower part used
            self.A_log_diag = nn.Parameter(torch.empty(n_state))     # diagonal = -exp(.)
            self.B = nn.Parameter(torch.empty(d, n_state))
            self.C = nn.Parameter(torch.empty(d, n_state))
            no_weight_decay(self, "A_lower", "B")  # as S4: no decay on the state matrices
        else:
            modes = n_state // 2
            self.A_log_real = nn.Parameter(torch.empty(d, modes))    # Re A = -exp(.)
            self.A_imag = nn.Parameter(torch.empty(d, modes))
            self.B = nn.Parameter(torch.empty(d, modes, 2))           # complex, (re, im) last
            self.C = nn.Parameter(torch.empty(d, modes, 2))
            no_weight_decay(self, "A_log_real", "A_imag", "B")  # as S4D: no decay on A and B
        self.out_proj = nn.Linear(d, 2 * d)                           # GLU halves
        self.norm_mlp = nn.RMSNorm(d, eps=1e-5)
        self.mlp = MLP(d, config.mlp_hidden)
        self.dropout = nn.Dropout(config.dropout)
        self.reset_ssm_parameters()
        if self.method == "euler":
            self._warn_unstable_euler()

    def init_parameters(self) -> None:
        """After the model's generic init: the SSM's own (:meth:`reset_ssm_parameters`)."""
        self.reset_ssm_parameters()

    @torch.no_grad()
    def reset_ssm_parameters(self) -> None:
        """HiPPO-derived ``A``, ``B``; ``C`` normal; ``D`` normal; ``log Δ ~ U[log dt_min, log dt_max]`` (as S4D)."""
        d, device = self.log_dt.shape[0], self.log_dt.device
        low, high = math.log(self.dt_min), math.log(self.dt_max)
        self.log_dt.copy_(torch.rand(d, device=device) * (high - low) + low)
        self.D.normal_(0.0, 1.0)
        if self.matrix == "hippo":
            A, B = hippo_legs(self.n_state)
            self.A_lower.copy_(torch.tril(A, -1))
            self.A_log_diag.copy_(torch.log(-A.diagonal()))
            self.B.copy_(B.expand(d, -1))
            self.C.normal_(0.0, 1.0)
            return
        A, B = (s4d_legs if self.matrix == "legs" else s4d_lin)(self.n_state)
        self.A_log_real.copy_(torch.log(-A.real).expand(d, -1))
        self.A_imag.copy_(A.imag.expand(d, -1))
        self.B.copy_(torch.view_as_real(B.to(torch.complex64)).expand(d, -1, -1))
        self.C.normal_(0.0, 0.5 ** 0.5)  # CN(0, 1): variance 1/2 per real and imaginary part

    def _warn_unstable_euler(self) -> None:
        Abar, _ = self.discretize()
        radius = Abar.abs() if self.matrix != "hippo" else torch.linalg.eigvals(Abar).abs()
        outside = int((radius >= 1).sum())
        if outside:
            warnings.warn(f"S4 with s4_discretization='euler': {outside} of {radius.numel()} discrete modes start "
                          "outside the unit circle (forward Euler is stable only where |1 + Δλ| < 1); its kernel "
                          "grows with the length. 'zoh' or 'bilinear' are stable for every Δ", stacklevel=3)

    def continuous(self):
        """The continuous ``(A, B, C)``: diagonal ``[d, N/2]`` complex each, or dense ``A [N, N]``, ``B, C [d, N]``."""
        if self.matrix == "hippo":
            A = torch.tril(self.A_lower.float(), -1) - torch.diag(torch.exp(self.A_log_diag.float()))
            return A, self.B.float(), self.C.float()
        A = torch.complex(-torch.exp(self.A_log_real.float()), self.A_imag.float())
        return A, torch.view_as_complex(self.B.float()), torch.view_as_complex(self.C.float())

    def discretize(self):
        """``(Ā, B̄)`` by ``s4_discretization``: ``[d, N/2]`` complex each, or ``[d, N, N]`` and ``[d, N]`` real."""
        A, B, _ = self.continuous()
        dt = torch.exp(self.log_dt.float())
        if self.matrix == "hippo":
            return discretize_dense(A, B, dt, self.method)
        return discretize_diagonal(A, B, dt[:, None], self.method)

    def _readout(self):
        """``C`` as the readout of the state: the diagonal modes count twice (their conjugates)."""
        C = self.continuous()[2]
        return C if self.matrix == "hippo" else 2 * C

    def kernel(self, length: int) -> torch.Tensor:
        """The convolution kernel ``K_l = C Ā^l B̄``, ``l < length``: ``[d, length]`` float32."""
        Abar, Bbar = self.discretize()
        C = self._readout()
        if self.matrix == "hippo":
            return torch.einsum("hn,hnl->hl", C, krylov(Abar, Bbar, length))
        return torch.einsum("hm,hml->hl", C * Bbar, self._powers(Abar, length)).real

    @staticmethod
    def _powers(Abar: torch.Tensor, length: int) -> torch.Tensor:
        """``Ā^l`` for ``l < length``: ``[..., length]`` complex, in polar form ``|Ā|^l e^{i l arg Ā}`` (``0^0 = 1``)."""
        exponent = torch.arange(length, device=Abar.device, dtype=torch.float32)
        log_abs = torch.log(Abar.abs().clamp_min(torch.finfo(torch.float32).tiny))
        radius = torch.exp(log_abs[..., None] * exponent)
        angle = torch.angle(Abar)[..., None] * exponent
        return torch.complex(radius * torch.cos(angle), radius * torch.sin(angle))

    def ssm_fft(self, u: torch.Tensor) -> torch.Tensor:
        """The global convolution form by FFT, from a zero state: ``u [..., T, d]`` -> ``[..., T, d]`` float32.

        The textbook training form of S4. Not used by :meth:`forward`: FFT roundoff (~1e-7
        relative) couples every output to every input, future ones included, which the causality
        invariant (bit-exact under a change of the future, zero Jacobian) does not allow. Equal
        to :meth:`ssm` to roundoff (tested).
        """
        with torch.autocast(u.device.type, enabled=False):
            u = u.float().transpose(-1, -2)  # [..., d, T]
            y = causal_fft_conv(u, self.kernel(u.shape[-1])) + self.D.float()[:, None] * u
        return y.transpose(-1, -2)

    def ssm(self, u: torch.Tensor, h0: Optional[torch.Tensor] = None, final_state: bool = True):
        """The SSM of every channel, chunked convolution: ``u [..., T, d]`` -> ``(y [..., T, d] float32, h_T)``.

        Within chunks of ``CHUNK`` tokens, the causal convolution with the kernel as a
        lower-triangular (Toeplitz) product; across chunks, the state in closed form: a chunk of
        ``n`` tokens adds ``C Ā^{t+1} h`` to its step ``t`` and leaves
        ``h' = Ā^n h + sum_j Ā^{n-1-j} B̄ u_j``. Exactly causal (structural zeros above the
        diagonal); ``O(T · CHUNK · d)`` work. ``h0``: the state before the first token (None: zeros);
        ``final_state=False`` skips the last chunk's state (``h_T`` is then None).
        """
        lead, (T, d) = u.shape[:-2], u.shape[-2:]
        with torch.autocast(u.device.type, enabled=False):
            u = u.float().reshape(-1, T, d).transpose(1, 2)  # [B', d, T]
            h = None if h0 is None else h0.reshape(-1, *h0.shape[len(lead):])
            Abar, Bbar = self.discretize()
            C = self._readout()
            width = min(T, CHUNK)
            if self.matrix == "hippo":
                inputs = krylov(Abar, Bbar, width)  # [d, N, c]: Ā^j B̄
                kernel = torch.einsum("hn,hnl->hl", C, inputs)
            else:
                powers = self._powers(Abar, width + 1)  # [d, M, c + 1]: Ā^0 .. Ā^c
                kernel = torch.einsum("hm,hml->hl", C * Bbar, powers[..., :width]).real
            lag = torch.arange(width, device=u.device)
            lag = lag[:, None] - lag[None, :] + width - 1  # [c, c]: i - j, offset past the zeros
            padded = torch.cat([kernel.new_zeros(kernel.shape[0], width - 1), kernel], dim=1)  # [d, 2c - 1]
            toeplitz = padded[:, lag]  # [d, c, c]: K_{i-j}, exact zeros above the diagonal
            outputs = []
            for start in range(0, T, width):
                chunk = u[..., start:start + width]  # [B', d, n]
                n = chunk.shape[-1]
                y = torch.einsum("hij,bhj->bhi", toeplitz[:, :n, :n], chunk)
                flipped = chunk.flip(-1)  # [B', d, n]: u_{n-1-j}
                advance = final_state or start + width < T
                if self.matrix == "hippo":
                    h_in = torch.einsum("hnj,bhj->bhn", inputs[..., :n], flipped) if advance else None
                    if h is not None:
                        carried = krylov(Abar[None], torch.einsum("hnk,bhk->bhn", Abar, h), n)  # Ā^{t+1} h
                        y = y + torch.einsum("hn,bhnt->bht", C, carried)
                        h_in = h_in + carried[..., n - 1] if advance else None
                else:
                    h_in = (torch.einsum("hm,hmj,bhj->bhm", Bbar, powers[..., :n], flipped.to(powers.dtype))
                            if advance else None)
                    if h is not None:
                        y = y + torch.einsum("hm,hmt,bhm->bht", C, powers[..., 1:n + 1], h).real
                        h_in = h_in + powers[..., n] * h if advance else None
                h = h_in
                outputs.append(y)
            y = torch.cat(outputs, dim=-1) + self.D.float()[:, None] * u
        return y.transpose(1, 2).reshape(*lead, T, d), None if h is None else h.reshape(*lead, *h.shape[1:])

    def _output(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """GELU, GLU, residual, then the MLP sublayer: ``x, y [B, T, d]`` -> ``[B, T, d]``."""
        x = x + self.dropout(F.glu(self.out_proj(F.gelu(y.to(x.dtype))), dim=-1))
        return x + self.dropout(self.mlp(self.norm_mlp(x)))

    def forward(self, x: torch.Tensor, ctx: LayerContext) -> torch.Tensor:
        return self._output(x, self.ssm(self.norm(x), final_state=False)[0])

    def allocate_cache(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> dict:
        """``h``: the state of a fresh sequence, zeros (``[B, d, N/2]`` complex64 or ``[B, d, N]`` float32)."""
        d = self.log_dt.shape[0]
        if self.matrix == "hippo":
            return {"h": torch.zeros(batch_size, d, self.n_state, device=device, dtype=torch.float32)}
        return {"h": torch.zeros(batch_size, d, self.n_state // 2, device=device, dtype=torch.complex64)}

    def step(self, x: torch.Tensor, ctx: LayerContext, cache: dict) -> torch.Tensor:
        """One token ``x [B, 1, d]``: ``h = Ā h + B̄ u``, ``y = C h + D u`` (updates ``cache["h"]``)."""
        if "h" not in cache:
            cache.update(self.allocate_cache(x.shape[0], x.device, x.dtype))
        u = self.norm(x[:, 0]).float()  # [B, d]
        with torch.autocast(x.device.type, enabled=False):
            Abar, Bbar = self.discretize()
            C = self._readout()
            if self.matrix == "hippo":
                h = torch.einsum("hnk,bhk->bhn", Abar, cache["h"]) + Bbar * u[..., None]  # [B, d, N]
                y = torch.einsum("hn,bhn->bh", C, h)
            else:
                h = Abar * cache["h"] + Bbar * u[..., None]  # [B, d, N/2]
                y = torch.einsum("hm,bhm->bh", C, h).real
        cache["h"] = h
        return self._output(x, (y + self.D.float() * u)[:, None])

    def forward_carry(self, x: torch.Tensor, ctx: LayerContext, cache: dict) -> torch.Tensor:
        """A window ``x [B, T, d]`` from ``cache["h"]`` (missing: zeros), advancing it (== :meth:`step` token by token)."""
        if x.dim() != 3:
            raise ValueError(f"x must be [B, T, d_model], got shape {tuple(x.shape)}")
        y, cache["h"] = self.ssm(self.norm(x), cache.get("h"))
        return self._output(x, y)

    def state_size(self, seq_len: int) -> int:
        """``d_model · N`` floats (diagonal: ``N/2`` complex modes per channel), whatever the length."""
        return self.log_dt.shape[0] * self.n_state

    def linear_mode(self, x: torch.Tensor, xc: torch.Tensor, ctx: LayerContext, bias_index: int, router=None):
        """DePass: norm scales, the GELU ratio and the GLU gate frozen; the SSM is linear; biases to ``bias_index``."""
        d = x.shape[-1]
        y = self.ssm(self.norm(x), final_state=False)[0].to(x.dtype)  # [B, T, d] the real SSM output
        value, gate = self.out_proj(F.gelu(y)).chunk(2, dim=-1)
        y_c = self.ssm(norm_linear(self.norm, x, xc), final_state=False)[0].to(x.dtype)  # [C, B, T, d]
        y_c = y_c * activation_ratio(y, F.gelu)
        value_c = F.linear(y_c, self.out_proj.weight[:d])
        value_c[bias_index] += self.out_proj.bias[:d]
        xc_mid = xc + value_c * torch.sigmoid(gate)
        x_mid = x + value * torch.sigmoid(gate)
        return self(x, ctx), xc_mid + mlp_linear(self.mlp, self.norm_mlp, x_mid, xc_mid, bias_index), None
