"""Successor edges: for each semantic neighbour j of i, also ``j + 1 -> i`` (what followed a similar earlier token).

A graph built from states of the tokens themselves links a query to the earlier occurrences of
similar tokens. What a recall task needs is often the token that *came after* such an occurrence
(multi-query associative recall: the query ``k`` must read the value ``v`` that followed ``k``
earlier; language: what came next the last time this word appeared). The successor edge is that
link, the graph's form of an induction head: for every kept semantic edge ``j -> i`` the builder
adds ``j + 1 -> i``, with the similarity of ``(j, i)`` as its weight (why the edge exists).

Causal mode: semantic candidates of i are ``j <= i - window - 1``, so ``j + 1 <= i - window``;
``j + 1 == i`` (window 0) is the query itself and is dropped. Bidirectional: ``j + 1`` must lie in
the sequence and differ from i. Padded positions get no edges.

Example:
    >>> import torch
    >>> semantic = torch.tensor([[0, 2], [4, 5]])        # 0 -> 4 and 2 -> 5 (node ids, one sample of T = 6)
    >>> edges, weight = successor_edges(semantic, torch.tensor([0.9, 0.5]), 6, causal=True)
    >>> edges.tolist(), weight.tolist()
    ([[1, 3], [4, 5]], [0.8999999761581543, 0.5])
"""
from __future__ import annotations

from typing import Optional

import torch


def successor_edges(semantic_edge_index: torch.Tensor, similarity: torch.Tensor, seq_len: int, causal: bool = True,
                    padding_mask: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(edge_index [2, E'], weight [E'])``: ``j + 1 -> i`` for every semantic edge ``j -> i``.

    Args:
        semantic_edge_index: ``LongTensor[2, E]`` semantic edges (row 0 source j, row 1 target i), node
            ids ``b * T + t``.
        similarity: ``[E]`` the similarity of each semantic edge (becomes the successor's weight).
        seq_len: T.
        causal: the graph's mode.
        padding_mask: ``[B, T]`` bool, True for real tokens (None: all real).

    Returns:
        Edges that stay within their sample, never self, never onto or from padding; in causal mode
        ``source < target``. Duplicates are left to the builder's merge.
    """
    src, dst = semantic_edge_index
    nxt = src + 1
    pos = src % seq_len + 1  # position of the successor within its sample
    keep = (pos < seq_len) & (nxt != dst)
    if causal:
        keep &= nxt % seq_len < dst % seq_len
    if padding_mask is not None:
        real = padding_mask.reshape(-1).to(src.device)
        keep &= real[nxt.clamp_max(real.numel() - 1)]
    return torch.stack([nxt[keep], dst[keep]]), similarity[keep].float()
