"""Mixture-of-Depths (Raposo et al. 2024): a learned router sends part of the tokens through a block, the rest around it.

``"mod:<mixer>"`` (in ``SOSMConfig.layer_pattern``, or every ``SOSMConfig.mod_every``-th layer)
wraps any registered mixer. A router scores each token, ``r_t = w · norm(x_t)``; the chosen tokens
form a shorter sequence (their order kept) that runs through the wrapped mixer, and each chosen
token's update is scaled by ``sigmoid(r_t)`` (the router's gradient path):

    y_t = x_t + sigmoid(r_t) * (block(x_chosen)_t - x_t)    if t is chosen,    y_t = x_t otherwise.

**Causal choice.** The paper picks the top ``capacity * T`` scores of the sequence, which lets a
later token push an earlier one out; at inference it falls back on an auxiliary predictor. Here
the choice is causal by construction: token t goes through when its score ranks in the top
``C_t = ceil(capacity * (t + 1))`` of the scores at positions ``0..t`` (ties to the earlier
position; :func:`~sosm.model.routing.capacity.rank_scores`) and the block has taken fewer than
``C_t`` tokens so far (:func:`~sosm.model.routing.capacity.clip_to_capacity`). So every prefix
sends at most ``ceil(capacity * n)`` of its n tokens through (token 0 always goes), the compute
budget holds, the forward and incremental decoding make the same choice, and no auxiliary loss
or predictor is needed.

**Inside the block** the chosen tokens see only each other: positions (rotary angles, Graph-ALiBi
coordinates, the landmark structure) are those of their original places; graph neighbours are
renumbered into the shorter sequence, and neighbours that went around the block are dropped.
Decoding keeps one cache of the wrapped mixer per sequence (the sequences of a batch choose
different tokens) and steps it only when its token is chosen. Memory reads and the carried-window
form are refused.

DePass (:meth:`MixtureOfDepths.linear_mode`): choice and gate frozen, the wrapped mixer's own
linear mode runs on the chosen tokens' components.

Example:
    >>> from sosm.model import SOSMConfig
    >>> SOSMConfig(model="transformer", n_layers=4, mod_every=2).layer_types
    ('attention', 'mod:attention', 'attention', 'mod:attention')
"""
from __future__ import annotations

from typing import ClassVar, Optional

import torch
import torch.nn as nn

from ...kernels import GraphLayout
from ..context import LayerContext
from ..routing.capacity import clip_to_capacity, prefix_capacity, rank_scores
from .base import Mixer, register_wrapper


def _one_hot_rows(index: torch.Tensor, valid: torch.Tensor, seq_len: int) -> torch.Tensor:
    """``[B, K, T]``: row k is the one-hot of original position ``index[b, k]`` (zero where not ``valid``)."""
    rows = torch.zeros(*index.shape, seq_len, device=index.device)
    return rows.scatter_(2, index[..., None], valid[..., None].float())


class MixtureOfDepths(Mixer):
    """Mixture-of-Depths around the mixer ``inner_class`` (built per wrapped mixer by :func:`wrap_in_mod`).

    Args:
        config: ``SOSMConfig`` (``mod_capacity``; the rest goes to the wrapped mixer).
        struct_dim: passed to the wrapped mixer.
    """

    inner_class: ClassVar[Optional[type]] = None

    def __init__(self, config, struct_dim: Optional[int] = None):
        super().__init__()
        if self.inner_class is None:
            raise TypeError("MixtureOfDepths wraps a mixer: build it by name, e.g. get_mixer('mod:mamba')")
        self.inner = self.inner_class(config, struct_dim)
        self.capacity = float(config.mod_capacity)
        self.norm = nn.RMSNorm(config.d_model, eps=1e-5)
        self.router = nn.Linear(config.d_model, 1, bias=False)
        self.aux_loss: Optional[torch.Tensor] = None  # MoD needs none: the causal choice is exact at inference
        self._last: Optional[tuple] = None

    # ---- the choice ------------------------------------------------------------------------------------------
    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Router scores ``[B, T]`` (float32) of ``x [B, T, d]``."""
        with torch.autocast(x.device.type, enabled=False):
            return (self.norm(x.float()) @ self.router.weight.float().t())[..., 0]

    def choose(self, scores: torch.Tensor, previous: Optional[torch.Tensor] = None,
               chosen_before: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``[B, T]`` bool: score t ranks in the top ``C_t = ceil(capacity * (t + 1))`` of its prefix, and the block
        has taken fewer than ``C_t`` tokens (decoding: ``previous`` scores ``[B, P]``, ``chosen_before`` ``[B]``)."""
        P = 0 if previous is None else previous.shape[1]
        capacity = prefix_capacity(torch.arange(P, P + scores.shape[1], device=scores.device), self.capacity)
        candidates = rank_scores(scores, causal=True, previous=previous) < capacity
        before = None if chosen_before is None else chosen_before[:, None]
        return clip_to_capacity(candidates[..., None], capacity, before)[0][..., 0]

    def _compact(self, x: torch.Tensor, chosen: torch.Tensor):
        """``(index [B, K], valid [B, K])``: the chosen positions first, in order, padded to ``K = ceil(capacity * T)``.

        K is the most tokens the capped choice can take: it depends on T alone, so the wrapped
        mixer sees the same shapes whatever later tokens hold (and no host sync).
        """
        T = x.shape[1]
        K = min(T, int(prefix_capacity(torch.tensor([T - 1]), self.capacity)))
        order = torch.sort((~chosen).to(torch.int8), dim=1, stable=True).indices  # [B, T]
        valid = torch.arange(K, device=x.device)[None] < chosen.sum(1, keepdim=True)
        return order[:, :K], valid

    @staticmethod
    def _check(ctx: LayerContext) -> None:
        if ctx.memory is not None or ctx.record_kv is not None:
            raise NotImplementedError("a Mixture-of-Depths layer does not read or write long-term memory; "
                                      "build the model without memory, or without mod layers")

    def sub_context(self, ctx: LayerContext, index: torch.Tensor, valid: torch.Tensor) -> LayerContext:
        """The context of the chosen tokens: their positions, coordinates, structure; neighbours renumbered."""
        B, K = index.shape

        def rows(t: Optional[torch.Tensor]):
            if t is None:
                return None
            t = t.expand(B, *t.shape[1:])
            return t.gather(1, index.view(B, K, *([1] * (t.dim() - 2))).expand(B, K, *t.shape[2:]))

        sub = LayerContext(angles=rows(ctx.angles), alibi_coords=rows(ctx.alibi_coords),
                           structure=rows(ctx.structure))
        if ctx.neighbors is not None:
            T = ctx.neighbors.shape[1]
            compact_of = torch.full((B, T), -1, dtype=torch.long, device=index.device)
            compact_of.scatter_(1, index, torch.where(valid, torch.arange(K, device=index.device)[None], -1))
            sub.neighbors = torch.where(valid[..., None], self._renumber(rows(ctx.neighbors), compact_of), -1)
            sub.layout = GraphLayout.build(sub.neighbors)
        return sub

    @staticmethod
    def _renumber(neighbors: torch.Tensor, compact_of: torch.Tensor) -> torch.Tensor:
        """Neighbour positions ``[B, K, Kn]`` -> their index among the chosen tokens (-1: not chosen / padding)."""
        B, K, Kn = neighbors.shape
        mapped = compact_of.gather(1, neighbors.clamp_min(0).long().reshape(B, K * Kn)).view(B, K, Kn)
        return torch.where(neighbors >= 0, mapped, -1).to(neighbors.dtype)

    # ---- the forms -------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, ctx: LayerContext) -> torch.Tensor:
        """``x [B, T, d]`` -> ``[B, T, d]``: the chosen tokens through the wrapped mixer, the rest unchanged."""
        self._check(ctx)
        scores = self.scores(x)  # [B, T]
        chosen = self.choose(scores)
        index, valid = self._compact(x, chosen)
        take = index[..., None].expand(-1, -1, x.shape[-1])
        xs = x.gather(1, take) * valid[..., None]  # [B, K, d]; padding rows (after the chosen) are zero
        ys = self.inner(xs, self.sub_context(ctx, index, valid))
        gate = (torch.sigmoid(scores).gather(1, index) * valid)[..., None]  # [B, K, 1]
        self._last = (chosen.detach(), torch.sigmoid(scores).detach())
        return x.scatter_add(1, take, (ys - xs) * gate.to(x.dtype))

    def allocate_cache(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> dict:
        """Prefix scores, each position's index among the chosen (-1: around), one wrapped cache per sequence."""
        return {"scores": torch.zeros(batch_size, 0, device=device),
                "compact_of": torch.zeros(batch_size, 0, dtype=torch.long, device=device),
                "inner": [self.inner.allocate_cache(1, device, dtype) for _ in range(batch_size)]}

    def step(self, x: torch.Tensor, ctx: LayerContext, cache: dict) -> torch.Tensor:
        """One decoding step ``x [B, 1, d]``: the same choice as the forward; a chosen token steps its sequence's cache."""
        self._check(ctx)
        scores = self.scores(x)  # [B, 1]
        before = (cache["compact_of"] >= 0).sum(1)  # [B] tokens chosen before this one
        chosen = self.choose(scores, cache["scores"], before)[:, 0]  # [B]
        cache["scores"] = torch.cat([cache["scores"], scores], 1)
        cache["compact_of"] = torch.cat([cache["compact_of"], torch.where(chosen, before, -1)[:, None]], 1)
        out = x.clone()
        gate = torch.sigmoid(scores).to(x.dtype)  # [B, 1]
        for b in chosen.nonzero().flatten().tolist():  # sequences of a batch choose different tokens
            sub = self._step_context(ctx, cache["compact_of"][b], b, int(before[b]))
            y = self.inner.step(x[b:b + 1], sub, cache["inner"][b])
            out[b:b + 1] = x[b:b + 1] + gate[b] * (y - x[b:b + 1])
        return out

    def _step_context(self, ctx: LayerContext, compact_of: torch.Tensor, b: int, position: int) -> LayerContext:
        def row(t):
            return None if t is None else t[b:b + 1] if t.shape[0] > 1 else t

        sub = LayerContext(angles=row(ctx.angles), structure=row(ctx.structure), position=position)
        if ctx.alibi_coords is not None:  # [B, t+1, L]: the chosen positions' coordinates, this one last
            sub.alibi_coords = ctx.alibi_coords[b:b + 1, (compact_of >= 0).nonzero().flatten()]
        if ctx.neighbors is not None:
            sub.neighbors = self._renumber(ctx.neighbors[b:b + 1], compact_of[None])
        return sub

    def forward_carry(self, x: torch.Tensor, ctx: LayerContext, cache: dict) -> torch.Tensor:
        raise NotImplementedError(f"mixer {self.name!r} has no carried-window form (streaming); decode step by "
                                  "step, or use a model without Mixture-of-Depths layers")

    def linear_mode(self, x: torch.Tensor, xc: torch.Tensor, ctx: LayerContext, bias_index: int, router=None):
        """DePass: the choice and the gates frozen; the wrapped mixer's linear mode on the chosen tokens."""
        self._check(ctx)
        C, B, T, d = xc.shape
        scores = self.scores(x)
        index, valid = self._compact(x, self.choose(scores))
        take = index[..., None].expand(-1, -1, d)
        xs = x.gather(1, take) * valid[..., None]
        xcs = xc.gather(2, take.expand(C, -1, -1, -1)) * valid[..., None]
        rows = _one_hot_rows(index, valid, T)  # [B, K, T]

        def sub_router(probs_s, values_s):  # the caller's router sees the original positions
            probs = torch.einsum("bit,bhij,bju->bhtu", rows, probs_s, rows)
            values = torch.einsum("bkt,cbkhd->cbthd", rows, values_s)
            return torch.einsum("bkt,cbthd->cbkhd", rows, router(probs, values))

        _, ycs, probs_s = self.inner.linear_mode(xs, xcs, self.sub_context(ctx, index, valid), bias_index,
                                                 None if router is None else sub_router)
        gate = (torch.sigmoid(scores).gather(1, index) * valid)[..., None]
        xc_out = xc.scatter_add(2, take.expand(C, -1, -1, -1), (ycs - xcs) * gate)
        probs = None if probs_s is None else torch.einsum("bit,bhij,bju->bhtu", rows, probs_s, rows)
        return self(x, ctx), xc_out, probs

    def state_size(self, seq_len: int) -> int:
        """The wrapped mixer's state for the tokens it may have seen, plus two numbers per position."""
        return self.inner.state_size(seq_len) + 2 * seq_len

    # ---- what it reports -------------------------------------------------------------------------------------
    def routing_stats(self) -> dict:
        """Share of tokens through the block, and the mean gate of those."""
        if self._last is None:
            return {}
        chosen, gate = self._last
        return {"through": float(chosen.float().mean()),
                "gate": float((gate * chosen).sum() / chosen.sum().clamp_min(1))}

    def token_routes(self) -> dict:
        if self._last is None:
            return {}
        chosen, gate = self._last
        return {"kind": "mod", "through": chosen.tolist(), "gate": [[round(g, 4) for g in row] for row in gate.tolist()]}


def wrap_in_mod(inner: type) -> type:
    """The Mixture-of-Depths class around mixer class ``inner`` (named ``"mod:<inner.name>"``)."""
    if issubclass(inner, MixtureOfDepths):
        raise ValueError(f"mixer {inner.name!r} is already a Mixture-of-Depths layer")
    return type(f"MoD{inner.__name__}", (MixtureOfDepths,), {
        "name": f"mod:{inner.name}", "inner_class": inner, "needs_graph": inner.needs_graph,
        "causal_capable": inner.causal_capable, "reads_structure": inner.reads_structure,
        "has_feed_forward": inner.has_feed_forward, "__module__": __name__,
        "__doc__": f"Mixture-of-Depths around {inner.__name__} (see :class:`MixtureOfDepths`)."})


register_wrapper("mod", wrap_in_mod)
