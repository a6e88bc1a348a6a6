"""Fused similarity + running top-k: never materialises the ``T x T`` score matrix.

One program owns ``BLOCK_M`` queries of one batch item. It streams key tiles of ``BLOCK_N``
tokens (causal: only up to the tile's frontier ``max(i) - window - 1``), scores them with one
float32 ``tl.dot`` (IEEE precision, so near-ties are decided as the dense oracle decides them),
and merges them into a per-query top-k held in registers: while some query in the tile has a
candidate better than its current k-th best, every such query swaps its worst entry for its
best remaining candidate. Candidates arrive in increasing index order, so "better" is strictly
greater similarity and ties keep the lower index, as the contract asks. A final k-round
selection writes each row sorted by (similarity descending, index ascending).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ...common.features import has_direction
from .reference import MAX_K


def _new_output(shape, dtype, device):
    """Every kernel output comes from here (tests replace it to pre-fill with NaN / garbage)."""
    return torch.empty(shape, dtype=dtype, device=device)


@triton.jit
def _merge_tile(base, keys_ok, length, n_feat, q, offs_m, mask_m, n0, window, top_v, top_i, worst_v, worst_i,
                MASKED: tl.constexpr, CAUSAL: tl.constexpr, USE_DOT: tl.constexpr, SKIP_KEYS: tl.constexpr,
                BLOCK_N: tl.constexpr, BLOCK_F: tl.constexpr):
    """Score one key tile against the queries and merge it into the running top-k."""
    offs_n = n0 + tl.arange(0, BLOCK_N)
    mask_n = offs_n < length
    if USE_DOT:  # GPU: each score is one fixed-order chain of float32 multiply-adds
        offs_f = tl.arange(0, BLOCK_F)
        keys = tl.load(base + offs_f[None, :] * length + offs_n[:, None],
                       mask=mask_n[:, None] & (offs_f < n_feat)[None, :], other=0.0)
        s = tl.dot(q, tl.trans(keys), input_precision="ieee")
    else:  # interpreter: numpy's matmul rounds equal columns differently, so multiply-add by hand
        s = tl.zeros((q.shape[0], BLOCK_N), dtype=tl.float32)
        for fi in range(n_feat):
            q_f = tl.load(base + fi * length + offs_m, mask=mask_m, other=0.0)
            k_f = tl.load(base + fi * length + offs_n, mask=mask_n, other=0.0)
            s += q_f[:, None] * k_f[None, :]
    neg_inf = float("-inf")
    if MASKED:
        gap = offs_m[:, None] - offs_n[None, :]
        if CAUSAL:
            valid = gap > window
        else:
            valid = (gap > window) | (gap < -window)
        s = tl.where(valid & mask_n[None, :], s, neg_inf)
    if SKIP_KEYS:  # zero states are no candidates
        ok_n = tl.load(keys_ok + offs_n, mask=mask_n, other=0)
        s = tl.where(ok_n[None, :] != 0, s, neg_inf)
    best = tl.max(s, 1)
    go = tl.max((best > worst_v).to(tl.int32), 0) > 0
    while go:
        take = best > worst_v
        best_j = tl.min(tl.where(s == best[:, None], offs_n[None, :], 2147483647), 1)
        hit = (top_v == worst_v[:, None]) & (top_i == worst_i[:, None]) & take[:, None]
        top_v = tl.where(hit, best[:, None], top_v)
        top_i = tl.where(hit, best_j[:, None], top_i)
        s = tl.where(offs_n[None, :] == best_j[:, None], neg_inf, s)
        worst_v = tl.min(top_v, 1)
        worst_i = tl.max(tl.where(top_v == worst_v[:, None], top_i, -2147483647), 1)
        best = tl.max(s, 1)
        go = tl.max((best > worst_v).to(tl.int32), 0) > 0
    return top_v, top_i, worst_v, worst_i


@triton.jit
def _topk_kernel(f_ptr, ok_ptr, idx_ptr, sim_ptr, length, n_feat, window,
                 CAUSAL: tl.constexpr, USE_DOT: tl.constexpr, SKIP_KEYS: tl.constexpr, K: tl.constexpr,
                 KP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_F: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    m0 = pid_m * BLOCK_M
    offs_m = m0 + tl.arange(0, BLOCK_M)
    mask_m = offs_m < length
    base = f_ptr + pid_b * length * n_feat  # features stored [d', T]: columns are contiguous
    keys_ok = ok_ptr + pid_b * length  # int8 [T]: 0 for a zero state (read when SKIP_KEYS)
    q = tl.zeros((BLOCK_M, BLOCK_F), dtype=tl.float32)
    if USE_DOT:
        offs_f = tl.arange(0, BLOCK_F)
        q = tl.load(base + offs_f[None, :] * length + offs_m[:, None],
                    mask=mask_m[:, None] & (offs_f < n_feat)[None, :], other=0.0)
    slot = tl.arange(0, KP)[None, :]
    neg_inf = float("-inf")
    # unused padding slots hold +inf so they are never the worst; empty slots hold -inf and
    # distinct negative indices so exactly one slot is "the worst" at any time
    top_v = tl.where(slot < K, neg_inf, float("inf")) + tl.zeros((BLOCK_M, KP), dtype=tl.float32)
    top_i = (-1 - slot) + tl.zeros((BLOCK_M, KP), dtype=tl.int32)
    worst_v = tl.min(top_v, 1)
    worst_i = tl.max(tl.where(top_v == worst_v[:, None], top_i, -2147483647), 1)
    if CAUSAL:
        # tiles wholly before every query's window need no mask; the rest up to the frontier do
        n_full = tl.maximum(m0 - window, 0) // BLOCK_N * BLOCK_N
        n_end = tl.minimum(length, m0 + BLOCK_M - 1 - window)
        for n0 in range(0, n_full, BLOCK_N):
            top_v, top_i, worst_v, worst_i = _merge_tile(
                base, keys_ok, length, n_feat, q, offs_m, mask_m, n0, window, top_v, top_i, worst_v, worst_i,
                False, CAUSAL, USE_DOT, SKIP_KEYS, BLOCK_N, BLOCK_F)
        for n0 in range(n_full, n_end, BLOCK_N):
            top_v, top_i, worst_v, worst_i = _merge_tile(
                base, keys_ok, length, n_feat, q, offs_m, mask_m, n0, window, top_v, top_i, worst_v, worst_i,
                True, CAUSAL, USE_DOT, SKIP_KEYS, BLOCK_N, BLOCK_F)
    else:
        for n0 in range(0, length, BLOCK_N):
            top_v, top_i, worst_v, worst_i = _merge_tile(
                base, keys_ok, length, n_feat, q, offs_m, mask_m, n0, window, top_v, top_i, worst_v, worst_i,
                True, CAUSAL, USE_DOT, SKIP_KEYS, BLOCK_N, BLOCK_F)
    available = (slot < K) & (offs_m[:, None] >= 0)
    out_row = (pid_b * length + offs_m) * K
    for c in range(K):
        cand_v = tl.where(available, top_v, neg_inf)
        pick_v = tl.max(cand_v, 1)
        tie = available & (top_v == pick_v[:, None])
        pick_i = tl.min(tl.where(tie, top_i, 2147483647), 1)
        available = available & ~(tie & (top_i == pick_i[:, None]))
        empty = pick_v == neg_inf
        tl.store(idx_ptr + out_row + c, tl.where(empty, -1, pick_i).to(tl.int64), mask=mask_m)
        tl.store(sim_ptr + out_row + c, tl.where(empty, 0.0, pick_v), mask=mask_m)


def topk_indices_triton(features: torch.Tensor, k: int, *, causal: bool = True, window: int = 1,
                        block_m: int = 64, block_n: int = 64, num_warps: int = 4):
    """Top-k by ``f_i . f_j`` over the contract's candidates, from float32 features ``[B, T, d']``.

    Returns ``(indices [B, T, k] long, similarities [B, T, k] float32)``; ``-1`` / 0 where a
    query has fewer than k candidates. A token whose features are all zero (a zero state) is no
    candidate and gets none (docs/CONTRACTS.md). Memory O(B·T·k).
    """
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise ValueError(f"k must be an int in [1, {MAX_K}] on the Triton path, got {k!r}")
    if features.dim() != 3:
        raise ValueError(f"features must be [B, T, d'], got shape {tuple(features.shape)}")
    batch, length, n_feat = features.shape
    features_t = features.float().transpose(1, 2).contiguous()  # [B, d', T]
    direction = has_direction(features)  # [B, T] (one host-device sync below)
    skip_keys = not bool(direction.all())
    keys_ok = direction.to(torch.int8).contiguous()
    indices = _new_output((batch, length, k), torch.int64, features.device)
    sims = _new_output((batch, length, k), torch.float32, features.device)
    grid = (triton.cdiv(length, block_m), batch)
    use_dot = features.is_cuda  # the interpreter multiplies-adds by hand (see _merge_tile)
    _topk_kernel[grid](features_t, keys_ok, indices, sims, length, n_feat, window,
                       CAUSAL=bool(causal), USE_DOT=use_dot, SKIP_KEYS=skip_keys, K=k,
                       KP=max(2, triton.next_power_of_2(k)),
                       BLOCK_M=block_m, BLOCK_N=block_n,
                       BLOCK_F=max(16, triton.next_power_of_2(n_feat)), num_warps=num_warps)
    if skip_keys:  # a zero state's own row: no neighbours
        indices.masked_fill_(~direction[..., None], -1)
        sims.masked_fill_(~direction[..., None], 0.0)
    return indices, sims
