"""FNet (``"fnet"``): token mixing by a 2-D discrete Fourier transform, real part; bidirectional only.

Lee-Thorp et al. (2021), "FNet: Mixing Tokens with Fourier Transforms": the attention sublayer is
replaced by a parameter-free DFT over the hidden axis and then over the sequence axis, keeping the
real part. Every output position reads every input position, so it has no causal form
(``causal_capable=False``: a causal model that names it fails at construction). The block::

    u = norm(x)                                                  # [B, T, d]
    m = Re(FFT_T(FFT_d(u))) / sqrt(T d)                          # orthonormal scaling: m stays O(u)
    m = m * sigmoid(W_g u + b_g)                                 # fnet_glu=True: the GLU-gated variant
    x = x + W_o m                                                # then the MLP: x + MLP(norm(x))

The ``1 / sqrt(T d)`` (``norm="ortho"``) keeps the mixing's scale independent of the length (the
paper relies on a post-LayerNorm instead; this stack is pre-norm). ``W_o`` is the learned output
projection the paper does not have: without it the residual branch would be a fixed transform.
Given the real pass's norm scale (and gate), the layer is linear in its input
(:meth:`FNet.linear_mode`, DePass, exact). No recurrent step (:meth:`FNet.step` refuses).

Example:
    >>> import torch
    >>> from sosm.model import SOSMConfig
    >>> from sosm.model.context import LayerContext
    >>> layer = FNet(SOSMConfig(d_model=32, n_heads=2, model="fnet", causal=False))
    >>> layer(torch.randn(2, 7, 32), LayerContext()).shape
    torch.Size([2, 7, 32])
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..context import LayerContext
from .attention import MLP
from .base import Mixer, register_mixer
from .linear import norm_linear


def fourier_mix(u: torch.Tensor) -> torch.Tensor:
    """``Re(FFT_T(FFT_d(u)))`` with orthonormal scaling over the last two axes; ``u [..., T, d]`` (at least fp32)."""
    return torch.fft.fft2(u.to(torch.promote_types(u.dtype, torch.float32)), dim=(-2, -1), norm="ortho").real.to(u.dtype)


@register_mixer
class FNet(Mixer):
    """2-D Fourier token mixing (real part), an output projection, optionally GLU-gated, then an MLP.

    Args:
        config: ``SOSMConfig`` (d_model, mlp_ratio, dropout, fnet_glu); built only with ``causal=False``.

    Shapes: ``forward(x [B, T, d_model], ctx) -> [B, T, d_model]``.
    """

    name = "fnet"
    causal_capable = False
    bidirectional_capable = True
    has_feed_forward = True

    def __init__(self, config, struct_dim: Optional[int] = None):
        super().__init__()
        d = config.d_model
        self.norm_mix = nn.RMSNorm(d, eps=1e-5)
        self.gate = nn.Linear(d, d) if config.fnet_glu else None
        self.out_proj = nn.Linear(d, d, bias=False)
        self.norm_mlp, self.mlp = (nn.RMSNorm(d, eps=1e-5), MLP(d, config.mlp_hidden)) if config.mlp_hidden else (None, None)
        self.dropout = nn.Dropout(config.dropout)

    def _mixed(self, x: torch.Tensor) -> torch.Tensor:
        """The gated Fourier mixing of ``norm(x)`` before the output projection, ``[B, T, d]``."""
        u = self.norm_mix(x)
        mixed = fourier_mix(u)
        return mixed if self.gate is None else mixed * torch.sigmoid(self.gate(u))

    def forward(self, x: torch.Tensor, ctx: LayerContext) -> torch.Tensor:
        x = x + self.dropout(self.out_proj(self._mixed(x)))
        return x if self.mlp is None else x + self.dropout(self.mlp(self.norm_mlp(x)))

    def step(self, x: torch.Tensor, ctx: LayerContext, cache: dict) -> torch.Tensor:
        raise NotImplementedError("mixer 'fnet' is bidirectional only: every output mixes every position (a Fourier "
                                  "transform over the whole sequence), so it has no one-token-at-a-time step")

    def state_size(self, seq_len: int) -> int:
        """The whole normed input ``T · d``: each output position is a transform of all of it."""
        return seq_len * self.out_proj.in_features

    def linear_mode(self, x: torch.Tensor, xc: torch.Tensor, ctx: LayerContext, bias_index: int, router=None):
        """DePass: the norm scale (and the GLU gate) frozen; the DFT is linear, so this is exact."""
        u_c = norm_linear(self.norm_mix, x, xc)  # [C, B, T, d]
        mixed_c = fourier_mix(u_c)
        if self.gate is not None:
            mixed_c = mixed_c * torch.sigmoid(self.gate(self.norm_mix(x)))
        xc_mid = xc + F.linear(mixed_c, self.out_proj.weight)
        if self.mlp is None:
            return self(x, ctx), xc_mid, None
        x_mid = x + self.out_proj(self._mixed(x))
        return self(x, ctx), xc_mid + self.mlp.linear_mode(self.norm_mlp, x_mid, xc_mid, bias_index), None
