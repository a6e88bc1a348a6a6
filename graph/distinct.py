"""Top-k over long texts whose states repeat: rank the distinct feature rows, then expand to positions.

A text's states are a function of a discrete key (the word, or the token id), so a book of
5M bytes has only ~10^4 distinct feature rows, and a score depends only on the two feature
vectors. :func:`distinct_topk` takes the distinct rows ``features [U, d']`` and each
node's row ``inverse [N]`` and returns, for every node, what :func:`~sosm.graph.topk.streaming_topk`
returns over the ``[N, d']`` features (same candidates, ranking by score then lower index),
without ever holding ``[N, d']``:

1. ``occurrences [U, O]``: the first ``O`` positions of each distinct row (``O = k`` causal,
   ``k + 2 * window + 1`` bidirectional: enough to fill k outside the excluded band).
2. Ranked lists: the ``per_row`` best distinct rows of each distinct row (itself included),
   from ``rank_fn`` (approximate, e.g. hnswlib) or exactly (:func:`exact_ranking`, the lists
   ``streaming_topk`` gives over the distinct rows). Scores are always recomputed with :func:`~sosm.graph.similarity.pair_scores`.
3. Per node i: the candidates are the first occurrences of its row's ranked rows; the k best
   valid ones by (score desc, position asc). A node whose own row has k earlier occurrences
   and scores strictly above every other row takes those directly (most nodes of a book); a
   node with all-zero features scores 0 with everything, so it takes its first k candidates.
4. A node is settled when k were found (approximate mode), and in exact mode only when its
   k-th score is above the last listed row's score (nothing unlisted can beat it). Other
   nodes are redone exactly: all distinct rows scored, the k best *available* rows (with a
   valid occurrence) taken, which hold the k best positions unless the k-th and (k+1)-th
   tie; tied nodes take every row scoring at least the k-th (zero features tie with all).

Exact mode equals ``streaming_topk`` index for index (``tests/graph/test_distinct.py``).
Memory: ``O(N * k + U * (per_row + O) + chunk * per_row * O)``.

Example:
    >>> import torch
    >>> from sosm.graph.distinct import distinct_topk
    >>> from sosm.graph.topk import dense_topk
    >>> rows = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    >>> inverse = torch.randint(0, 5, (40,))
    >>> found = distinct_topk(rows, inverse, 3, causal=True, window=1)
    >>> dense = dense_topk(rows[inverse][None], 3, causal=True, window=1)
    >>> torch.equal(found.indices.long(), dense[0][0])
    True
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .similarity import drop_zero_columns, pair_scores
from .topk import MATMUL_MARGIN, _orderable

#: distinct rows listed per distinct row when ranking (``per_row``)
DEFAULT_PER_ROW = 32
#: nodes per step of the expansion (bounds its ``[chunk, per_row, O]`` temporaries)
DEFAULT_CHUNK = 16384
_NO_KEY = torch.iinfo(torch.int64).max


@dataclass
class DistinctTopK:
    """Result of :func:`distinct_topk`.

    Attributes:
        indices: ``IntTensor[N, k]`` neighbour positions, -1 where fewer candidates.
        scores: ``FloatTensor[N, k]`` their pair scores (0 at -1).
        own: ``BoolTensor[N]``: the node's neighbours are the first k occurrences of its own row.
        occurrences: :func:`occurrence_table`'s result (reusable by :func:`exact_rows`).
        direct: nodes settled from their own row's occurrences (``own.sum()``).
        listed: nodes settled from the ranked lists.
        rescored: nodes redone exactly over all distinct rows.
    """

    indices: torch.Tensor
    scores: torch.Tensor
    own: Optional[torch.Tensor] = None
    occurrences: Optional[tuple] = None
    direct: int = 0
    listed: int = 0
    rescored: int = 0


def occurrence_table(inverse: torch.Tensor, num_rows: int, width: int):
    """First ``width`` positions of each distinct row, ``[U + 1, width]`` (row U and gaps: a sentinel >= N).

    Returns ``(table, counts [U], last [U])``.
    """
    n = inverse.numel()
    order = torch.sort(inverse, stable=True).indices                        # positions grouped by row, ascending
    counts = torch.bincount(inverse, minlength=num_rows)
    starts = torch.cumsum(counts, 0) - counts
    sentinel = n + 2 * width + 2                                            # never within reach of any node
    table = torch.full((num_rows + 1, width), sentinel, dtype=torch.long)
    for r in range(width):
        has = counts > r
        table[:num_rows, r][has] = order[(starts + r)[has]]
    last = order[(starts + counts - 1).clamp_min(0)]
    return table, counts, last


def exact_ranking(features: torch.Tensor, per_row: int, block: int = 2048) -> torch.Tensor:
    """``[U, min(per_row, U) - 1]`` the best other distinct rows of each, exactly (ties to the lower row).

    The same lists as ``streaming_topk(features[None], per_row - 1, causal=False, window=0)``, by
    blocks of a float32 matmul: ``per_row + 7`` candidates per row are re-scored exactly, and a row
    whose last listed exact score does not beat the best unlisted matmul score by
    :data:`~sosm.graph.topk.MATMUL_MARGIN` is scored exactly against every row.
    """
    num = features.shape[0]
    others = min(per_row, num) - 1
    if others <= 0:
        return torch.empty(num, 0, dtype=torch.long)
    margin = MATMUL_MARGIN * max(1.0, float(features.norm(dim=-1).max()) ** 2)
    out = torch.empty(num, others, dtype=torch.long)
    for r0 in range(0, num, block):
        query = features[r0:r0 + block]
        rows = torch.arange(r0, r0 + query.shape[0])
        approx = query @ features.T                                                   # [b, U]
        approx[torch.arange(rows.numel()), rows] = float("-inf")                      # not itself
        take = min(others + 8, num - 1)
        bound, cand = torch.topk(approx, take, dim=1)
        exact = pair_scores(query[:, None, :], features[cand])
        order = torch.sort(_score_key(exact, cand), dim=1).indices
        cand, exact = cand.gather(1, order), exact.gather(1, order)
        out[rows] = cand[:, :others]
        if take < num - 1:
            hard = (exact[:, others - 1] <= bound[:, -1] + margin).nonzero().flatten()
            if hard.numel():
                full = pair_scores(query[hard][:, None, :], features[None])           # [h, U]
                full[torch.arange(hard.numel()), rows[hard]] = float("-inf")
                keys = _score_key(full, torch.arange(num).expand_as(full))
                out[rows[hard]] = torch.topk(keys, others, dim=1, largest=False).indices
    return out


def _ranked_lists(features: torch.Tensor, ranked: torch.Tensor):
    """Self first, then ``ranked`` (-1 and self dropped); sorted by exact score desc, row asc. ``[U, M]`` each."""
    num = features.shape[0]
    own = torch.arange(num)[:, None]
    rows = torch.cat([own, ranked.long().masked_fill(ranked.long() == own, -1)], 1)
    scores = pair_scores(features[:, None, :], features[rows.clamp_min(0)])
    scores = scores.masked_fill(rows < 0, float("-inf"))
    key = _score_key(scores, rows.clamp_min(0)).masked_fill(rows < 0, _NO_KEY)
    order = torch.sort(key, dim=1).indices
    return rows.gather(1, order), scores.gather(1, order)


def _score_key(scores: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """int64 key, smaller = better: score desc (``-0.0`` counted as ``+0.0``), then ``index`` asc."""
    return ((0x7FFFFFFF - _orderable(scores + 0.0)) << 31) | index


def _valid(positions: torch.Tensor, nodes: torch.Tensor, n: int, causal: bool, window: int) -> torch.Tensor:
    nodes = nodes.view(-1, *([1] * (positions.dim() - 1)))
    if causal:  # nodes - positions > window, without an [R, M, O] int64 temporary
        return positions < nodes - window
    return ((nodes - positions).abs() > window) & (positions < n)


def _pick(nodes, rows, row_scores, table, k, n, causal, window):
    """The k best valid occurrences of ``rows [R, M]`` (scores ``[R, M]``) for ``nodes [R]``.

    Returns ``(indices [R, k], scores [R, k], filled [R])``; -1 / 0 where fewer than k.
    """
    positions = table[rows.clamp_min(0).masked_fill(rows < 0, table.shape[0] - 1)]      # [R, M, O]
    ok = _valid(positions, nodes, n, causal, window) & (rows >= 0)[..., None]
    scores = row_scores[..., None].expand_as(positions)
    # _score_key(scores, positions), its score half formed once per [R, M] (one [R, M, O] int64 temporary)
    key = ((0x7FFFFFFF - _orderable(row_scores + 0.0)) << 31)[..., None] | positions
    key = key.masked_fill_(~ok, _NO_KEY).flatten(1)
    take = min(k, key.shape[1])
    best, slot = torch.topk(key, take, dim=1, largest=False)
    found = best != _NO_KEY
    idx = positions.flatten(1).gather(1, slot).masked_fill(~found, -1)
    val = scores.flatten(1).gather(1, slot).masked_fill(~found, 0.0)
    if take < k:
        idx = torch.cat([idx, idx.new_full((idx.shape[0], k - take), -1)], 1)
        val = torch.cat([val, val.new_zeros(val.shape[0], k - take)], 1)
        found = torch.cat([found, found.new_zeros(found.shape[0], k - take)], 1)
    return idx, val, found.sum(1)


def _available(nodes, all_rows, first, counts, last, inverse, n, causal, window):
    """``[R, U]`` bool: distinct rows with a valid occurrence for each node."""
    if causal:
        return first[None, :] < (nodes - window)[:, None]
    ok = (counts > 0)[None, :].repeat(nodes.numel(), 1)
    for offset in range(-window, window + 1):  # a row all of whose occurrences lie in the band is out
        p = nodes + offset
        inside = (p >= 0) & (p < n)
        row = inverse[p.clamp(0, n - 1)]
        hidden = inside & (counts[row] <= 2 * window + 1) & (first[row] >= nodes - window) & (last[row] <= nodes + window)
        ok[hidden.nonzero().flatten(), row[hidden]] = False
    return ok


def _rescore(nodes, features, inverse, table, first, counts, last, k, n, causal, window):
    """Exact result of ``nodes [R]`` over all distinct rows (step 4 of the module docstring).

    A float32 matmul picks ``k + 8`` available rows per node, re-scored exactly; a node is done when
    its exact k-th score beats every other row's matmul score plus :data:`~sosm.graph.topk.MATMUL_MARGIN`
    and does not tie the (k+1)-th; the others score every row exactly (:func:`_rescore_all`).
    """
    num = features.shape[0]
    query = features[inverse[nodes]]                                                     # [R, d']
    avail = _available(nodes, num, first, counts, last, inverse, n, causal, window)
    approx = (query @ features.T).masked_fill(~avail, float("-inf"))                     # [R, U]
    take = min(k + 8, num)
    bound, cand = torch.topk(approx, take, dim=1)
    exact = pair_scores(query[:, None, :], features[cand]).masked_fill(torch.isinf(bound), float("-inf"))
    exact, order = torch.sort(exact, dim=1, descending=True)
    cand = cand.gather(1, order)
    kth = exact[:, min(k, take) - 1]
    margin = MATMUL_MARGIN * max(1.0, float(features.norm(dim=-1).max()) ** 2)
    if take < num:
        done = torch.isinf(bound[:, -1]) | (kth > bound[:, -1] + margin)
    else:
        done = torch.ones(nodes.numel(), dtype=torch.bool)
    if take > k:
        done &= (kth > exact[:, k]) | torch.isinf(kth)
    rows = cand[:, :k].masked_fill(torch.isinf(exact[:, :k]), -1)
    idx, val, _ = _pick(nodes, rows, exact[:, :k], table, k, n, causal, window)
    if not bool(done.all()):
        hard = (~done).nonzero().flatten()
        idx[hard], val[hard] = _rescore_all(nodes[hard], query[hard], avail[hard], features, table, k, n, causal,
                                            window)
    return idx, val


def _rescore_all(nodes, query, avail, features, table, k, n, causal, window):
    """:func:`_rescore` by exact scores of every row; ties across the k-th row take every row as good."""
    num = features.shape[0]
    masked = pair_scores(query[:, None, :], features[None]).masked_fill(~avail, float("-inf"))      # [R, U]
    take = min(k + 1, num)
    top_val, top_row = torch.topk(masked, take, dim=1)
    if take > k:
        clear = (top_val[:, k - 1] > top_val[:, k]) | torch.isinf(top_val[:, k - 1])
    else:
        clear = torch.ones(nodes.numel(), dtype=torch.bool)
    top_row = top_row[:, :k].masked_fill(torch.isinf(top_val[:, :k]), -1)
    idx, val, _ = _pick(nodes, top_row, top_val[:, :k], table, k, n, causal, window)
    for r in (~clear).nonzero().flatten().tolist():
        rows = (masked[r] >= top_val[r, k - 1]).nonzero().flatten()
        idx[r], val[r], _ = (t[0] for t in _pick(nodes[r:r + 1], rows[None], masked[r, rows][None], table, k, n,
                                                 causal, window))
    return idx, val


def distinct_topk(features: torch.Tensor, inverse: torch.Tensor, k: int, *, causal: bool = True, window: int = 1,
                  rank_fn: Optional[Callable[[torch.Tensor, int], torch.Tensor]] = None,
                  per_row: int = DEFAULT_PER_ROW, chunk: int = DEFAULT_CHUNK,
                  progress: Optional[Callable[[int], None]] = None,
                  started: Optional[Callable[[int], None]] = None) -> DistinctTopK:
    """Top-k neighbours of ``N`` nodes given as distinct feature rows (see the module docstring).

    Args:
        features: ``[U, d']`` float32 distinct feature rows (``featurize`` output).
        inverse: ``LongTensor[N]``: node n has features ``features[inverse[n]]``.
        k: neighbours per node, >= 1. causal, window: the candidate rule of ``streaming_topk``.
        rank_fn: ``(features [U, d'], per_row) -> LongTensor[U, <= per_row]`` candidate distinct rows
            of each row (-1 padding), e.g. an approximate search; None: exact.
        per_row: distinct rows listed per row (>= 2). chunk: nodes per expansion step.
        started: called once with the number of nodes left after the own-occurrence step (the
            ranked ones, which take almost all the time). progress: called with the number of those
            finished after each step.

    Returns:
        :class:`DistinctTopK`; exact (equal to ``streaming_topk``) when ``rank_fn`` is None.
    """
    if features.dim() != 2 or inverse.dim() != 1:
        raise ValueError(f"features must be [U, d] and inverse [N], got {tuple(features.shape)} and "
                         f"{tuple(inverse.shape)}")
    if not isinstance(k, int) or k < 1 or not isinstance(per_row, int) or per_row < 2:
        raise ValueError(f"k={k!r}, per_row={per_row!r} are invalid; accepted: k >= 1, per_row >= 2")
    n, num = inverse.numel(), features.shape[0]
    if n and not (0 <= int(inverse.min()) and int(inverse.max()) < num):
        raise ValueError(f"inverse must index the {num} feature rows, got values in "
                         f"[{int(inverse.min())}, {int(inverse.max())}]")
    features = drop_zero_columns(features.float().contiguous())
    inverse = inverse.long()
    width = k if causal else k + 2 * window + 1
    table, counts, last = occurrence_table(inverse, num, width)
    first = table[:num, 0]
    exact = rank_fn is None
    ranked = exact_ranking(features, per_row) if exact else rank_fn(features, per_row)
    rows, row_scores = _ranked_lists(features, ranked[:, :per_row])
    complete = rows.shape[1] >= num                                  # every distinct row listed
    own_best = rows[:, 0] == torch.arange(num)
    if rows.shape[1] > 1:
        own_best &= row_scores[:, 0] > row_scores[:, 1]
    indices = torch.full((n, k), -1, dtype=torch.int32)
    scores = torch.zeros(n, k)
    kth = table[:, k - 1][inverse]
    own = own_best[inverse] & (kth < torch.arange(n) - window)     # its own first k occurrences are candidates
    del kth
    zero = (features == 0).all(1)[inverse] & ~own                   # scores all 0: ties, so the first k candidates
    if zero.any():
        nodes = zero.nonzero().flatten()
        first_k = torch.arange(min(n, k + 2 * window + 1))
        ok = _valid(first_k[None, :].expand(nodes.numel(), -1), nodes, n, causal, window)
        idx = torch.topk(torch.where(ok, first_k, n + first_k), min(k, first_k.numel()), dim=1, largest=False).values
        idx = idx.masked_fill(idx >= n, -1)
        indices[nodes, :idx.shape[1]] = idx.int()
    for start in range(0, n, 1 << 20):                              # bounded temporaries
        stop = min(n, start + (1 << 20))
        row = inverse[start:stop]
        mask = own[start:stop]
        indices[start:stop][mask] = table[row[mask], :k].int()
        scores[start:stop][mask] = row_scores[row[mask], :1].expand(-1, k)
    rest = (~(own | zero)).nonzero().flatten()
    result = DistinctTopK(indices, scores, own=own, occurrences=(table, counts, last), direct=n - rest.numel())
    if started is not None:
        started(rest.numel())
    for start in range(0, rest.numel(), chunk):
        nodes = rest[start:start + chunk]
        row = inverse[nodes]
        idx, val, filled = _pick(nodes, rows[row], row_scores[row], table, k, n, causal, window)
        done = filled == k
        if complete:
            done = torch.ones_like(done)
        elif exact:
            done &= val[:, k - 1] > row_scores[row, -1]
        indices[nodes[done]], scores[nodes[done]] = idx[done].int(), val[done]
        again = nodes[~done]
        step = max(1, (1 << 24) // max(num, 1))
        for r0 in range(0, again.numel(), step):
            part = again[r0:r0 + step]
            idx, val = _rescore(part, features, inverse, table, first, counts, last, k, n, causal, window)
            indices[part], scores[part] = idx.int(), val
        result.listed += int(done.sum())
        result.rescored += again.numel()
        if progress is not None:
            progress(nodes.numel())
    return result


def exact_rows(features: torch.Tensor, inverse: torch.Tensor, nodes: torch.Tensor, k: int, *, causal: bool = True,
               window: int = 1, occurrences: Optional[tuple] = None):
    """Exact top-k of the nodes ``nodes [R]`` only (every distinct row scored): the reference recall is measured
    against. Returns ``(indices [R, k] long, scores [R, k])`` as :func:`~sosm.graph.topk.dense_topk` would.
    ``occurrences``: :attr:`DistinctTopK.occurrences` of the same inputs, to skip recomputing it."""
    features = drop_zero_columns(features.float().contiguous())
    inverse, nodes = inverse.long(), nodes.long()
    num = features.shape[0]
    table, counts, last = occurrences or occurrence_table(inverse, num, k if causal else k + 2 * window + 1)
    step = max(1, (1 << 24) // max(num, 1))
    parts = [_rescore(nodes[r0:r0 + step], features, inverse, table, table[:num, 0], counts, last, k,
                      inverse.numel(), causal, window) for r0 in range(0, nodes.numel(), step)]
    if not parts:
        return torch.empty(0, k, dtype=torch.long), torch.empty(0, k)
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
