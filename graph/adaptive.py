"""Entropy-adaptive K: more neighbours for tokens whose meaning is spread over many blocks.

``p_b = |x_i^b| / sum_b |x_i^b|`` (block norms of the 16 named blocks), ``H_i = -sum_b p_b log p_b
/ log 16`` in ``[0, 1]`` (``0 log 0 = 0``; an all-zero state has ``H_i = 0``), and
``K_i = clamp(round(k * (1 + alpha * (H_i - 0.5))), k_min, k_max)`` with ``round`` half to even
(``torch.round``, like Python's ``round``). Everything is computed in float64 from position i
alone, so it is causal by construction.

Example:
    >>> import torch
    >>> from sosm.graph.adaptive import adaptive_k
    >>> x = torch.zeros(1, 2, 64); x[0, 0, :4] = 1.0; x[0, 1] = 1.0  # one block / all blocks
    >>> adaptive_k(x, k=8, alpha=1.0, k_min=2, k_max=16).tolist()
    [[4, 12]]
"""
from __future__ import annotations

import math

import torch

from ..common.blocks import BLOCK_DIM, N_BLOCKS


def block_entropy(x: torch.Tensor) -> torch.Tensor:
    """Normalised entropy of the block-norm distribution: ``[B, T, 64] -> [B, T]`` float64 in [0, 1]."""
    norms = x.double().unflatten(-1, (N_BLOCKS, BLOCK_DIM)).norm(dim=-1)  # [B, T, 16]
    total = norms.sum(-1, keepdim=True)
    p = norms / total.clamp_min(torch.finfo(torch.float64).tiny)
    plogp = torch.where(p > 0, p * torch.log(p.clamp_min(torch.finfo(torch.float64).tiny)), torch.zeros_like(p))
    return (-plogp.sum(-1) / math.log(N_BLOCKS)).clamp(0.0, 1.0)


def adaptive_k(x: torch.Tensor, k: int, alpha: float, k_min: int, k_max: int) -> torch.Tensor:
    """Per-token neighbour count ``K_i``: ``LongTensor[B, T]`` in ``[k_min, k_max]``.

    Args:
        x: ``[B, T, 64]`` semantic states. k: base K. alpha: entropy gain (>= 0).
        k_min, k_max: clamp bounds (``1 <= k_min <= k <= k_max``).
    """
    h = block_entropy(x)
    raw = torch.round(k * (1.0 + alpha * (h - 0.5)))
    return raw.clamp(k_min, k_max).long()
