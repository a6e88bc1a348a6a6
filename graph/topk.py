"""Exact streaming top-k over token features, never holding the ``T x T`` score matrix.

Candidates of query i: causal ``j <= i - window - 1``; bidirectional ``|i - j| > window``;
padded tokens (``padding_mask`` False) are never keys and get no neighbours. Ranking is by
:func:`sosm.graph.similarity.pair_scores` (the exact float64-summed dot product rounded to
float32), ties to the lower index j, so :func:`streaming_topk` and :func:`dense_topk` return
identical indices and bit-identical scores.

How the streaming path stays exact and fast: for each tile of ``tile // 4`` queries it
streams key tiles of up to ``4 * tile`` columns (causal: only keys before the tile's
frontier), scores them with one float32 matmul (excluded band and padding added as ``-inf``
biases, never boolean masks) and merges them into a running top-``k + slack`` list per query
(see :func:`_merge`: strided 16-column group maxima, a per-row floor from chunk maxima, and
only the entries above a row's current worst are pulled out and merged). Then the kept
candidates are re-scored exactly and sorted by (score desc, index asc). A candidate left out
has float32 score <= the row's worst, so its exact score is below ``worst + margin``
(``margin`` bounds the float32 matmul error); a row whose exact k-th score is not above that
bound (near-ties, duplicated vectors) is recomputed exactly over all its candidates. Feature
columns that are zero for every token are dropped first (same scores). Peak memory:
``O(B * T * k + B * tile^2)``.

Example:
    >>> import torch
    >>> from sosm.graph.topk import streaming_topk, dense_topk
    >>> f = torch.nn.functional.normalize(torch.randn(2, 50, 16), dim=-1)
    >>> a = streaming_topk(f, 4, causal=True, window=1, tile=16)
    >>> b = dense_topk(f, 4, causal=True, window=1)
    >>> all(torch.equal(u, v) for u, v in zip(a, b))
    True
"""
from __future__ import annotations

from typing import Optional

import torch

from ..common.features import candidate_mask
from .similarity import drop_zero_columns, pair_scores, pair_scores_feature_major

NEG_INF = float("-inf")
#: relative bound on |float32 matmul - exact| for unit-norm features of width <= 64 (about 25x
#: the worst-case gamma_64 = 64 * 2^-24); only decides which rows take the exact fallback.
MATMUL_MARGIN = 1e-4
_FALLBACK_ROWS = 64
_GROUP = 16  # columns per group in the tile prefilter of _merge


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


def _orderable(values: torch.Tensor) -> torch.Tensor:
    """float32 -> int64 with the same order (``-0.0`` just below ``+0.0``; no NaN expected)."""
    bits = values.contiguous().view(torch.int32).long()
    return torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)


def _sort_by_score_then_index(scores: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Per row, the permutation ordering ``scores [R, n]`` desc, then ``index [R, n]`` (``0 <= index < 2^31``) asc.

    One int64 sort key per entry: ``(2^31 - 1 - orderable(score)) << 31 | index``.
    """
    key = ((0x7FFFFFFF - _orderable(scores)) << 31) | index
    return torch.sort(key, dim=1).indices


def _merge(best_v, best_i, floor, scores, k0):
    """Merge a key tile's float32 ``scores [R, tk]`` into the running lists in place.

    State per row: ``best_v/best_i [R, kk]`` sorted descending and ``floor [R]``; the row's
    *worst* is ``max(best_v[:, -1], floor)`` and every float32 score seen but not listed is
    ``<= worst`` (what the exact re-scoring relies on). Columns are split into
    ``S = tk / _GROUP`` strided groups (group g = columns ``g, g + S, ..., g + 15 S``: a
    vertical max over ``_GROUP`` contiguous slices, which vectorises). Entries above the worst
    lie in the groups whose max is above it ("hit" groups).

    - While some row's list is not full (the first tiles of a query block), the floor of the
      rows with at least ``kk`` chunk maxima above their worst is raised to the kk-th largest of
      ``c`` strided chunk maxima of the group maxima (``c`` the power of two ``>= 2 kk``,
      dividing S): kk distinct entries are ``>=`` it, so rows keep about kk + a few hit groups
      instead of all of them. Entries dropped below the floor stay ``<= worst``.
    - Entries above the worst are pulled out of the hit groups (row-major ``nonzero``), padded
      per row and merged with the list by one small ``topk``; late tiles, where most rows have
      no hit group, cost almost nothing per row.
    - Rows with more than ``min(2 kk, S / 2)`` hit groups (short tiles, or no chunk floor)
      take their ``kk`` largest groups (any other group's max is <= the kk-th group max, a
      value reached by kk distinct entries) and one ``topk`` over the list and those
      ``kk * _GROUP`` entries.

    Narrow tiles (fewer than ``kk`` groups) merge whole rows.
    """
    rows, width = scores.shape
    kk = best_v.shape[1]
    stride = width // _GROUP
    if width % _GROUP or stride < kk:
        if k0 == 0 and width >= kk:  # a query block's first key tile: every list is still empty
            top_v, top_i = scores.topk(kk, dim=1)  # -inf entries are masked downstream (best_v > -inf)
            best_v.copy_(top_v)
            best_i.copy_(top_i)
            return
        hit = (scores.amax(1) > best_v[:, -1]).nonzero().squeeze(1)
        if hit.numel():
            _merge_rows(best_v, best_i, hit, scores[hit], None, k0)
        return
    group_max = scores.view(rows, _GROUP, stride).amax(1)  # [R, S]
    worst = torch.maximum(best_v[:, -1], floor)
    chunks = 1 << (2 * kk - 1).bit_length()  # power of two >= 2 kk
    if stride % chunks == 0 and bool(torch.isinf(worst).any()):  # some list not full yet
        chunk_max = group_max.view(rows, stride // chunks, chunks).amax(1)  # [R, chunks], strided chunks
        lift = ((chunk_max > worst[:, None]).sum(1) >= kk).nonzero().squeeze(1)
        if lift.numel():  # kk-th largest chunk max: kk distinct entries are >= it
            floor[lift] = chunk_max[lift].topk(kk, dim=1, sorted=False).values.amin(1)
            worst[lift] = torch.maximum(worst[lift], floor[lift])
    r, g = (group_max > worst[:, None]).nonzero(as_tuple=True)  # hit groups, row-major
    if r.numel() == 0:
        return
    lane = stride * torch.arange(_GROUP, device=scores.device)
    heavy = torch.bincount(r, minlength=rows) > min(2 * kk, stride // 2)  # most groups hit: dense is cheaper
    if bool(heavy.any()):
        every = bool(heavy.all())
        sel = None if every else heavy.nonzero().squeeze(1)
        groups = (group_max if every else group_max[sel]).topk(kk, dim=1).indices  # [R', kk]
        cols = (groups[:, :, None] + lane).flatten(1)  # [R', kk * _GROUP]
        tile = scores.gather(1, cols) if every else scores.view(-1).take(sel[:, None] * width + cols)
        _merge_rows(best_v, best_i, sel, tile, cols, k0)
        if every:
            return
        light = ~heavy[r]
        r, g = r[light], g[light]
        if r.numel() == 0:
            return
    cols = g[:, None] + lane  # [P, _GROUP]
    vals = scores.view(-1).take(r[:, None] * width + cols)
    p, j = (vals > worst[r][:, None]).nonzero(as_tuple=True)  # entries above the worst, row-major
    row, val, col = r[p], vals[p, j], cols[p, j]
    rows_hit, slot_row, count = torch.unique_consecutive(row, return_inverse=True, return_counts=True)
    slot = torch.arange(row.numel(), device=row.device) - (count.cumsum(0) - count)[slot_row]
    width_new = int(count.max())
    new_v = torch.full((rows_hit.numel(), width_new), NEG_INF, device=scores.device)
    new_v[slot_row, slot] = val
    new_c = torch.zeros((rows_hit.numel(), width_new), dtype=torch.long, device=scores.device)
    new_c[slot_row, slot] = col
    _merge_rows(best_v, best_i, rows_hit, new_v, new_c, k0)


def _merge_rows(best_v, best_i, sel, tile, cols, k0):
    """Top-kk of (rows ``sel`` of the running lists) + (``tile`` entries at columns ``cols``)."""
    kk = best_v.shape[1]
    cur_v, cur_i = (best_v, best_i) if sel is None else (best_v[sel], best_i[sel])
    top_v, pos = torch.cat([cur_v, tile], 1).topk(kk, dim=1)
    new_col = pos - kk
    if cols is not None:
        new_col = cols.gather(1, new_col.clamp_min(0))
    top_i = torch.where(pos < kk, cur_i.gather(1, pos.clamp(max=kk - 1)), new_col + k0)
    if sel is None:
        best_v.copy_(top_v)
        best_i.copy_(top_i)
    else:
        best_v[sel] = top_v
        best_i[sel] = top_i


class _Band:
    """Additive ``0 / -inf`` masks for the tiles that touch the excluded band around the diagonal.

    Candidate rule in offsets ``o = j - i``: causal ``o <= -window - 1``; bidirectional
    ``|o| > window``. For a query tile ``[q0, q0 + tq)`` and ``c = j - (q0 - window)``, key ``j``
    is excluded for row ``r`` where ``c >= r`` (causal; every row for ``c >= tq``) or
    ``0 <= c - r <= 2 * window`` (bidirectional). Those columns are cut into segments, each
    either a precomputed ``[tq, width]`` bias slice or excluded for every row (filled), so a
    tile costs one add over at most ``tq + 2 * window`` columns (never a boolean mask).
    """

    def __init__(self, causal: bool, window: int, device):
        self.causal, self.window, self.device = causal, window, device
        self._segments = {}

    def _bias(self, tq: int, width: int, bad) -> torch.Tensor:
        r = torch.arange(tq, device=self.device)[:, None]
        c = torch.arange(width, device=self.device)[None, :]
        return torch.zeros(tq, width, device=self.device).masked_fill_(bad(r, c), NEG_INF)

    def segments(self, tq: int) -> list:
        """``[(c0, c1, bias [tq, c1 - c0] or None = all excluded)]`` for a tile of ``tq`` rows."""
        if tq not in self._segments:
            w2 = 2 * self.window
            if self.causal:
                segs = [(0, tq, self._bias(tq, tq, lambda r, c: c >= r)), (tq, None, None)]
            elif w2 <= 2 * tq:  # one Toeplitz slab of width tq + 2w
                segs = [(0, tq + w2, self._bias(tq, tq + w2, lambda r, c: (c >= r) & (c - r <= w2)))]
            else:  # wide window: triangle, columns excluded for all rows, triangle
                segs = [(0, tq - 1, self._bias(tq, tq - 1, lambda r, c: c >= r)), (tq - 1, w2 + 1, None),
                        (w2 + 1, w2 + tq, self._bias(tq, tq - 1, lambda r, c: r > c))]
            self._segments[tq] = segs
        return self._segments[tq]

    def apply(self, scores: torch.Tensor, q0: int, tq: int, k0: int, k1: int) -> None:
        """Mask ``scores [B, tq, k1 - k0]`` (query rows ``q0..``, keys ``k0..k1``) in place."""
        lo = q0 - self.window  # key of band column c = 0
        for c0, c1, bias in self.segments(tq):
            a = max(k0, lo + c0)
            b = k1 if c1 is None else min(k1, lo + c1)
            if a >= b:
                continue
            if bias is None:
                scores[:, :, a - k0:b - k0].fill_(NEG_INF)
            else:
                scores[:, :, a - k0:b - k0] += bias[:, a - lo - c0:b - lo - c0]


def _tile_shape(tile: int, length: int, kk: int):
    """``(rows, cols, unit)``: query rows and key columns per tile and batch item, key-width unit.

    A tile holds ``rows * cols = tile^2`` scores (``tile // 4`` rows by
    ``4 * tile`` columns: wide tiles mean fewer merges per query row). Key tiles are cut
    in ``unit`` columns: ``_GROUP`` times the chunk count of :func:`_merge`, so every tile but
    short sequences' gets the chunk floor; a causal query tile's last key tile stops at the
    first unit past its last candidate.
    """
    chunks = 1 << (2 * kk - 1).bit_length()
    rows = min(length, max(_GROUP, tile // 4))
    cols = max(_GROUP, 4 * tile)
    unit = _GROUP * chunks if min(cols, length) >= _GROUP * chunks else _GROUP
    cols = -(-min(cols, length) // unit) * unit
    return rows, cols, unit


def streaming_topk(features: torch.Tensor, k: int, *, causal: bool = True, window: int = 1,
                   padding_mask: Optional[torch.Tensor] = None, tile: int = 1024,
                   slack: Optional[int] = None):
    """Exact top-k neighbours by tiles of queries and keys; same results as :func:`dense_topk`.

    Args:
        features: ``[B, T, d]`` float features (``featurize`` output; unit norm or less).
        k: neighbours per query, ``>= 1``.
        causal: candidates ``j <= i - window - 1`` (default) else ``|i - j| > window``.
        window: sequential window excluded from candidates, ``>= 0``. Default 1.
        padding_mask: ``[B, T]`` bool, True for real tokens; None means all real.
        tile: a tile holds ``tile // 4`` query rows by ``4 * tile`` key
            columns per batch item, about ``B * tile^2`` float32 scores (default 1024:
            4 MiB per sample; rounded to whole 16-column groups).
        slack: extra float32 candidates kept per row before exact re-scoring
            (default ``max(4, k // 2)``); only affects speed.

    Returns:
        ``indices [B, T, k]`` long, -1 where fewer candidates; ``scores [B, T, k]`` float32, 0 there.
    """
    f = drop_zero_columns(features.float().contiguous())
    batch, length, dim = f.shape
    dev = f.device
    kk = k + (max(4, k // 2) if slack is None else slack)
    margin = MATMUL_MARGIN * max(1.0, float(f.norm(dim=-1).max()) ** 2) if f.numel() else MATMUL_MARGIN
    out_idx = torch.full((batch, length, k), -1, dtype=torch.long, device=dev)
    out_val = torch.zeros(batch, length, k, device=dev)
    if length == 0:
        return out_idx, out_val
    rows, cols, unit = _tile_shape(tile, length, kk)
    padded = -(-length // unit) * unit
    f_keys = f if padded == length else torch.cat([f, f.new_zeros(batch, padded - length, dim)], 1)
    key_bias = None  # [B, padded] 0 / -inf where padding_mask is False (positions >= length are filled)
    if padding_mask is not None:
        key_bias = torch.zeros(batch, padded, device=dev)
        key_bias[:, :length].masked_fill_(~padding_mask, NEG_INF)
        padded_before = [0] + (~padding_mask).any(0).long().cumsum(0).tolist()  # padded keys before j
    band = _Band(causal, window, dev)
    f_t = f.permute(2, 0, 1).contiguous()  # [d, B, T] feature-major for exact re-scoring
    storage = torch.empty(batch * rows * cols, device=dev)
    for q0 in range(0, length, rows):
        q1 = min(length, q0 + rows)
        tq = q1 - q0
        key_end = max(0, q1 - 1 - window) if causal else length
        if key_end == 0:
            continue
        fq = f[:, q0:q1]  # [B, tq, d]
        best_v = torch.full((batch * tq, kk), NEG_INF, device=dev)
        best_i = torch.full((batch * tq, kk), -1, dtype=torch.long, device=dev)
        floor = torch.full((batch * tq,), NEG_INF, device=dev)
        for k0 in range(0, key_end, cols):
            width = min(cols, -(-(key_end - k0) // unit) * unit)  # the last tile only up to key_end
            k1 = k0 + width
            scores = torch.bmm(fq, f_keys[:, k0:k1].transpose(1, 2),
                               out=storage[:batch * tq * width].view(batch, tq, width))  # [B, tq, width]
            if k1 > q0 - window and (causal or k0 <= q1 - 1 + window):
                band.apply(scores, q0, tq, k0, k1)
            if k1 > length:  # zero rows padding the keys to whole units
                scores[:, :, length - k0:].fill_(NEG_INF)
            if key_bias is not None and padded_before[min(k1, length)] > padded_before[k0]:
                scores += key_bias[:, None, k0:k1]
            _merge(best_v, best_i, floor, scores.view(batch * tq, width), k0)
        valid = best_v > NEG_INF
        key_pos = best_i.masked_fill(~valid, 0)  # -inf slots may name padding columns >= length
        rows_at = torch.arange(batch, device=dev).repeat_interleave(tq)[:, None] * length  # [B*tq, 1]
        f_key = f_t.view(dim, batch * length).index_select(1, (rows_at + key_pos).view(-1))  # one flat gather
        f_key = f_key.view(dim, batch * tq, -1)  # [d, B*tq, kk]
        f_query = f_t[:, :, q0:q1].reshape(dim, batch * tq, 1)
        exact = pair_scores_feature_major(f_query, f_key).masked_fill(~valid, NEG_INF)  # [B*tq, kk]
        order = _sort_by_score_then_index(exact, key_pos.masked_fill(~valid, length))
        exact_s, cand_s = exact.gather(1, order), best_i.gather(1, order)
        idx = cand_s[:, :k].masked_fill(torch.isinf(exact_s[:, :k]), -1)
        val = exact_s[:, :k].masked_fill(idx < 0, 0.0)
        worst = torch.maximum(best_v[:, -1], floor)  # -inf: nothing was ever dropped
        unsure = (worst > NEG_INF) & ~(exact_s[:, k - 1] > worst + margin)
        if unsure.any():
            fix = unsure.nonzero().squeeze(1)
            fix_idx, fix_val = _exact_rows(f, fix // tq, q0 + fix % tq, k, causal, window, padding_mask, key_end)
            idx[fix], val[fix] = fix_idx, fix_val
        out_idx[:, q0:q1] = idx.reshape(batch, tq, k)
        out_val[:, q0:q1] = val.reshape(batch, tq, k)
    if padding_mask is not None:
        out_idx.masked_fill_(~padding_mask[..., None], -1)
        out_val.masked_fill_(~padding_mask[..., None], 0.0)
    return out_idx, out_val
