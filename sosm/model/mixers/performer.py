"""Performer (Choromanski et al. 2021, FAVOR+): softmax attention through positive orthogonal random features.

Per head, ``exp(q·k / sqrt(hd)) = E[φ(q')·φ(k')]`` with ``q' = q / hd^(1/4)`` (the same for k) and the positive
random features ``φ_m(x) = exp(ω_m·x − |x|²/2) / sqrt(m)``, ``ω_1..ω_m`` orthogonal in blocks of ``hd`` rows
with Gaussian (chi-distributed) norms (``SOSMConfig.performer_features`` = m per head). The output of query i is
``φ(q_i)·Σ_j φ(k_j) v_jᵀ / φ(q_i)·Σ_j φ(k_j)`` over ``j <= i`` (causal) or every j (bidirectional models,
``getattr(config, "causal", True)`` False), linear in T.

Stability without looking ahead: each query's features are divided by their own maximum (a per-query
constant, cancelling between numerator and denominator). A key's feature is at most ``exp(|ω_m|²/2)``
(the maximum of ``ω·x − |x|²/2`` over x); where that bound passes ``e^30`` (head dims above ~50), the excess
``s_m = max(|ω_m|²/2 − 30, 0)`` moves from feature m of the keys to the queries, which leaves every product
``φ_m(q) φ_m(k)`` unchanged. Features get ``1e-6`` added (before the ``1/sqrt(m)`` scale), so every
denominator is positive.

Forms: the causal forward is the chunked prefix sum of :func:`.chunked.scalar_decay_chunked` with no decay
(values carry a ones channel: the denominator); the step keeps the running sums ``S = Σ φ(k) vᵀ`` and
``z = Σ φ(k)``: ``H·m·(hd + 1)`` floats per sequence whatever T. DePass freezes the per-query weights
``φ(q_i)·φ(k_j) / den_i`` (``[B, H, T, T]``, materialised at analysis sizes).

Redrawing (``SOSMConfig.performer_redraw`` = n > 0): every n-th training forward draws new features before it
runs, from a generator seeded by the ``draw_seed`` buffer (itself drawn from the torch RNG when the layer is
built, then advanced by each draw), not from the global RNG: every rank of a distributed run holds the same
seed, so every rank draws the same features (FSDP does not broadcast buffers; the ranks' RNGs differ). The
features, the seed and the forward counter are buffers, so they are saved with the state dict and a resumed
run continues from the same features, seed and count. (Reading the counter syncs host and
device once per training forward, only when redrawing is on.) (Redrawing with gradient
checkpointing is refused by the config: the recomputed forward would redraw again.)

Example:
    >>> import torch
    >>> from sosm.model import SOSMConfig
    >>> from sosm.model.context import LayerContext
    >>> block = Performer(SOSMConfig(d_model=32, n_heads=2, model="performer", performer_features=16))
    >>> block(torch.randn(2, 5, 32), LayerContext()).shape
    torch.Size([2, 5, 32])
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from ..context import LayerContext
from .attention import AttentionBlock
from .base import register_mixer
from .chunked import scalar_decay_chunked, scalar_decay_step

FEATURE_EPS = 1e-6  # added to every feature: positive denominators
KEY_BOUND = 30.0  # a key's feature stays below exp(KEY_BOUND) (the excess moves to the queries)


def orthogonal_random_features(n_heads: int, n_features: int, dim: int, device=None,
                                generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``[n_heads, n_features, dim]`` float32: per head, blocks of ``dim`` orthonormal rows scaled by Gaussian norms.

    Drawn on the CPU from ``generator`` (default: the global torch RNG), so the same on every device.
    """
    blocks = -(-n_features // dim)
    gaussian = torch.randn(n_heads, blocks, dim, dim, generator=generator)
    q, r = torch.linalg.qr(gaussian)  # [H, blocks, dim, dim]: orthonormal columns
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)  # R's diagonal positive: Q uniform (Haar)
    rows = q.transpose(-1, -2).reshape(n_heads, blocks * dim, dim)[:, :n_features]
    norms = torch.randn(n_heads, n_features, dim, generator=generator).norm(dim=-1, keepdim=True)  # chi(dim): a Gaussian row's norm
    return (rows * norms).to(device)


def positive_features(x: torch.Tensor, omega: torch.Tensor, is_query: bool) -> torch.Tensor:
    """FAVOR+ features of ``x [B, T, H, hd]`` (already scaled by ``hd^(-1/4)``): ``[B, T, H, m]`` float32.

    ``omega [H, m, hd]``. ``exp(ω·x − |x|²/2)``, keys shifted down by ``s_m`` and queries up by it, queries
    then divided by their own maximum (see the module docstring); ``+ 1e-6``, over ``sqrt(m)``.
    """
    x = x.float()
    exponent = torch.einsum("bthd,hmd->bthm", x, omega) - x.pow(2).sum(-1, keepdim=True) / 2
    shift = (omega.pow(2).sum(-1) / 2 - KEY_BOUND).clamp_min(0)  # [H, m]
    if is_query:
        exponent = exponent + shift
        exponent = exponent - exponent.amax(-1, keepdim=True).detach()
    else:
        exponent = exponent - shift
    return (torch.exp(exponent) + FEATURE_EPS) / math.sqrt(omega.shape[1])


@register_mixer
class Performer(AttentionBlock):
    """Performer FAVOR+ attention and an MLP, pre-norm, residual.

    Args:
        config: ``SOSMConfig`` (d_model, n_heads, mlp_ratio, dropout, performer_features, performer_redraw,
            chunk_size; ``causal`` when the config has it, default True).

    Shapes: ``forward(x [B, T, d_model], ctx) -> [B, T, d_model]``.
    """

    name = "performer"
    bidirectional_capable = True  # causal=False: every query reads every key (the unmasked sums)

    def __init__(self, config, struct_dim: Optional[int] = None):
        super().__init__(config)
        self.n_features = config.performer_features
        self.redraw_every = config.performer_redraw
        self.causal = bool(getattr(config, "causal", True))
        self.chunk_size = config.chunk_size or 64
        self.register_buffer("omega", torch.empty(self.n_heads, self.n_features, self.head_dim))  # [H, m, hd]
        self.register_buffer("forwards_since_draw", torch.zeros((), dtype=torch.long))
        self.register_buffer("draw_seed", torch.randint(0, 2 ** 62, ()))  # the next draw's seed (see the module doc)
        self.redraw_features()

    def redraw_features(self) -> None:
        """Draw new features from the ``draw_seed`` generator, advance the seed, reset the forward counter
        (nothing on the meta device)."""
        if self.omega.device.type == "meta":
            return
        generator = torch.Generator().manual_seed(int(self.draw_seed))
        with torch.no_grad():
            self.omega.copy_(orthogonal_random_features(self.n_heads, self.n_features, self.head_dim,
                                                        generator=generator))
            self.draw_seed.fill_(int(torch.randint(0, 2 ** 62, (), generator=generator)))
            self.forwards_since_draw.zero_()

    def _features(self, q: torch.Tensor, k: torch.Tensor):
        scale = self.head_dim ** -0.25
        return positive_features(q * scale, self.omega, True), positive_features(k * scale, self.omega, False)

    def forward(self, x: torch.Tensor, ctx: LayerContext) -> torch.Tensor:
        if self.training and self.redraw_every:
            if int(self.forwards_since_draw) >= self.redraw_every:
                self.redraw_features()
            self.forwards_since_draw += 1
        return super().forward(x, ctx)

    def attend(self, q, k, v, ctx: LayerContext) -> torch.Tensor:
        phi_q, phi_k = self._features(q, k)  # [B, T, H, m]
        values = torch.cat([v.float(), v.new_ones(*v.shape[:-1], 1, dtype=torch.float32)], dim=-1)  # [B, T, H, hd+1]
        if self.causal:
            out, _ = scalar_decay_chunked(values, values.new_zeros(values.shape[:-1]), phi_k, phi_q, self.chunk_size)
        else:
            sums = torch.einsum("bthm,bthp->bhpm", phi_k, values)  # [B, H, hd+1, m]
            out = torch.einsum("bhpm,bthm->bthp", sums, phi_q)
        return (out[..., :-1] / out[..., -1:]).to(q.dtype)  # [B, T, H, hd]

    def step(self, x: torch.Tensor, ctx: LayerContext, cache: dict) -> torch.Tensor:
        if not self.causal:
            raise NotImplementedError("mixer 'performer' in a bidirectional model has no recurrent step "
                                      "(every output reads every position)")
        return super().step(x, ctx, cache)

    def cache_and_attend(self, q, k, v, cache: dict, ctx: LayerContext) -> torch.Tensor:
        """``q, k, v [B, H, hd]``: fold the new key into the running sums ``[B, H, hd+1, m]``, read them with ``q``."""
        if cache.get("position", 0) != ctx.position:
            raise ValueError(f"decoding position {ctx.position} does not follow the cache at {cache.get('position', 0)}")
        phi_q, phi_k = self._features(q[:, None], k[:, None])  # [B, 1, H, m]
        values = torch.cat([v.float(), v.new_ones(*v.shape[:-1], 1, dtype=torch.float32)], dim=-1)  # [B, H, hd+1]
        state = cache.get("sums")
        if state is None:
            state = values.new_zeros(*values.shape, self.n_features)
        out, cache["sums"] = scalar_decay_step(state, values, values.new_zeros(values.shape[:-1]), phi_k[:, 0],
                                               phi_q[:, 0])
        cache["position"] = ctx.position + 1
        return (out[..., :-1] / out[..., -1:]).to(q.dtype)

    def attention_probs(self, x: torch.Tensor, ctx: LayerContext) -> torch.Tensor:
        """Frozen weights ``[B, H, T, T]`` (float32): ``φ(q_i)·φ(k_j) / den_i`` over ``j <= i`` (all j bidirectional)."""
        q, k, _ = self._qkv(x, ctx)
        phi_q, phi_k = self._features(q, k)
        weights = torch.einsum("bihm,bjhm->bhij", phi_q, phi_k)
        if self.causal:
            weights = weights.tril()
        return weights / weights.sum(-1, keepdim=True)

    def state_size(self, seq_len: int) -> int:
        """The running sums: ``H · m · (hd + 1)`` floats (and an MoE feed-forward's routing state), whatever T."""
        return self.n_heads * self.n_features * (self.head_dim + 1) + self.mlp_state_size(seq_len)
