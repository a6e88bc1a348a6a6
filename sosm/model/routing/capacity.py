"""Causal ranking and capacity: which (token, expert) pairs an expert keeps, decided from the prefix only.

Routing with a capacity is usually not causal: capacity is filled over the whole sequence
(``C = cf * k * T / E``), so the number of later tokens, or a later token with a higher score,
decides whether an earlier token is kept. Here every decision about position t reads positions
``0..t`` only:

- **Prefix capacity** (:func:`prefix_capacity`): after ``t + 1`` tokens an expert may have kept
  at most ``C_t = ceil(fraction * (t + 1))`` of them (``fraction = cf * k / E``), so it keeps the
  same share of every prefix as a sequence-level capacity keeps of the whole sequence.
- **Clipping in position order** (:func:`clip_to_capacity`): a candidate (t, e) is kept while
  the expert's kept count stays within ``C_t``: ``kept_e(t) = min(kept_e(t-1) + r_e(t), C_t)``.
  That recurrence has the closed form ``kept_e(t) = R_e(t) + min(0, min_{s<=t} (C_s - R_e(s)))``
  with ``R`` the cumulative candidate count, so the whole sequence is one ``cumsum`` and one
  ``cummin`` (no loop over tokens), and decoding carries ``kept_e`` alone.
- **Prefix rank** (:func:`rank_scores`): the rank of position t's score among positions
  ``0..t`` (ties to the earlier position). "Position t is in the top ``C_t`` of its prefix" is the
  causal form of a top-c selection over the sequence (expert choice, Mixture-of-Depths).

With ``causal=False`` the same functions give the usual sequence-level forms: a constant capacity
``ceil(fraction * T)`` and ranks over the whole sequence.

Example:
    >>> import torch
    >>> candidates = torch.tensor([[[True], [True], [True], [True]]])      # one expert takes every token
    >>> kept, count = clip_to_capacity(candidates, prefix_capacity(torch.arange(4), 0.5))
    >>> kept[0, :, 0].tolist(), count[0].tolist()                         # C_t = 1, 1, 2, 2
    ([True, False, True, False], [2])
"""
from __future__ import annotations

import torch


def prefix_capacity(positions: torch.Tensor, fraction: float) -> torch.Tensor:
    """``C_t = ceil(fraction * (t + 1))`` for each position ``t`` (``LongTensor``, float64 arithmetic).

    The forward and the decoding step both call this, so they agree to the last bit.
    """
    return torch.ceil((positions.to(torch.float64) + 1.0) * fraction).long()


def capacity_schedule(seq_len: int, fraction: float, causal: bool, device=None) -> torch.Tensor:
    """Per-position capacity ``[T]``: ``C_t`` of the prefix (causal) or ``ceil(fraction * T)`` everywhere."""
    positions = torch.arange(seq_len, device=device)
    if causal:
        return prefix_capacity(positions, fraction)
    return prefix_capacity(torch.full_like(positions, seq_len - 1), fraction)


def clip_to_capacity(candidates: torch.Tensor, capacity: torch.Tensor, kept_before=None):
    """Keep candidates in position order while each expert stays within its capacity.

    Args:
        candidates: ``[B, T, E]`` bool, the pairs (token t, expert e) asking to be processed.
        capacity: ``[T]`` long, the most pairs an expert may have kept up to and including t
            (non-decreasing).
        kept_before: ``[B, E]`` long, pairs each expert kept before position 0 of this call
            (decoding); None: 0.

    Returns:
        ``(kept [B, T, E] bool, kept_after [B, E] long)``: the kept pairs and each expert's kept
        count after the last position.
    """
    r = candidates.long()
    R = r.cumsum(1)  # [B, T, E]
    start = torch.zeros_like(R[:, 0]) if kept_before is None else kept_before  # [B, E]
    headroom = capacity.view(1, -1, 1) - start[:, None] - R  # [B, T, E]: C_t - x_{-1} - R_t
    count = start[:, None] + R + torch.cummin(headroom, dim=1).values.clamp_max(0)  # [B, T, E] kept so far
    previous = torch.cat([start[:, None], count[:, :-1]], dim=1)
    return candidates & (count > previous), count[:, -1]


def rank_scores(scores: torch.Tensor, causal: bool, previous=None) -> torch.Tensor:
    """Rank of each score among the scores it may see: ``[..., T]`` -> ``[..., T]`` long.

    ``rank_t = #{s : score_s > score_t} + #{s < t : score_s == score_t}`` over ``s <= t``
    (causal) or over the whole sequence; rank 0 is the best, ties go to the earlier position.

    Args:
        scores: ``[..., T]`` float.
        causal: rank among the prefix only.
        previous: ``[..., P]`` scores of earlier positions (decoding: the prefix before
            ``scores``); they take part in every rank and come first in position order.
    """
    T = scores.shape[-1]
    keys = scores if previous is None else torch.cat([previous, scores], dim=-1)  # [..., P + T]
    P = keys.shape[-1] - T
    query_pos = torch.arange(P, P + T, device=scores.device)[:, None]  # [T, 1]
    key_pos = torch.arange(P + T, device=scores.device)[None, :]  # [1, P + T]
    beats = (keys[..., None, :] > scores[..., :, None]) | (
        (keys[..., None, :] == scores[..., :, None]) & (key_pos < query_pos))  # [..., T, P + T]
    if causal:
        beats = beats & (key_pos <= query_pos)
    return beats.sum(-1)
