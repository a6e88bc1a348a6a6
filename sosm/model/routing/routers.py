"""The three ways of sending tokens to experts, as pure functions of router logits.

Each returns a :class:`Routing`: for every (token, expert) pair whether the expert processes the
token and with what combine weight (the sparse routings), or the dispatch and combine matrices of
Soft MoE.

- :func:`token_choice` — each token picks its top-k experts (k = 1 is Switch routing); combine
  weight ``p_e`` for k = 1 (Switch), ``p_e / sum_topk p`` for k >= 2 (GShard, Mixtral); each expert
  keeps at most ``ceil(capacity_factor * k * n / E)`` of every n-token prefix (causal) or of the
  sequence, in position order (:mod:`~sosm.model.routing.capacity`); a dropped pair contributes
  nothing (the token keeps its residual).
- :func:`expert_choice` — each expert picks the tokens whose score ``p_e`` ranks in its top
  ``C_t = ceil(capacity_factor * k * (t + 1) / E)`` among positions ``0..t`` (causal), or its top
  ``ceil(capacity_factor * k * T / E)`` of the sequence (Zhou et al. 2022); combine weight ``p_e``.
  A token may be picked by none, some or all experts.
- :func:`soft_routing` — Soft MoE (Puigcerver et al. 2023): slot inputs are convex combinations of
  all tokens (``dispatch`` softmax over tokens), each token's output a convex combination of slot
  outputs (``combine`` softmax over slots). Every output depends on every token: not causal.

``p = softmax(logits)`` over experts, per token. Everything here runs in float32.

Example:
    >>> import torch
    >>> logits = torch.randn(1, 6, 4)
    >>> r = token_choice(logits, k=2, capacity_factor=0.0, causal=True)
    >>> r.kept.sum(-1).tolist()        # no capacity: every token keeps its two experts
    [[2, 2, 2, 2, 2, 2]]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .capacity import capacity_schedule, clip_to_capacity, rank_scores


@dataclass
class Routing:
    """Where tokens go.

    Args:
        probs: ``[B, T, E]`` router softmax over experts (float32).
        candidates: ``[B, T, E]`` bool, the pairs the routing asked for before capacity.
        kept: ``[B, T, E]`` bool, the pairs processed (``candidates`` minus the dropped ones).
        weights: ``[B, T, E]`` combine weights of the kept pairs (0 elsewhere).
        kept_after: ``[B, E]`` long, each expert's kept count after the last position (causal
            decoding carries it), or None.
        dispatch: Soft MoE only: ``[B, T, E, S]`` weights of token t in slot s of expert e
            (each slot sums to 1 over tokens).
        combine: Soft MoE only: ``[B, T, E, S]`` weights of slot (e, s) in token t's output
            (each token sums to 1 over slots).
    """

    probs: torch.Tensor
    candidates: torch.Tensor
    kept: torch.Tensor
    weights: torch.Tensor
    kept_after: Optional[torch.Tensor] = None
    dispatch: Optional[torch.Tensor] = None
    combine: Optional[torch.Tensor] = None


def _capacity(T: int, fraction: float, causal: bool, offset: int, device) -> torch.Tensor:
    if offset == 0:
        return capacity_schedule(T, fraction, causal, device)
    return capacity_schedule(offset + T, fraction, causal, device)[offset:]


def token_choice(logits: torch.Tensor, k: int, capacity_factor: float, causal: bool = True,
                 position: int = 0, kept_before: Optional[torch.Tensor] = None) -> Routing:
    """Top-k token choice with a capacity (module docstring).

    Args:
        logits: ``[B, T, E]`` router logits.
        k: experts per token (1: Switch).
        capacity_factor: ``cf``; each expert keeps at most ``ceil(cf * k * n / E)`` of n tokens;
            0 means no capacity (nothing is dropped).
        causal: prefix capacity (True) or one capacity over the sequence.
        position: index of ``logits[:, 0]`` in its sequence (decoding; causal only).
        kept_before: ``[B, E]`` kept counts before ``position`` (decoding).
    """
    probs = torch.softmax(logits.float(), dim=-1)  # [B, T, E]
    E = probs.shape[-1]
    top_p, top_i = probs.topk(k, dim=-1)  # [B, T, k]
    if k > 1:
        top_p = top_p / top_p.sum(-1, keepdim=True)
    candidates = torch.zeros_like(probs, dtype=torch.bool).scatter_(-1, top_i, True)
    weights = torch.zeros_like(probs).scatter(-1, top_i, top_p)  # [B, T, E]
    if capacity_factor > 0:
        capacity = _capacity(probs.shape[1], capacity_factor * k / E, causal, position, probs.device)
        kept, kept_after = clip_to_capacity(candidates, capacity, kept_before)
    else:
        kept, kept_after = candidates, None
    return Routing(probs=probs, candidates=candidates, kept=kept, weights=weights * kept, kept_after=kept_after)


def expert_choice(logits: torch.Tensor, k: int, capacity_factor: float, causal: bool = True,
                  previous_probs: Optional[torch.Tensor] = None,
                  kept_before: Optional[torch.Tensor] = None) -> Routing:
    """Expert choice: each expert takes the tokens of its (prefix) top ``capacity_factor * k / E`` share.

    Args:
        logits: ``[B, T, E]`` router logits.
        k: average experts per token at capacity factor 1 (the share is ``capacity_factor * k / E``).
        capacity_factor: > 0.
        causal: rank each token among its prefix and cap every prefix (True), or take the exact
            top ``ceil(share * T)`` of the sequence.
        previous_probs: ``[B, P, E]`` router probabilities of the positions before these
            (decoding); they take part in the ranks.
        kept_before: ``[B, E]`` kept counts before these positions (decoding).
    """
    probs = torch.softmax(logits.float(), dim=-1)  # [B, T, E]
    B, T, E = probs.shape
    share = capacity_factor * k / E
    P = 0 if previous_probs is None else previous_probs.shape[1]
    previous = None if previous_probs is None else previous_probs.transpose(1, 2)
    rank = rank_scores(probs.transpose(1, 2), causal, previous).transpose(1, 2)  # [B, T, E]
    capacity = _capacity(T, share, causal, P, probs.device)  # [T]
    candidates = rank < capacity.view(1, -1, 1)
    kept, kept_after = clip_to_capacity(candidates, capacity, kept_before)
    return Routing(probs=probs, candidates=candidates, kept=kept, weights=probs * kept, kept_after=kept_after)


def soft_routing(logits: torch.Tensor) -> Routing:
    """Soft MoE from slot logits ``[B, T, E, S]`` (token-slot similarities; not causal).

    ``dispatch = softmax over tokens`` (each slot a convex combination of the tokens),
    ``combine = softmax over all E * S slots`` (each output a convex combination of slot outputs).
    """
    B, T, E, S = logits.shape
    logits = logits.float()
    dispatch = torch.softmax(logits, dim=1)  # [B, T, E, S]
    combine = torch.softmax(logits.reshape(B, T, E * S), dim=-1).view(B, T, E, S)
    per_expert = combine.sum(-1)  # [B, T, E] each expert's share of a token's output
    everything = torch.ones(B, T, E, dtype=torch.bool, device=logits.device)
    return Routing(probs=per_expert, candidates=everything, kept=everything, weights=per_expert,
                   dispatch=dispatch, combine=combine)
