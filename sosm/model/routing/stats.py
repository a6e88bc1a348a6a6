"""What routing layers report: the auxiliary loss the trainer adds, statistics for the log, routes for inspect.

A routing layer (the MoE feed-forward, the Mixture-of-Depths wrapper) keeps, from its latest forward:

- ``aux_loss``: its weighted auxiliary loss (a 0-dim tensor in the autograd graph), or None;
- ``routing_stats()``: a dict of plain numbers (expert load, dropped share, router entropy, ...);
- ``token_routes()``: per sequence and token, where the token went (for ``sosm inspect``).

:func:`auxiliary_loss` and :func:`routing_stats` gather them from any ``nn.Module`` (0 and ``{}``
when it has no routing layer), so the trainer needs no knowledge of the model.

Example:
    >>> import torch
    >>> auxiliary_loss(torch.nn.Linear(2, 2)), routing_stats(torch.nn.Linear(2, 2))
    (0.0, {})
"""
from __future__ import annotations

from typing import Union

import torch


def routing_layers(model: torch.nn.Module) -> list:
    """``[(short name, module)]`` of the routing layers of ``model`` in module order."""
    out = []
    for name, module in model.named_modules():
        if callable(getattr(module, "routing_stats", None)) and hasattr(module, "aux_loss"):
            out.append((name.removeprefix("stack.") or "model", module))
    return out


def auxiliary_loss(model: torch.nn.Module) -> Union[torch.Tensor, float]:
    """Sum of the routing layers' weighted auxiliary losses from the latest forward (0.0 when none)."""
    losses = [module.aux_loss for _, module in routing_layers(model) if module.aux_loss is not None]
    return torch.stack(losses).sum() if losses else 0.0


def routing_stats(model: torch.nn.Module) -> dict:
    """``{"<layer>.<stat>": value}`` of every routing layer, from the latest forward (one host sync per layer)."""
    stats = {}
    for name, module in routing_layers(model):
        for key, value in module.routing_stats().items():
            stats[f"{name}.{key}"] = value
    return stats


def token_routes(model: torch.nn.Module) -> list:
    """``[{"layer": name, **module.token_routes()}]`` from the latest forward (for the inspect report)."""
    return [{"layer": name, **module.token_routes()} for name, module in routing_layers(model)]
