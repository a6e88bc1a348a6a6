"""Approximate nearest rows by hnswlib, as the ``rank_fn`` of :func:`sosm.graph.distinct.distinct_topk`.

The graph room stays free of hnswlib: it asks a ranking function for candidate rows, and this
one (layer 2, beside :class:`~sosm.memory.HNSWMemory`) answers with an inner-product HNSW index
built over the rows themselves. Only the candidates come from the index; the graph recomputes
every score exactly and keeps causality itself (positions are never in the index).

Example:
    >>> import torch
    >>> rows = torch.nn.functional.normalize(torch.randn(200, 16), dim=-1)
    >>> hnsw_ranking(rows, 5).shape
    torch.Size([200, 5])
"""
from __future__ import annotations

import hnswlib
import numpy as np
import torch

#: graph degree of the index (hnswlib ``M``)
LINKS = 16
#: build beam width (hnswlib ``ef_construction``)
EF_CONSTRUCTION = 100


def hnsw_ranking(features: torch.Tensor, per_row: int, ef: int | None = None, seed: int = 0,
                 threads: int = 1) -> torch.Tensor:
    """``LongTensor[U, min(per_row, U)]``: for each row of ``features [U, d]``, its best rows by inner product.

    Approximate (hnswlib, ``M=16``, ``ef_construction=100``); the row itself is usually among
    them. ``ef`` (query beam width) defaults to ``max(64, 2 * per_row)``. Deterministic for a
    given ``seed`` with ``threads=1`` (the default: the same text gives the same graph); with
    several threads the insertion order, and so the index, may vary between runs.
    """
    rows = np.ascontiguousarray(features.detach().float().cpu().numpy())
    count, dim = rows.shape
    want = min(per_row, count)
    if count == 0 or want == 0:
        return torch.empty(count, 0, dtype=torch.long)
    index = hnswlib.Index(space="ip", dim=dim)
    index.init_index(max_elements=count, M=LINKS, ef_construction=EF_CONSTRUCTION, random_seed=seed)
    index.set_num_threads(threads)
    index.add_items(rows, np.arange(count))
    index.set_ef(max(ef or 64, 2 * want))
    labels, _ = index.knn_query(rows, k=want)
    return torch.from_numpy(labels.astype(np.int64))
