"""The triple hybrid (``"triple"``): local attention, an oscillatory SSM and a global mixer, mixed by a learned gate.

One residual layer with three parallel branches over the same input, each a mixer of the toolkit
built without its own MLP (``mlp_ratio=0``), and one MLP after them::

    δ_local  = LocalAttention(x) - x        # softmax attention over a band of triple_window keys
    δ_ossm   = OSSM(x) - x                  # the "ossm" mixer (long-range recurrent memory)
    δ_global = Global(x) - x                # the mixer named by triple_global (whole-sequence reach)
    g        = softmax_b(W_g norm(x) + b_g) # [B, T, 3, d]: per token and channel, a convex mix of the branches
    x        = x + Σ_b g_b ⊙ δ_b
    x        = x + MLP(norm(x))

Each branch keeps its own pre-norm and output projection (they are the registered mixers' classes,
not re-implementations); the gate starts uniform (``W_g = 0``, ``b_g = 0``: each branch weighs 1/3).

The local branch (:class:`LocalAttention`) is dense attention restricted to a band: query ``i``
reads keys ``i - W + 1 .. i`` (causal) or ``|i - j| < W`` (bidirectional), ``W = triple_window``;
decoding keeps only the last ``W`` keys and values. The global branch (``triple_global``) is one of
:data:`TRIPLE_GLOBALS`, checked lazily against the registry: ``"cosformer"`` and ``"performer"``
(linear-time causal attention, the default ``"cosformer"``) are valid once those mixers are
registered, ``"attention"`` (dense causal softmax) always; ``"fnet"`` and ``"linformer"`` are
bidirectional only, so a triple layer with them needs ``causal=False``. A causal triple layer is
causal in every branch and the gate; with ``causal=False`` the local band and the global mixer
read both sides (the OSSM scan stays left to right).

Forms: the parallel forward; one token at a time when every branch has a step (the caches of the
three branches side by side); DePass with the gate frozen (each branch's own linear mode).

Example:
    >>> import torch
    >>> from sosm.model import SOSMConfig
    >>> from sosm.model.context import LayerContext
    >>> config = SOSMConfig(d_model=32, n_heads=2, model="triple", causal=False, triple_global="fnet", triple_window=4)
    >>> TripleHybrid(config)(torch.randn(2, 7, 32), LayerContext()).shape
    torch.Size([2, 7, 32])
"""
from __future__ import annotations

from dataclasses import replace
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..context import LayerContext
from .attention import MLP, AttentionBlock
from .base import Mixer, build_mixer, get_mixer, register_mixer
from .ossm import OscillatorySSM

#: accepted ``SOSMConfig.triple_global`` names (each valid only once registered; the last two bidirectional only)
TRIPLE_GLOBALS = ("cosformer", "performer", "attention", "fnet", "linformer")
BRANCHES = ("local", "ossm", "global")


def check_triple_global(name, causal: bool) -> Optional[str]:
    """None when ``name`` can be the triple hybrid's global branch in a model with ``causal``; else what is accepted."""
    if name not in TRIPLE_GLOBALS:
        return f"one of {TRIPLE_GLOBALS}"
    try:
        cls = get_mixer(name)
    except ValueError:
        return (f"a registered mixer of {TRIPLE_GLOBALS}: {name!r} is not registered in this build "
                f"(registered: {[g for g in TRIPLE_GLOBALS if _registered(g)]})")
    if causal and not cls.causal_capable:
        return (f"a causal global mixer in a causal model ({[g for g in TRIPLE_GLOBALS if _causal(g)]}): "
                f"{name!r} is bidirectional only (it mixes every position with every other); or causal=false")
    return None


def _registered(name: str) -> bool:
    try:
        get_mixer(name)
    except ValueError:
        return False
    return True


def _causal(name: str) -> bool:
    return _registered(name) and get_mixer(name).causal_capable


class LocalAttention(AttentionBlock):
    """Softmax attention over a band of ``window`` keys (the triple hybrid's local branch; not registered).

    Causal: query ``i`` reads ``max(0, i - window + 1) .. i``; bidirectional: every ``j`` with ``|i - j| < window``.
    """

    name = "local_attention"

    def __init__(self, config, window: int):
        super().__init__(config)
        self.window = window

    def band(self, seq_len: int, device) -> torch.Tensor:
        """Bool ``[T, T]``: True where query ``i`` may read key ``j``."""
        i = torch.arange(seq_len, device=device)
        gap = i[:, None] - i[None, :]  # i - j
        return (gap >= 0) & (gap < self.window) if self.causal else gap.abs() < self.window

    def attend(self, q, k, v, ctx: LayerContext) -> torch.Tensor:
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           attn_mask=self.band(q.shape[1], q.device))  # [B, H, T, d]
        return y.transpose(1, 2)  # [B, T, H, d]

    def attention_scores(self, q: torch.Tensor, k: torch.Tensor, ctx: LayerContext) -> torch.Tensor:
        scores = torch.einsum("bihd,bjhd->bhij", q.float(), k.float()) / self.head_dim ** 0.5
        return scores.masked_fill(~self.band(q.shape[1], q.device), float("-inf"))

    def step(self, x: torch.Tensor, ctx: LayerContext, cache: dict) -> torch.Tensor:
        """One token; the cache keeps the last ``window`` keys and values only."""
        if not self.causal:
            raise NotImplementedError("the triple hybrid's local attention is built bidirectional (causal=False): a "
                                      "query reads later positions, so it has no one-token-at-a-time step")
        B, _, d = x.shape
        q, k, v = self._qkv(x, ctx)  # [B, 1, H, hd]
        keys = k if "k" not in cache else torch.cat([cache["k"], k], dim=1)[:, -self.window:]
        values = v if "v" not in cache else torch.cat([cache["v"], v], dim=1)[:, -self.window:]
        cache["k"], cache["v"] = keys, values
        scores = torch.einsum("bhd,bnhd->bnh", q[:, 0].float(), keys.float()) / self.head_dim ** 0.5
        y = torch.einsum("bnh,bnhd->bhd", torch.softmax(scores, dim=1), values.float()).to(x.dtype)
        return x + self.out_proj(y.reshape(B, 1, d))

    def state_size(self, seq_len: int) -> int:
        return 2 * min(seq_len, self.window) * self.n_heads * self.head_dim


@register_mixer
class TripleHybrid(Mixer):
    """Local attention + OSSM + a global mixer, gated per token and channel, then an MLP (module docstring).

    Args:
        config: ``SOSMConfig`` (d_model, n_heads, d_state, mlp_ratio, dropout, causal, triple_window,
            triple_global and that mixer's own knobs).

    Shapes: ``forward(x [B, T, d_model], ctx) -> [B, T, d_model]``.
    """

    name = "triple"
    bidirectional_capable = True

    def __init__(self, config, struct_dim: Optional[int] = None):
        super().__init__()
        problem = check_triple_global(config.triple_global, config.causal)
        if problem is not None:
            raise ValueError(f"SOSMConfig.triple_global={config.triple_global!r} is invalid; accepted: {problem}")
        d = config.d_model
        branch_config = replace(config, mlp_ratio=0, moe_experts=0, mod_every=0)  # the branches without MLPs
        self.local = LocalAttention(branch_config, config.triple_window)
        self.ossm = OscillatorySSM(branch_config)
        self.global_mixer = build_mixer(config.triple_global, branch_config, causal=config.causal)
        self.norm_gate = nn.RMSNorm(d, eps=1e-5)
        self.gate = nn.Linear(d, len(BRANCHES) * d)
        self.norm_mlp, self.mlp = (nn.RMSNorm(d, eps=1e-5), MLP(d, config.mlp_hidden)) if config.mlp_hidden else (None, None)
        self.dropout = nn.Dropout(config.dropout)

    @property
    def branches(self) -> tuple:
        return self.local, self.ossm, self.global_mixer

    def init_parameters(self) -> None:
        """The gate starts uniform: every branch weighs 1/3 at every token and channel."""
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)

    def gates(self, x: torch.Tensor) -> torch.Tensor:
        """``[3, B, T, d]``: the branch weights (softmax over the branches) of each token and channel."""
        logits = self.gate(self.norm_gate(x)).unflatten(-1, (len(BRANCHES), -1))  # [B, T, 3, d]
        return torch.softmax(logits.float(), dim=-2).to(x.dtype).movedim(-2, 0)

    def _combine(self, x: torch.Tensor, outs) -> torch.Tensor:
        gates = self.gates(x)
        x = x + self.dropout(sum(g * (out - x) for g, out in zip(gates, outs)))
        return x if self.mlp is None else x + self.dropout(self.mlp(self.norm_mlp(x)))

    def forward(self, x: torch.Tensor, ctx: LayerContext) -> torch.Tensor:
        return self._combine(x, [branch(x, ctx) for branch in self.branches])

    def step(self, x: torch.Tensor, ctx: LayerContext, cache: dict) -> torch.Tensor:
        """One token: each branch's own step on its own cache (``cache["local"|"ossm"|"global"]``), gated as in the forward.

        A carried window (:meth:`forward_carry`) carries nothing: the local and global branches read their window.
        """
        for name, branch in zip(BRANCHES, self.branches):
            cache.setdefault(name, branch.allocate_cache(x.shape[0], x.device, x.dtype))
        return self._combine(x, [branch.step(x, ctx, cache[name]) for name, branch in zip(BRANCHES, self.branches)])

    def state_size(self, seq_len: int) -> int:
        """The three branches' states together (the band's K/V, the oscillators, the global mixer's)."""
        return sum(branch.state_size(seq_len) for branch in self.branches)

    def linear_mode(self, x: torch.Tensor, xc: torch.Tensor, ctx: LayerContext, bias_index: int, router=None):
        """DePass: every branch in its own linear mode, the gate (and the MLP's GELU ratio) frozen."""
        gates = self.gates(x)
        outs, outs_c = zip(*[branch.linear_mode(x, xc, ctx, bias_index, router)[:2] for branch in self.branches])
        x_mid = x + sum(g * (out - x) for g, out in zip(gates, outs))
        xc_mid = xc + sum(g * (out_c - xc) for g, out_c in zip(gates, outs_c))
        if self.mlp is None:
            return self(x, ctx), xc_mid, None
        return self(x, ctx), xc_mid + self.mlp.linear_mode(self.norm_mlp, x_mid, xc_mid, bias_index), None
