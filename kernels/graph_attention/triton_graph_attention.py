"""Triton gather kernels for graph attention (forward, dq, and key-side dk/dv).

One program per (batch, position, block of ``BLOCK_H`` heads; one head is fastest on the
H100). The forward program loads its query row, walks its
attended list ``GraphLayout.neighbors[b, i, :counts[b, i]]`` in chunks of ``BLOCK_N``,
gathers those K/V rows (``d`` contiguous elements each), computes the ALiBi landmark term
from ``alibi_coords`` on chip and runs an online softmax in float32; it stores the output
and the log-sum-exp (base 2). Work and traffic are ``O(E·d)`` for ``E`` edges, whatever the
edges' positions, which suits scattered semantic neighbours.

Backward, deterministic (no atomics): ``dq`` by the same walk over each query's list;
``dk, dv`` by one program per key walking the transposed list (``GraphLayout.rev_ptr /
rev_idx``), gathering the rows of ``q`` and ``dO`` of the queries that attend to it.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .layout import GraphLayout

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
CONFIG = {"BLOCK_N": 16, "BLOCK_H": 1, "num_warps": 1}  # best of the H100 sweep (bench JSON)


def _empty(shape, dtype, device):
    """Every output buffer comes from here (tests poison it with NaN)."""
    return torch.empty(shape, dtype=dtype, device=device)


@triton.jit
def _alibi_term(COORDS, row_base, rows, valid, coords_q, offs_l, L, BLOCK_L: tl.constexpr):
    """max_l |coords[rows, l] - coords_q[l]| for a chunk of rows: [BLOCK_N]."""
    lmask = offs_l < L
    c = tl.load(COORDS + (row_base + rows)[:, None] * L + offs_l[None, :],
                mask=valid[:, None] & lmask[None, :], other=0.0)
    diff = tl.where(lmask[None, :], tl.abs(c - coords_q[None, :]), 0.0)
    return tl.max(diff, 1)


@triton.jit
def _fwd_kernel(Q, K, V, NBR, CNT, COORDS, SLOPES, OUT, LSE, T, H, D, KW, L, qk_scale,
                HAS_ALIBI: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr,
                BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    n_hblocks = tl.cdiv(H, BLOCK_H)
    bt = pid // n_hblocks  # b * T + i
    b = bt // T
    offs_h = (pid % n_hblocks) * BLOCK_H + tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, BLOCK_D)
    hd = offs_h[:, None] * D + offs_d[None, :]  # [BLOCK_H, BLOCK_D] offsets inside a row
    hd_mask = (offs_h < H)[:, None] & (offs_d < D)[None, :]
    q = tl.load(Q + bt * H * D + hd, mask=hd_mask, other=0.0).to(tl.float32) * qk_scale
    count = tl.load(CNT + bt)
    offs_l = tl.arange(0, BLOCK_L)
    if HAS_ALIBI:
        coords_q = tl.load(COORDS + bt * L + offs_l, mask=offs_l < L, other=0.0)
        slope = tl.load(SLOPES + offs_h, mask=offs_h < H, other=0.0) * 1.4426950408889634
    m = tl.full([BLOCK_H], float("-inf"), tl.float32)
    denom = tl.zeros([BLOCK_H], tl.float32)
    acc = tl.zeros([BLOCK_H, BLOCK_D], tl.float32)
    for start in range(0, count, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        valid = offs_n < count
        j = tl.load(NBR + bt * KW + offs_n, mask=valid, other=0).to(tl.int64)
        rows = (b * T + j) * H * D
        ptrs = rows[:, None, None] + hd[None, :, :]
        kv_mask = valid[:, None, None] & hd_mask[None, :, :]
        k = tl.load(K + ptrs, mask=kv_mask, other=0.0).to(tl.float32)
        s = tl.sum(k * q[None, :, :], 2)  # [BLOCK_N, BLOCK_H]
        if HAS_ALIBI:
            dist = _alibi_term(COORDS, b * T, j, valid, coords_q, offs_l, L, BLOCK_L)
            s -= dist[:, None] * slope[None, :]
        s = tl.where(valid[:, None], s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, 0))
        alpha = tl.exp2(m - m_new)
        p = tl.exp2(s - m_new[None, :])
        v = tl.load(V + ptrs, mask=kv_mask, other=0.0).to(tl.float32)
        denom = denom * alpha + tl.sum(p, 0)
        acc = acc * alpha[:, None] + tl.sum(p[:, :, None] * v, 0)
        m = m_new
    tl.store(OUT + bt * H * D + hd, (acc / denom[:, None]).to(OUT.dtype.element_ty), mask=hd_mask)
    tl.store(LSE + bt * H + offs_h, m + tl.log2(denom), mask=offs_h < H)


@triton.jit
def _bwd_dq_kernel(Q, K, V, DO, LSE, DELTA, NBR, CNT, COORDS, SLOPES, DQ, T, H, D, KW, L,
                   qk_scale, scale, HAS_ALIBI: tl.constexpr, BLOCK_N: tl.constexpr,
                   BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    n_hblocks = tl.cdiv(H, BLOCK_H)
    bt = pid // n_hblocks
    b = bt // T
    offs_h = (pid % n_hblocks) * BLOCK_H + tl.arange(0, BLOCK_H)
    hmask = offs_h < H
    offs_d = tl.arange(0, BLOCK_D)
    hd = offs_h[:, None] * D + offs_d[None, :]
    hd_mask = hmask[:, None] & (offs_d < D)[None, :]
    q = tl.load(Q + bt * H * D + hd, mask=hd_mask, other=0.0).to(tl.float32) * qk_scale
    do = tl.load(DO + bt * H * D + hd, mask=hd_mask, other=0.0).to(tl.float32)
    lse = tl.load(LSE + bt * H + offs_h, mask=hmask, other=0.0)
    delta = tl.load(DELTA + bt * H + offs_h, mask=hmask, other=0.0)
    count = tl.load(CNT + bt)
    offs_l = tl.arange(0, BLOCK_L)
    if HAS_ALIBI:
        coords_q = tl.load(COORDS + bt * L + offs_l, mask=offs_l < L, other=0.0)
        slope = tl.load(SLOPES + offs_h, mask=hmask, other=0.0) * 1.4426950408889634
    dq = tl.zeros([BLOCK_H, BLOCK_D], tl.float32)
    for start in range(0, count, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        valid = offs_n < count
        j = tl.load(NBR + bt * KW + offs_n, mask=valid, other=0).to(tl.int64)
        ptrs = ((b * T + j) * H * D)[:, None, None] + hd[None, :, :]
        kv_mask = valid[:, None, None] & hd_mask[None, :, :]
        k = tl.load(K + ptrs, mask=kv_mask, other=0.0).to(tl.float32)
        v = tl.load(V + ptrs, mask=kv_mask, other=0.0).to(tl.float32)
        s = tl.sum(k * q[None, :, :], 2)
        if HAS_ALIBI:
            dist = _alibi_term(COORDS, b * T, j, valid, coords_q, offs_l, L, BLOCK_L)
            s -= dist[:, None] * slope[None, :]
        p = tl.where(valid[:, None], tl.exp2(s - lse[None, :]), 0.0)
        dp = tl.sum(v * do[None, :, :], 2)
        ds = p * (dp - delta[None, :])
        dq += tl.sum(ds[:, :, None] * k, 0)
    tl.store(DQ + bt * H * D + hd, (dq * scale).to(DQ.dtype.element_ty), mask=hd_mask)


@triton.jit
def _bwd_dkdv_kernel(Q, K, V, DO, LSE, DELTA, REV_PTR, REV_IDX, COORDS, SLOPES, DK, DV,
                     H, D, L, qk_scale, scale, HAS_ALIBI: tl.constexpr, BLOCK_N: tl.constexpr,
                     BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    n_hblocks = tl.cdiv(H, BLOCK_H)
    key = pid // n_hblocks  # b * T + j
    offs_h = (pid % n_hblocks) * BLOCK_H + tl.arange(0, BLOCK_H)
    hmask = offs_h < H
    offs_d = tl.arange(0, BLOCK_D)
    hd = offs_h[:, None] * D + offs_d[None, :]
    hd_mask = hmask[:, None] & (offs_d < D)[None, :]
    k = tl.load(K + key * H * D + hd, mask=hd_mask, other=0.0).to(tl.float32) * qk_scale
    v = tl.load(V + key * H * D + hd, mask=hd_mask, other=0.0).to(tl.float32)
    first = tl.load(REV_PTR + key)
    last = tl.load(REV_PTR + key + 1)
    offs_l = tl.arange(0, BLOCK_L)
    if HAS_ALIBI:
        coords_k = tl.load(COORDS + key * L + offs_l, mask=offs_l < L, other=0.0)
        slope = tl.load(SLOPES + offs_h, mask=hmask, other=0.0) * 1.4426950408889634
    dk = tl.zeros([BLOCK_H, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_H, BLOCK_D], tl.float32)
    for start in range(first, last, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        valid = offs_n < last
        i = tl.load(REV_IDX + offs_n, mask=valid, other=0).to(tl.int64)  # b * T + i
        ptrs = (i * H * D)[:, None, None] + hd[None, :, :]
        mask = valid[:, None, None] & hd_mask[None, :, :]
        q = tl.load(Q + ptrs, mask=mask, other=0.0).to(tl.float32)
        do = tl.load(DO + ptrs, mask=mask, other=0.0).to(tl.float32)
        stats = i[:, None] * H + offs_h[None, :]
        stats_mask = valid[:, None] & hmask[None, :]
        lse = tl.load(LSE + stats, mask=stats_mask, other=0.0)
        delta = tl.load(DELTA + stats, mask=stats_mask, other=0.0)
        s = tl.sum(q * k[None, :, :], 2)
        if HAS_ALIBI:
            dist = _alibi_term(COORDS, 0, i, valid, coords_k, offs_l, L, BLOCK_L)
            s -= dist[:, None] * slope[None, :]
        p = tl.where(stats_mask, tl.exp2(s - lse), 0.0)
        dv += tl.sum(p[:, :, None] * do, 0)
        dp = tl.sum(do * v[None, :, :], 2)
        ds = p * (dp - delta)
        dk += tl.sum(ds[:, :, None] * q, 0)
    tl.store(DK + key * H * D + hd, (dk * scale).to(DK.dtype.element_ty), mask=hd_mask)
    tl.store(DV + key * H * D + hd, dv.to(DV.dtype.element_ty), mask=hd_mask)


def _meta(q, alibi_coords):
    heads, head_dim = q.shape[2], q.shape[3]
    if q.device.type == "cuda":
        block_h = min(CONFIG["BLOCK_H"], triton.next_power_of_2(heads))
    else:  # the interpreter runs programs one by one: fewer, wider programs
        block_h = triton.next_power_of_2(heads)
    n_landmarks = 1 if alibi_coords is None else alibi_coords.shape[2]
    return {"BLOCK_D": triton.next_power_of_2(head_dim),
            "BLOCK_L": triton.next_power_of_2(n_landmarks), "L": n_landmarks,
            "HAS_ALIBI": alibi_coords is not None, "BLOCK_N": CONFIG["BLOCK_N"],
            "BLOCK_H": block_h, "num_warps": CONFIG["num_warps"]}


def _alibi_args(q, slopes, coords):
    if slopes is None:  # any valid float32 pointer; never read
        dummy = torch.zeros(1, dtype=torch.float32, device=q.device)
        return dummy, dummy
    return slopes.float().contiguous(), coords.float().contiguous()


def attention_forward(q, k, v, layout: GraphLayout, scale: float, slopes=None, coords=None):
    """Forward pass on contiguous inputs: ``(out [B, T, H, d] in q.dtype, lse [B, T, H] f32)``.

    ``lse`` is base 2, in units of ``scale * log2(e)`` scores.
    """
    batch, seq_len, heads, head_dim = q.shape
    slopes_t, coords_t = _alibi_args(q, slopes, coords)
    out = _empty(q.shape, q.dtype, q.device)
    lse = _empty((batch, seq_len, heads), torch.float32, q.device)
    meta = _meta(q, coords)
    _fwd_kernel[(batch * seq_len * triton.cdiv(heads, meta["BLOCK_H"]),)](
        q, k, v, layout.neighbors, layout.counts, coords_t, slopes_t, out, lse, T=seq_len,
        H=heads, D=head_dim, KW=layout.width, qk_scale=scale * LOG2E, **meta)
    return out, lse


def attention_backward(grad_out, q, k, v, out, lse, layout: GraphLayout, scale: float,
                       slopes=None, coords=None, grad_lse=None):
    """dq, dk, dv (in the inputs' dtype) from contiguous tensors and the forward's ``lse``.

    ``grad_lse``: the gradient of the natural log-sum-exp output, if it was used: since
    ``d lse_i / d s_ij = p_ij`` it enters the kernels as ``delta_i - grad_lse_i``.
    """
    batch, seq_len, heads, head_dim = q.shape
    slopes_t, coords_t = _alibi_args(q, slopes, coords)
    delta = (grad_out.float() * out.float()).sum(-1)  # [B, T, H]
    if grad_lse is not None:
        delta = delta - grad_lse.float()
    delta = delta.contiguous()
    dq = _empty(q.shape, q.dtype, q.device)
    dk = _empty(k.shape, k.dtype, k.device)
    dv = _empty(v.shape, v.dtype, v.device)
    meta = _meta(q, coords)
    grid = (batch * seq_len * triton.cdiv(heads, meta["BLOCK_H"]),)
    _bwd_dq_kernel[grid](q, k, v, grad_out, lse, delta, layout.neighbors, layout.counts,
                         coords_t, slopes_t, dq, T=seq_len, H=heads, D=head_dim,
                         KW=layout.width, qk_scale=scale * LOG2E, scale=scale, **meta)
    _bwd_dkdv_kernel[grid](q, k, v, grad_out, lse, delta, layout.rev_ptr, layout.rev_idx,
                           coords_t, slopes_t, dk, dv, H=heads, D=head_dim,
                           qk_scale=scale * LOG2E, scale=scale, **meta)
    return dq, dk, dv


class _TritonGraphAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, layout, scale, slopes, coords):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        out, lse = attention_forward(q, k, v, layout, scale, slopes, coords)
        ctx.save_for_backward(q, k, v, out, lse, slopes, coords)
        ctx.layout, ctx.scale = layout, scale
        return out, lse * LN2  # the kernel's base-2 lse in natural units

    @staticmethod
    def backward(ctx, grad_out, grad_lse):
        q, k, v, out, lse, slopes, coords = ctx.saved_tensors
        dq, dk, dv = attention_backward(grad_out.contiguous(), q, k, v, out, lse, ctx.layout,
                                        ctx.scale, slopes, coords, grad_lse)
        return dq, dk, dv, None, None, None, None


def graph_attention_triton(q, k, v, layout: GraphLayout, scale: float, alibi_slopes=None,
                           alibi_coords=None, return_lse: bool = False):
    """Triton graph attention; arguments already validated. Differentiable in q, k, v (and through the lse)."""
    if layout.device != q.device:
        raise ValueError(f"layout is on {layout.device} but q is on {q.device}")
    out, lse = _TritonGraphAttention.apply(q, k, v, layout, scale, alibi_slopes, alibi_coords)
    return (out, lse) if return_lse else out
