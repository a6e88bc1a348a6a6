"""Triton selective scan: forward and backward as chunked parallel scans.

One program owns ``BLOCK_D`` channels of one batch item and walks the sequence in tiles of
``BLOCK_L`` steps. Inside a tile the recurrence ``h_t = a_t h_{t-1} + b_t`` is a parallel
``tl.associative_scan`` over ``[BLOCK_D, N, BLOCK_L]`` pairs ``(a, b)``; the state carried
between tiles stays in registers. The forward writes the state at every tile start (float32,
``L / BLOCK_L`` of them) so the backward can rebuild each tile's states locally while it walks
the tiles in reverse: an inclusive scan of the previous steps gives ``h_{t-1}`` (so the decay
gradient ``dL/dh_t * a_t * h_{t-1}`` is exact) and a reverse scan gives ``dL/dh_t``. Nothing of size ``[B, D, N, L]`` ever
touches device memory.

Gradients of B and C are summed over a program's channels in registers and over programs by
PyTorch afterwards (deterministic: no atomics). ``BLOCK_D`` divides the channels per group,
so a program reads one group's B and C.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634


def _new_output(shape, dtype, device):
    """Every kernel output comes from here (tests replace it to pre-fill with NaN)."""
    return torch.empty(shape, dtype=dtype, device=device)


@triton.jit
def _pair_forward(a_left, b_left, a_right, b_right):
    # left is the earlier step: h = a_right * (a_left * h0 + b_left) + b_right
    return a_left * a_right, a_right * b_left + b_right


@triton.jit
def _pair_backward(a_later, c_later, a_earlier, c_earlier):
    # a reverse scan hands the later step first: g = c_earlier + a_earlier * (c_later + a_later * g_end)
    return a_later * a_earlier, c_earlier + a_earlier * c_later


@triton.jit
def _softplus(x):
    e = tl.exp(-tl.abs(x))
    log1p_e = tl.where(e < 1e-3, e * (1.0 - 0.5 * e), tl.log(1.0 + e))
    return tl.maximum(x, 0.0) + log1p_e


@triton.jit
def _scan_fwd_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr,
                     out_ptr, ckpt_ptr, last_ptr,
                     dim, length, n_groups, d_state, n_tiles,
                     HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
                     SOFTPLUS: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
                     BLOCK_L: tl.constexpr):
    pid_d = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d = offs_d < dim
    mask_n = offs_n < d_state
    group = (pid_d * BLOCK_D) // (dim // n_groups)
    A2 = tl.load(A_ptr + offs_d[:, None] * d_state + offs_n[None, :],
                 mask=mask_d[:, None] & mask_n[None, :], other=0.0).to(tl.float32) * 1.4426950408889634
    if HAS_D:
        skip = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    row = (pid_b * dim + offs_d) * length  # [BLOCK_D] offsets of each channel's sequence
    bc_row = ((pid_b * n_groups + group) * d_state + offs_n) * length  # [BLOCK_N]
    ckpt_row = ((pid_b * dim + offs_d) * n_tiles) * d_state  # [BLOCK_D]
    h = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    for tile in range(n_tiles):
        offs_l = tile * BLOCK_L + tl.arange(0, BLOCK_L)
        mask_l = offs_l < length
        mask_dl = mask_d[:, None] & mask_l[None, :]
        mask_nl = mask_n[:, None] & mask_l[None, :]
        tl.store(ckpt_ptr + ckpt_row[:, None] + tile * d_state + offs_n[None, :], h,
                 mask=mask_d[:, None] & mask_n[None, :])
        ptr_dl = row[:, None] + offs_l[None, :]
        u = tl.load(u_ptr + ptr_dl, mask=mask_dl, other=0.0).to(tl.float32)
        dt = tl.load(delta_ptr + ptr_dl, mask=mask_dl, other=0.0).to(tl.float32)
        if HAS_BIAS:
            dt += bias[:, None]
        if SOFTPLUS:
            dt = _softplus(dt)
        dt = tl.where(mask_dl, dt, 0.0)
        ptr_nl = bc_row[:, None] + offs_l[None, :]
        Bt = tl.load(B_ptr + ptr_nl, mask=mask_nl, other=0.0).to(tl.float32)
        Ct = tl.load(C_ptr + ptr_nl, mask=mask_nl, other=0.0).to(tl.float32)
        a = tl.exp2(dt[:, None, :] * A2[:, :, None])  # [BLOCK_D, BLOCK_N, BLOCK_L]
        b = (dt * u)[:, None, :] * Bt[None, :, :]
        a_cum, b_cum = tl.associative_scan((a, b), 2, _pair_forward)
        states = a_cum * h[:, :, None] + b_cum
        y = tl.sum(states * Ct[None, :, :], 1)  # [BLOCK_D, BLOCK_L]
        last_col = (tl.arange(0, BLOCK_L) == BLOCK_L - 1)[None, None, :]
        h = tl.sum(tl.where(last_col, states, 0.0), 2)
        if HAS_D:
            y += skip[:, None] * u
        if HAS_Z:
            zt = tl.load(z_ptr + ptr_dl, mask=mask_dl, other=0.0).to(tl.float32)
            y = y * zt / (1.0 + tl.exp(-zt))
        tl.store(out_ptr + ptr_dl, y.to(out_ptr.dtype.element_ty), mask=mask_dl)
    tl.store(last_ptr + ((pid_b * dim + offs_d) * d_state)[:, None] + offs_n[None, :], h,
             mask=mask_d[:, None] & mask_n[None, :])


@triton.jit
def _scan_bwd_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr,
                     ckpt_ptr, dout_ptr, dlast_ptr,
                     du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr,
                     dim, length, n_groups, d_state, n_tiles,
                     HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
                     SOFTPLUS: tl.constexpr, HAS_DLAST: tl.constexpr, BLOCK_D: tl.constexpr,
                     BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr):
    pid_d = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    n_dblocks = tl.num_programs(0)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d = offs_d < dim
    mask_n = offs_n < d_state
    mask_dn = mask_d[:, None] & mask_n[None, :]
    group = (pid_d * BLOCK_D) // (dim // n_groups)
    A = tl.load(A_ptr + offs_d[:, None] * d_state + offs_n[None, :], mask=mask_dn,
                other=0.0).to(tl.float32)
    A2 = A * 1.4426950408889634
    if HAS_D:
        skip = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    row = (pid_b * dim + offs_d) * length
    bc_row = ((pid_b * n_groups + group) * d_state + offs_n) * length
    part_row = ((pid_b * n_dblocks + pid_d) * d_state + offs_n) * length  # dB, dC partials
    ckpt_row = ((pid_b * dim + offs_d) * n_tiles) * d_state
    state_ptrs = ((pid_b * dim + offs_d) * d_state)[:, None] + offs_n[None, :]
    if HAS_DLAST:
        dh = tl.load(dlast_ptr + state_ptrs, mask=mask_dn, other=0.0).to(tl.float32)
    else:
        dh = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    dA_acc = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    dD_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    dbias_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for step in range(n_tiles):
        tile = n_tiles - 1 - step
        offs_l = tile * BLOCK_L + tl.arange(0, BLOCK_L)
        mask_l = offs_l < length
        mask_next = (offs_l + 1) < length
        mask_dl = mask_d[:, None] & mask_l[None, :]
        mask_nl = mask_n[:, None] & mask_l[None, :]
        ptr_dl = row[:, None] + offs_l[None, :]
        ptr_nl = bc_row[:, None] + offs_l[None, :]
        h0 = tl.load(ckpt_ptr + ckpt_row[:, None] + tile * d_state + offs_n[None, :],
                     mask=mask_dn, other=0.0)
        u = tl.load(u_ptr + ptr_dl, mask=mask_dl, other=0.0).to(tl.float32)
        dt_raw = tl.load(delta_ptr + ptr_dl, mask=mask_dl, other=0.0).to(tl.float32)
        # step t-1 inside this tile (the tile's first step sees the identity): its inclusive
        # scan gives h_{t-1} exactly, so the decay gradient needs no h_t - b_t cancellation
        has_prev = (offs_l > tile * BLOCK_L) & mask_l
        mask_prev = mask_d[:, None] & has_prev[None, :]
        u_prev = tl.load(u_ptr + ptr_dl - 1, mask=mask_prev, other=0.0).to(tl.float32)
        dt_prev = tl.load(delta_ptr + ptr_dl - 1, mask=mask_prev, other=0.0).to(tl.float32)
        dt_next = tl.load(delta_ptr + ptr_dl + 1, mask=mask_d[:, None] & mask_next[None, :],
                          other=0.0).to(tl.float32)
        if HAS_BIAS:
            dt_raw += bias[:, None]
            dt_prev += bias[:, None]
            dt_next += bias[:, None]
        if SOFTPLUS:
            dt = _softplus(dt_raw)
            dt_prev = _softplus(dt_prev)
            dt_next = _softplus(dt_next)
        else:
            dt = dt_raw
        dt = tl.where(mask_dl, dt, 0.0)
        dt_prev = tl.where(mask_prev, dt_prev, 0.0)
        Bt = tl.load(B_ptr + ptr_nl, mask=mask_nl, other=0.0).to(tl.float32)
        B_prev = tl.load(B_ptr + ptr_nl - 1, mask=mask_n[:, None] & has_prev[None, :],
                         other=0.0).to(tl.float32)
        Ct = tl.load(C_ptr + ptr_nl, mask=mask_nl, other=0.0).to(tl.float32)
        a_prev = tl.exp2(dt_prev[:, None, :] * A2[:, :, None])
        b_prev = (dt_prev * u_prev)[:, None, :] * B_prev[None, :, :]
        a_cum, b_cum = tl.associative_scan((a_prev, b_prev), 2, _pair_forward)
        prev = a_cum * h0[:, :, None] + b_cum  # h_{t-1}: [BLOCK_D, BLOCK_N, BLOCK_L]
        a = tl.exp2(dt[:, None, :] * A2[:, :, None])
        decayed = a * prev
        states = decayed + (dt * u)[:, None, :] * Bt[None, :, :]  # h_t
        g = tl.load(dout_ptr + ptr_dl, mask=mask_dl, other=0.0).to(tl.float32)
        if HAS_Z:
            zt = tl.load(z_ptr + ptr_dl, mask=mask_dl, other=0.0).to(tl.float32)
            y = tl.sum(states * Ct[None, :, :], 1)
            if HAS_D:
                y += skip[:, None] * u
            sig = 1.0 / (1.0 + tl.exp(-zt))
            dz = g * y * sig * (1.0 + zt * (1.0 - sig))
            tl.store(dz_ptr + ptr_dl, dz.to(dz_ptr.dtype.element_ty), mask=mask_dl)
            g = g * zt * sig
        if HAS_D:
            dD_acc += tl.sum(g * u, 1)
        # dL/dh_t = g_t C_t + a_{t+1} dL/dh_{t+1}; past the end a = 1 carries dlast in
        a_next = tl.where(mask_next[None, None, :], tl.exp2(dt_next[:, None, :] * A2[:, :, None]), 1.0)
        inject = g[:, None, :] * Ct[None, :, :]
        a_rev, c_rev = tl.associative_scan((a_next, inject), 2, _pair_backward, reverse=True)
        dstates = c_rev + a_rev * dh[:, :, None]
        first_col = (tl.arange(0, BLOCK_L) == 0)[None, None, :]
        dh = tl.sum(tl.where(first_col, dstates, 0.0), 2)
        dC_part = tl.sum(g[:, None, :] * states, 0)  # [BLOCK_N, BLOCK_L]
        dB_part = tl.sum(dstates * (dt * u)[:, None, :], 0)
        tl.store(dC_ptr + part_row[:, None] + offs_l[None, :], dC_part, mask=mask_nl)
        tl.store(dB_ptr + part_row[:, None] + offs_l[None, :], dB_part, mask=mask_nl)
        ddu = tl.sum(dstates * Bt[None, :, :], 1)  # dL/d(delta u): [BLOCK_D, BLOCK_L]
        decay_term = dstates * decayed  # dL/d(a_t) * a_t
        decay_term = tl.where(mask_l[None, None, :], decay_term, 0.0)
        ddt = ddu * u + tl.sum(decay_term * A[:, :, None], 1)
        dA_acc += tl.sum(decay_term * dt[:, None, :], 2)
        du = ddu * dt
        if HAS_D:
            du += g * skip[:, None]
        if SOFTPLUS:
            ddt = ddt / (1.0 + tl.exp(-dt_raw))
        ddt = tl.where(mask_dl, ddt, 0.0)
        if HAS_BIAS:
            dbias_acc += tl.sum(ddt, 1)
        tl.store(du_ptr + ptr_dl, du.to(du_ptr.dtype.element_ty), mask=mask_dl)
        tl.store(ddelta_ptr + ptr_dl, ddt.to(ddelta_ptr.dtype.element_ty), mask=mask_dl)
    tl.store(dA_ptr + state_ptrs, dA_acc, mask=mask_dn)
    if HAS_D:
        tl.store(dD_ptr + pid_b * dim + offs_d, dD_acc, mask=mask_d)
    if HAS_BIAS:
        tl.store(dbias_ptr + pid_b * dim + offs_d, dbias_acc, mask=mask_d)


def _block_d(heads: int, cap: int) -> int:
    """Largest power of two <= cap dividing the channels per group (a program stays in one group)."""
    block = 1
    while block * 2 <= cap and heads % (block * 2) == 0:
        block *= 2
    return block


# Tiles chosen by experiments/bench/bench_selective_scan.py's sweep on an H100 (D=1536, L=8192, bf16).
# The backward walks the forward's tiles (its checkpoints), so its block_l is the forward's.
CONFIG = {"fwd": dict(block_d=1, block_l=64, num_warps=4), "bwd": dict(block_d=2, block_l=64, num_warps=4)}
# Triton's interpreter runs programs one after another: fewer, wider programs on CPU tensors.
INTERPRETER_CONFIG = {"fwd": dict(block_d=8, block_l=64, num_warps=4), "bwd": dict(block_d=8, block_l=64, num_warps=4)}


def _config(phase: str, device: torch.device) -> dict:
    return (CONFIG if device.type == "cuda" else INTERPRETER_CONFIG)[phase]


class _SelectiveScanTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state):
        batch, dim, length = u.shape
        d_state = A.shape[1]
        grouped = B.dim() == 4
        groups = B.shape[1] if grouped else 1
        u, delta = u.contiguous(), delta.contiguous()
        A, B, C = A.contiguous(), B.contiguous(), C.contiguous()
        z = z.contiguous() if z is not None else None
        cfg = _config("fwd", u.device)
        block_d = _block_d(dim // groups, cfg["block_d"])
        block_l = min(cfg["block_l"], max(16, triton.next_power_of_2(length)))
        block_n = max(2, triton.next_power_of_2(d_state))
        n_tiles = triton.cdiv(length, block_l)
        out = _new_output(u.shape, u.dtype, u.device)
        ckpt = _new_output((batch, dim, n_tiles, d_state), torch.float32, u.device)
        last = _new_output((batch, dim, d_state), torch.float32, u.device)
        dummy = u
        grid = (triton.cdiv(dim, block_d), batch)
        _scan_fwd_kernel[grid](
            u, delta, A, B, C, D if D is not None else dummy, z if z is not None else dummy,
            delta_bias if delta_bias is not None else dummy, out, ckpt, last,
            dim, length, groups, d_state, n_tiles,
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
            SOFTPLUS=bool(delta_softplus), BLOCK_D=block_d, BLOCK_N=block_n, BLOCK_L=block_l,
            num_warps=cfg["num_warps"])
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, ckpt)
        ctx.meta = (delta_softplus, grouped, groups, block_l, n_tiles)
        ctx.set_materialize_grads(False)
        return out, last

    @staticmethod
    def backward(ctx, dout, dlast):
        u, delta, A, B, C, D, z, delta_bias, ckpt = ctx.saved_tensors
        delta_softplus, grouped, groups, block_l, n_tiles = ctx.meta
        batch, dim, length = u.shape
        d_state = A.shape[1]
        cfg = _config("bwd", u.device)
        block_d = _block_d(dim // groups, cfg["block_d"])
        block_n = max(2, triton.next_power_of_2(d_state))
        n_dblocks = triton.cdiv(dim, block_d)
        dev = u.device
        dout = dout.contiguous() if dout is not None else torch.zeros_like(u)
        du = _new_output(u.shape, u.dtype, dev)
        ddelta = _new_output(delta.shape, delta.dtype, dev)
        dz = _new_output(z.shape, z.dtype, dev) if z is not None else None
        dA = _new_output((batch, dim, d_state), torch.float32, dev)
        dB = _new_output((batch, n_dblocks, d_state, length), torch.float32, dev)
        dC = _new_output((batch, n_dblocks, d_state, length), torch.float32, dev)
        dD = _new_output((batch, dim), torch.float32, dev) if D is not None else None
        dbias = _new_output((batch, dim), torch.float32, dev) if delta_bias is not None else None
        dummy = u
        _scan_bwd_kernel[(n_dblocks, batch)](
            u, delta, A, B, C, D if D is not None else dummy, z if z is not None else dummy,
            delta_bias if delta_bias is not None else dummy, ckpt, dout,
            dlast.contiguous() if dlast is not None else dummy,
            du, ddelta, dz if dz is not None else dummy, dA, dB, dC,
            dD if dD is not None else dummy, dbias if dbias is not None else dummy,
            dim, length, groups, d_state, n_tiles,
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
            SOFTPLUS=bool(delta_softplus), HAS_DLAST=dlast is not None, BLOCK_D=block_d,
            BLOCK_N=block_n, BLOCK_L=block_l, num_warps=cfg["num_warps"])
        dB = dB.reshape(batch, groups, n_dblocks // groups, d_state, length).sum(2)
        dC = dC.reshape(batch, groups, n_dblocks // groups, d_state, length).sum(2)
        if not grouped:
            dB, dC = dB[:, 0], dC[:, 0]
        return (du, ddelta, dA.sum(0).to(A.dtype), dB.to(B.dtype), dC.to(C.dtype),
                dD.sum(0).to(D.dtype) if D is not None else None, dz,
                dbias.sum(0).to(delta_bias.dtype) if delta_bias is not None else None, None, None)


def selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                          delta_softplus=False, return_last_state=False):
    """The Triton selective scan; same signature and results as ``selective_scan_ref``.

    Inputs are assumed validated (``selective_scan`` does it). Computes in float32 and
    stores ``out`` and the gradients of u, delta, z in their input dtypes.
    """
    out, last = _SelectiveScanTriton.apply(u, delta, A, B, C, D, z, delta_bias,
                                           delta_softplus, return_last_state)
    return (out, last) if return_last_state else out
