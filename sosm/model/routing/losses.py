"""Auxiliary router losses: Switch load balancing and the ST-MoE router z-loss.

- :func:`load_balancing_loss` (Fedus et al. 2022, eq. 4): ``E * sum_e f_e * P_e`` with ``f_e`` the
  fraction of routing assignments that chose expert e (top-k choices before capacity, each token
  counting ``1/k`` per choice, so ``sum_e f_e = 1``) and ``P_e`` the mean router probability of e.
  It is 1 when both are uniform and grows as routing concentrates; its gradient reaches the
  router through ``P``.
- :func:`router_z_loss` (Zoph et al. 2022, eq. 5): ``mean_t (logsumexp_e logits_t,e)^2``, keeping
  router logits small (stable softmax in low precision).

Both are means over every token of the batch; they shape training only and never the forward
output, so they do not touch causality.

Example:
    >>> import torch
    >>> probs = torch.full((1, 4, 2), 0.5); chosen = torch.tensor([[[1, 0], [0, 1], [1, 0], [0, 1]]]).bool()
    >>> float(load_balancing_loss(probs, chosen))
    1.0
"""
from __future__ import annotations

import torch


def load_balancing_loss(probs: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """``E * sum_e f_e * P_e`` from ``probs [..., E]`` and the chosen pairs ``chosen [..., E]`` (bool)."""
    E = probs.shape[-1]
    flat_choice = chosen.reshape(-1, E).float()
    fraction = flat_choice.sum(0) / flat_choice.sum().clamp_min(1.0)  # f_e, sums to 1
    mean_prob = probs.reshape(-1, E).float().mean(0)  # P_e
    return E * (fraction * mean_prob).sum()


def router_z_loss(logits: torch.Tensor) -> torch.Tensor:
    """``mean over tokens of logsumexp(logits)^2`` for ``logits [..., E]``."""
    return torch.logsumexp(logits.float(), dim=-1).pow(2).mean()
