"""`TemporalGate`: a small MLP scoring whether two tokens' temporal states fit together.

``score(t_j, t_i) = sigmoid(w2 . gelu(W1 [t_j, t_i, t_j * t_i, |t_j - t_i|] + b1) + b2)`` in
``(0, 1)``, on temporal states ``[..., 32]``. Parameters are drawn from a seeded
``torch.Generator`` so two gates built with the same seed are identical.

Example:
    >>> import torch
    >>> from sosm.graph.gate import TemporalGate
    >>> gate = TemporalGate(seed=0)
    >>> s = gate(torch.randn(5, 32), torch.randn(5, 32))
    >>> s.shape, bool(((s > 0) & (s < 1)).all())
    (torch.Size([5]), True)
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..common.blocks import TEMPORAL_DIM


class TemporalGate(nn.Module):
    """MLP over a pair of temporal states.

    Args:
        dim: temporal state width (default 32). hidden: hidden width (default 32).
        seed: seed of the deterministic initialisation (default 0).
    """

    def __init__(self, dim: int = TEMPORAL_DIM, hidden: int = 32, seed: int = 0):
        super().__init__()
        if dim < 1 or hidden < 1:
            raise ValueError(f"TemporalGate needs dim >= 1 and hidden >= 1, got dim={dim}, hidden={hidden}")
        self.dim = dim
        self.hidden = nn.Linear(4 * dim, hidden)
        self.out = nn.Linear(hidden, 1)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for layer in (self.hidden, self.out):
                bound = 1.0 / math.sqrt(layer.in_features)
                layer.weight.copy_(torch.rand(layer.weight.shape, generator=gen) * 2 * bound - bound)
                layer.bias.copy_(torch.rand(layer.bias.shape, generator=gen) * 2 * bound - bound)

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scores ``[...]`` in (0, 1) for temporal states ``source, target: [..., dim]``."""
        if source.shape[-1] != self.dim or target.shape[-1] != self.dim:
            raise ValueError(f"TemporalGate expects temporal states [..., {self.dim}], got "
                             f"{tuple(source.shape)} and {tuple(target.shape)}")
        pair = torch.cat([source, target, source * target, (source - target).abs()], -1)
        return torch.sigmoid(self.out(nn.functional.gelu(self.hidden(pair)))).squeeze(-1)
