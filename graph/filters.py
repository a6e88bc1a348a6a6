"""Edge filters on semantic candidates: similarity threshold and temporal-gated acceptance.

Both act on aligned per-edge tensors and return a keep mask; neither looks at any token
other than the edge's two endpoints, so both are causal whenever the candidates are.

Example:
    >>> import torch
    >>> from sosm.graph.filters import threshold_filter, gated_acceptance
    >>> sim = torch.tensor([0.1, 0.5, 0.9])
    >>> threshold_filter(sim, 0.3).tolist()
    [False, True, True]
    >>> gated_acceptance(sim, torch.tensor([0.9, 0.2, 0.0]), tau_mu=0.3, tau_t=0.5, tau_high=0.8).tolist()
    [False, False, True]
"""
from __future__ import annotations

import torch


def threshold_filter(similarity: torch.Tensor, threshold: float) -> torch.Tensor:
    """``BoolTensor[E]``: keep edges with ``similarity > threshold`` (strict)."""
    return similarity > threshold


def gated_acceptance(similarity: torch.Tensor, gate_score: torch.Tensor, tau_mu: float, tau_t: float,
                     tau_high: float) -> torch.Tensor:
    """``BoolTensor[E]``: accept iff ``(sim > tau_mu and gate > tau_t) or sim > tau_high``."""
    return ((similarity > tau_mu) & (gate_score > tau_t)) | (similarity > tau_high)
