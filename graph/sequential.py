"""Sequential window edges: ``j -> i`` for ``1 <= i - j <= window`` (bidirectional: both directions).

Padded tokens (``padding_mask`` False) get no edges in or out. Node ids are ``b * T + t``;
edges are ordered by target then source.

Example:
    >>> from sosm.graph.sequential import sequential_edges
    >>> sequential_edges(1, 4, window=2, causal=True).tolist()
    [[0, 0, 1, 1, 2], [1, 2, 2, 3, 3]]
"""
from __future__ import annotations

from typing import Optional

import torch


def sequential_edges(batch_size: int, seq_len: int, window: int, causal: bool = True,
                     padding_mask: Optional[torch.Tensor] = None, device=None) -> torch.Tensor:
    """``LongTensor[2, E]`` window edges (row 0 source j, row 1 target i), sorted by (target, source)."""
    if window <= 0 or seq_len < 2:
        return torch.empty(2, 0, dtype=torch.long, device=device)
    offsets = torch.arange(-window, window + 1, device=device)
    offsets = offsets[offsets != 0] if not causal else offsets[offsets < 0]  # source = target + offset
    target = torch.arange(seq_len, device=device)[:, None].expand(-1, offsets.numel())
    source = target + offsets[None, :]
    ok = (source >= 0) & (source < seq_len)
    src, dst = source[ok], target[ok]  # already ordered by (target, source)
    base = torch.arange(batch_size, device=device)[:, None] * seq_len
    src, dst = (base + src[None]).reshape(-1), (base + dst[None]).reshape(-1)
    if padding_mask is not None:
        real = padding_mask.reshape(-1).to(device)
        keep = real[src] & real[dst]
        src, dst = src[keep], dst[keep]
    return torch.stack([src, dst])
