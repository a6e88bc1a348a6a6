"""Exact streaming top-k over token features, never holding the ``T x T`` score matrix.

Candidates of query i: causal ``j <= i - window - 1``; bidirectional ``|i - j| > window``;
padded tokens (``padding_mask`` False) are never keys and get no neighbours. Ranking is by
:func:`sosm.graph.similarity.pair_scores` (the exact float64-summed dot product rounded to
float32), ties to the lower index j, so :func:`streaming_topk` and :func:`dense_topk` return
identical indices and bit-identical scores.

How the streaming path stays exact and fast: for each tile of ``block_size`` queries it streams
key tiles (causal: only keys before the tile's frontier), scores them with one float32 matmul
and merges into a running top-``k + slack`` list (rows whose best new score cannot beat their
current worst are skipped). Then the kept candidates are re-scored exactly and sorted by
(score desc, index asc). A candidate left out has float32 score <= the list's worst, so its
exact score is below ``worst + margin`` (``margin`` bounds the float32 matmul error); a row
whose exact k-th score is not above that bound (near-ties, duplicated vectors) is recomputed
exactly over all its candidates. Peak memory: ``O(B * T * k + B * block_size^2)``.

Example:
    >>> import torch
    >>> from sosm.graph.topk import streaming_topk, dense_topk
    >>> f = torch.nn.functional.normalize(torch.randn(2, 50, 16), dim=-1)
    >>> a = streaming_topk(f, 4, causal=True, window=1, block_size=16)
    >>> b = dense_topk(f, 4, causal=True, window=1)
    >>> all(torch.equal(u, v) for u, v in zip(a, b))
    True
"""
from __future__ import annotations

from typing import Optional

import torch

from .similarity import pair_scores, pair_scores_feature_major

NEG_INF = float("-inf")
#: relative bound on |float32 matmul - exact| for unit-norm features of width <= 64 (about 25x
#: the worst-case gamma_64 = 64 * 2^-24); only decides which rows take the exact fallback.
MATMUL_MARGIN = 1e-4
_FALLBACK_ROWS = 64
_GROUP = 16  # columns per group in the tile prefilter of _merge


def candidate_mask(queries: torch.Tensor, keys: torch.Tensor, causal: bool, window: int) -> torch.Tensor:
    """``[len(queries), len(keys)]`` bool: True where key j is a candidate of query i (positions)."""
    gap = queries[:, None] - keys[None, :]
    return gap > window if causal else gap.abs() > window


def _not_candidate(q0, q1, k0, k1, causal, window, device) -> torch.Tensor:
    """``[q1 - q0, k1 - k0]`` bool, True where key j is NOT a candidate of query i (a band mask)."""
    ones = torch.ones(q1 - q0, k1 - k0, dtype=torch.bool, device=device)
    # column c - row r = (j - i) + (q0 - k0); candidate (causal) iff j - i <= -window - 1
    later = ones.triu(q0 - k0 - window)  # j - i >= -window
    if causal:
        return later
    return later & ones.tril(q0 - k0 + window)  # also j - i <= window


def _select_exact(scores: torch.Tensor, keys: torch.Tensor, k: int):
    """Top-k of exact ``scores [R, N]`` (``keys [N]`` ascending, -inf = not a candidate), ties to lower key."""
    values, order = torch.sort(scores, dim=-1, descending=True, stable=True)
    values, order = values[:, :k], order[:, :k]
    idx = keys[order].masked_fill(torch.isinf(values), -1)
    return idx, values.masked_fill(idx < 0, 0.0)


def _pad_to_k(idx: torch.Tensor, val: torch.Tensor, k: int):
    missing = k - idx.shape[-1]
    if missing > 0:
        idx = torch.cat([idx, idx.new_full((*idx.shape[:-1], missing), -1)], -1)
        val = torch.cat([val, val.new_zeros((*val.shape[:-1], missing))], -1)
    return idx, val


def dense_topk(features: torch.Tensor, k: int, *, causal: bool = True, window: int = 1,
               padding_mask: Optional[torch.Tensor] = None):
    """Dense reference (holds ``[B, T, T]`` exact scores; for tests and small T).

    Args:
        features: ``[B, T, d]`` float features. k: neighbours per query (>= 1).
        causal, window: candidate rule (see module docstring). padding_mask: ``[B, T]`` bool or None.

    Returns:
        ``indices [B, T, k]`` long (-1 where fewer candidates) and ``scores [B, T, k]`` float32
        (0 at -1), each row ordered by score desc then index asc.
    """
    f = features.float()
    batch, length, _ = f.shape
    pos = torch.arange(length, device=f.device)
    scores = pair_scores(f[:, :, None, :], f[:, None, :, :])  # [B, T, T]
    valid = candidate_mask(pos, pos, causal, window)[None].expand(batch, -1, -1)
    if padding_mask is not None:
        valid = valid & padding_mask[:, None, :] & padding_mask[:, :, None]
    scores = scores.masked_fill(~valid, NEG_INF)
    idx, val = _select_exact(scores.reshape(batch * length, length), pos, k)
    idx, val = _pad_to_k(idx, val, k)
    return idx.reshape(batch, length, k), val.reshape(batch, length, k)


def _exact_rows(f, b_rows, i_rows, k, causal, window, key_ok, key_end):
    """Exact top-k of a few query rows (global batch/position ids) over all their candidates."""
    keys = torch.arange(key_end, device=f.device)
    idx_out, val_out = [], []
    for r0 in range(0, b_rows.numel(), _FALLBACK_ROWS):
        b, i = b_rows[r0:r0 + _FALLBACK_ROWS], i_rows[r0:r0 + _FALLBACK_ROWS]
        scores = pair_scores(f[b, i][:, None, :], f[b, :key_end])  # [R, key_end]
        ok = candidate_mask(i, keys, causal, window)
        if key_ok is not None:
            ok = ok & key_ok[b, :key_end]
        idx, val = _select_exact(scores.masked_fill(~ok, NEG_INF), keys, k)
        idx, val = _pad_to_k(idx, val, k)
        idx_out.append(idx)
        val_out.append(val)
    return torch.cat(idx_out), torch.cat(val_out)


def _merge(best_v, best_i, scores, k0):
    """Merge a key tile's float32 ``scores [R, tk]`` into running ``best_v/best_i [R, kk]`` in place.

    Rows whose tile maximum cannot beat their current worst are skipped. Columns are split into
    ``width / _GROUP`` strided groups (group g = columns ``g, g + width/_GROUP, ...``: a vertical
    max over ``_GROUP`` contiguous slices, which vectorises); when there are at least ``kk``
    groups, only the ``kk`` groups with the largest maxima can hold the tile's top ``kk`` (any
    other group's max is <= the kk-th group max, a value reached by kk distinct entries), so
    top-k runs over ``kk * _GROUP`` entries per row.
    """
    rows, width = scores.shape
    kk = best_v.shape[1]
    stride = width // _GROUP
    grouped = width % _GROUP == 0 and stride >= kk
    group_max = scores.view(rows, _GROUP, stride).amax(1) if grouped else None  # [R, stride]
    row_max = (group_max if grouped else scores).amax(-1)
    hit = (row_max > best_v[:, -1]).nonzero().squeeze(1)
    if hit.numel() == 0:
        return
    every = hit.numel() == rows
    cur_v, cur_i = (best_v, best_i) if every else (best_v[hit], best_i[hit])
    tile = scores if every else scores[hit]
    if grouped:
        groups = (group_max if every else group_max[hit]).topk(kk, dim=1).indices  # [R', kk]
        cols = (groups[:, :, None] + stride * torch.arange(_GROUP, device=scores.device)).flatten(1)
        tile = tile.gather(1, cols)  # [R', kk * _GROUP]
    else:
        cols = None
    top_v, pos = torch.cat([cur_v, tile], 1).topk(kk, dim=1)
    new_i = pos - kk if cols is None else cols.gather(1, (pos - kk).clamp_min(0))
    top_i = torch.where(pos < kk, cur_i.gather(1, pos.clamp(max=kk - 1)), new_i + k0)
    if every:
        best_v.copy_(top_v)
        best_i.copy_(top_i)
    else:
        best_v[hit] = top_v
        best_i[hit] = top_i


def streaming_topk(features: torch.Tensor, k: int, *, causal: bool = True, window: int = 1,
                   padding_mask: Optional[torch.Tensor] = None, block_size: int = 1024,
                   slack: Optional[int] = None):
    """Exact top-k neighbours by blocks of queries and keys; same results as :func:`dense_topk`.

    Args:
        features: ``[B, T, d]`` float features (``featurize`` output; unit norm or less).
        k: neighbours per query, ``>= 1``.
        causal: candidates ``j <= i - window - 1`` (default) else ``|i - j| > window``.
        window: sequential window excluded from candidates, ``>= 0``. Default 1.
        padding_mask: ``[B, T]`` bool, True for real tokens; None means all real.
        block_size: rows and columns per tile (memory ``O(block_size^2)`` per batch item).
        slack: extra float32 candidates kept per row before exact re-scoring
            (default ``max(4, k // 2)``); only affects speed.

    Returns:
        ``indices [B, T, k]`` long, -1 where fewer candidates; ``scores [B, T, k]`` float32, 0 there.
    """
    f = features.float().contiguous()
    batch, length, _ = f.shape
    kk = k + (max(4, k // 2) if slack is None else slack)
    margin = MATMUL_MARGIN * max(1.0, float(f.norm(dim=-1).max()) ** 2) if f.numel() else MATMUL_MARGIN
    f_t = f.permute(2, 0, 1).contiguous()  # [d, B, T] feature-major for exact re-scoring
    out_idx = torch.full((batch, length, k), -1, dtype=torch.long, device=f.device)
    out_val = torch.zeros(batch, length, k, device=f.device)
    buffer = None
    for q0 in range(0, length, block_size):
        q1 = min(length, q0 + block_size)
        tq = q1 - q0
        key_end = max(0, q1 - 1 - window) if causal else length
        if key_end == 0:
            continue
        fq = f[:, q0:q1]  # [B, tq, d]
        best_v = torch.full((batch * tq, kk), NEG_INF, device=f.device)
        best_i = torch.full((batch * tq, kk), -1, dtype=torch.long, device=f.device)
        for k0 in range(0, key_end, block_size):
            k1 = min(key_end, k0 + block_size)
            if buffer is None or buffer.shape != (batch, tq, k1 - k0):
                buffer = torch.empty(batch, tq, k1 - k0, device=f.device)
            scores = torch.bmm(fq, f[:, k0:k1].transpose(1, 2), out=buffer)  # [B, tq, tk]
            near = (k1 - 1 > q0 - window - 1) if causal else (k0 <= q1 - 1 + window and k1 - 1 >= q0 - window)
            if near:
                scores.masked_fill_(_not_candidate(q0, q1, k0, k1, causal, window, f.device)[None], NEG_INF)
            if padding_mask is not None:
                scores.masked_fill_(~padding_mask[:, None, k0:k1], NEG_INF)
            _merge(best_v, best_i, scores.reshape(batch * tq, k1 - k0), k0)
        valid = best_v > NEG_INF
        f_keys = f_t[:, torch.arange(batch, device=f.device).repeat_interleave(tq)[:, None],
                     best_i.clamp_min(0)]  # [d, B*tq, kk]
        f_query = f_t[:, :, q0:q1].reshape(f.shape[2], batch * tq, 1)
        exact = pair_scores_feature_major(f_query, f_keys).masked_fill(~valid, NEG_INF)  # [B*tq, kk]
        by_index = torch.argsort(best_i.masked_fill(~valid, length), dim=1, stable=True)
        exact_s, cand_s = exact.gather(1, by_index), best_i.gather(1, by_index)
        exact_s, order = torch.sort(exact_s, dim=1, descending=True, stable=True)
        cand_s = cand_s.gather(1, order)
        idx = cand_s[:, :k].masked_fill(torch.isinf(exact_s[:, :k]), -1)
        val = exact_s[:, :k].masked_fill(idx < 0, 0.0)
        unsure = valid.all(1) & ~(exact_s[:, k - 1] > best_v[:, -1] + margin)
        if unsure.any():
            rows = unsure.nonzero().squeeze(1)
            fix_idx, fix_val = _exact_rows(f, rows // tq, q0 + rows % tq, k, causal, window, padding_mask, key_end)
            idx[rows], val[rows] = fix_idx, fix_val
        out_idx[:, q0:q1] = idx.reshape(batch, tq, k)
        out_val[:, q0:q1] = val.reshape(batch, tq, k)
    if padding_mask is not None:
        out_idx.masked_fill_(~padding_mask[..., None], -1)
        out_val.masked_fill_(~padding_mask[..., None], 0.0)
    return out_idx, out_val
