"""Mutual k-NN filtering of semantic top-k edges.

An edge ``j -> i`` comes from query i's top-K_i list. It is kept when i is also among j's
nearest:

- bidirectional: ``i`` is in ``topK_j(j)`` (j's own top-K_j list, candidates ``|m - j| > window``);
- causal: ``i`` ranks ``< K_j`` among j's candidates restricted to positions ``<= i``, i.e. the
  set ``{m : |m - j| > window, m <= i, m real}`` ordered by similarity to j, ties to the lower
  index. Only positions ``<= i`` are looked at, so the decision is causal.

The causal rank of i is counted in two parts: j's past candidates (``m <= j - window - 1``: read
off j's own sorted top list, which holds the best of them) and j's future candidates up to
``i - 1`` (``j + window < m < i``), scanned in tiles with one float32 matmul; entries within the
matmul error of the edge's similarity are re-scored exactly with
:func:`sosm.graph.similarity.pair_scores`. No Python loop runs per edge.

Example:
    >>> import torch
    >>> from sosm.graph.mutual import mutual_filter
    >>> f = torch.eye(4)[None].repeat(1, 2, 1)  # positions t and t+4 identical
    >>> idx = torch.tensor([[[-1], [-1], [-1], [-1], [0], [1], [2], [3]]])
    >>> sc = torch.tensor([[[0.], [0.], [0.], [0.], [1.], [1.], [1.], [1.]]])
    >>> mutual_filter(f, idx, sc, 1, causal=True, window=1)[0, 4:, 0].tolist()
    [True, True, True, True]
"""
from __future__ import annotations

from typing import Optional, Union

import torch

from .similarity import pair_scores
from .topk import MATMUL_MARGIN


def _per_node_k(k: Union[int, torch.Tensor], batch: int, length: int, device) -> torch.Tensor:
    if isinstance(k, torch.Tensor):
        return k.to(device=device, dtype=torch.long)
    return torch.full((batch, length), int(k), dtype=torch.long, device=device)


def mutual_filter(features: torch.Tensor, indices: torch.Tensor, scores: torch.Tensor,
                  k: Union[int, torch.Tensor], *, causal: bool = True, window: int = 1,
                  padding_mask: Optional[torch.Tensor] = None, tile: int = 1024) -> torch.Tensor:
    """Which top-k slots survive mutual k-NN filtering.

    Args:
        features: ``[B, T, d]`` the features the top-k was ranked with.
        indices: ``[B, T, Kmax]`` long, each row's top list (``-1`` = empty), sorted by score
            desc then index asc (the output of ``streaming_topk``).
        scores: ``[B, T, Kmax]`` exact scores of those slots.
        k: int or ``LongTensor[B, T]`` per-node K (adaptive K); slots ``>= K_i`` are not edges.
        causal, window, padding_mask, tile: as for ``streaming_topk``.

    Returns:
        ``BoolTensor[B, T, Kmax]``: True where the slot is an edge that survives.
    """
    batch, length, kmax = indices.shape
    dev = indices.device
    kq = _per_node_k(k, batch, length, dev)
    slot = torch.arange(kmax, device=dev)
    is_edge = (indices >= 0) & (slot[None, None, :] < kq[..., None])
    b, i, s = is_edge.nonzero(as_tuple=True)
    j = indices[b, i, s]
    s_e = scores[b, i, s]
    k_j = kq[b, j]
    if not causal:
        listed = indices[b, j]  # [E, Kmax]: j's own top list
        hit = (listed == i[:, None]) & (slot[None, :] < k_j[:, None])
        keep = hit.any(1)
    else:
        past = scores[b, j]  # j's past candidates, best first
        past_ok = (indices[b, j] >= 0) & (slot[None, :] < k_j[:, None])
        count = (past_ok & (past >= s_e[:, None])).sum(1)
        count += _future_counts(features.float(), b, j, i, s_e, window, padding_mask, tile,
                                alive=count < k_j)
        keep = count < k_j
    out = torch.zeros_like(is_edge)
    out[b, i, s] = keep
    return out


def _range_counts(hits: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Per row r of ``hits [n, w]`` (bool): the number of True in columns ``[lo[r], hi[r])``."""
    total = torch.empty(hits.shape[0], hits.shape[1] + 1, dtype=torch.int32, device=hits.device)
    total[:, 0] = 0
    torch.cumsum(hits, dim=1, dtype=torch.int32, out=total[:, 1:])
    return (total.gather(1, hi[:, None]) - total.gather(1, lo[:, None])).squeeze(1).long()


def _future_counts(f, b, j, i, s_e, window, padding_mask, tile, alive):
    """Per edge: ``#{m real : j + window < m < i, score(j, m) >= s_e}`` (exact).

    Tiles: (batch item, tile of sources j, tile of m); one float32 matmul per tile pair, then
    each edge reads its source's row. Edges are visited grouped by (b, j) via a sort. An edge's
    candidates in a tile are one column range, counted from row-wise cumulative sums of
    ``score >= s_e + margin`` (sure) and ``score > s_e - margin`` (maybe); only rows where the
    two differ re-score their in-between entries exactly.
    """
    count = torch.zeros_like(j)
    batch, length, _ = f.shape
    margin = MATMUL_MARGIN * max(1.0, float(f.norm(dim=-1).max()) ** 2)
    todo = (alive & (i - j - 1 > window)).nonzero().squeeze(1)
    if todo.numel() == 0:
        return count
    key = b[todo] * length + j[todo]
    key, order = torch.sort(key)
    todo = todo[order]
    chunk = 4 * tile  # edge rows per gathered [chunk, tile] slab
    for b0 in range(batch):
        pad_bias = None
        if padding_mask is not None:  # padded m: -inf, never counted
            pad_bias = torch.zeros(length, device=f.device).masked_fill_(~padding_mask[b0], float("-inf"))
        for j0 in range(0, length, tile):
            j1 = min(length, j0 + tile)
            lo, hi = torch.searchsorted(key, torch.tensor([b0 * length + j0, b0 * length + j1])).tolist()
            if lo == hi:
                continue
            group = todo[lo:hi]
            m_start = j0 + window + 1
            m_stop = int(i[group].max())
            for m0 in range(m_start, m_stop, tile):
                m1 = min(m_stop, m0 + tile)
                scores = f[b0, j0:j1] @ f[b0, m0:m1].T  # [tj, tm] float32
                if pad_bias is not None:
                    scores += pad_bias[m0:m1]
                sel = group[(i[group] > m0) & (j[group] + window + 1 < m1)]
                cols = torch.arange(m1 - m0, device=f.device)
                for e0 in range(0, sel.numel(), chunk):
                    e = sel[e0:e0 + chunk]
                    fast = scores[j[e] - j0]  # [n, tm]
                    first = (j[e] + window + 1 - m0).clamp(0, m1 - m0)  # candidates: columns [first, last)
                    last = (i[e] - m0).clamp(0, m1 - m0).maximum(first)
                    thr = s_e[e][:, None]
                    add = _range_counts(fast >= thr + margin, first, last)
                    maybe = _range_counts(fast > thr - margin, first, last)  # includes the sure ones
                    rows = (maybe > add).nonzero().squeeze(1)
                    if rows.numel():  # entries within the matmul error of s_e: exact scores decide
                        near = fast[rows]
                        t = thr[rows]
                        band = ((near > t - margin) & (near < t + margin) & (cols >= first[rows, None])
                                & (cols < last[rows, None]))
                        r, c = band.nonzero(as_tuple=True)
                        exact = pair_scores(f[b0, j[e][rows[r]]], f[b0, m0 + c])
                        add.index_add_(0, rows[r], (exact >= t[r, 0]).long())
                    count[e] += add
    return count
