"""Pure-PyTorch selective scan (Mamba-1): the sequential ground truth and a vectorised CPU path.

Both functions take mamba_ssm's arguments in mamba_ssm's order and compute, for every
batch item b, channel d and state n (the state index is dropped below)::

    delta = softplus(delta + delta_bias) if delta_softplus else delta + delta_bias
    h_t   = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t        h_{-1} = 0
    y_t   = sum_n C_t * h_t + D * u_t
    out   = y * silu(z)  if z is given

:func:`selective_scan_ref` runs the recurrence one step at a time in float32 (the
ground truth every kernel is tested against; it casts the output back to ``u.dtype``).
:func:`selective_scan_vectorized` gives the same numbers to float32 rounding with every
operation but one fused multiply-add per step done on whole tensors, and a written-out
backward; it is what ``selective_scan`` runs on CPU tensors. Both are differentiable.
:func:`selective_state_update` is one step of the recurrence, for O(1)-per-token generation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def check_scan_args(u, delta, A, B, C, D=None, z=None, delta_bias=None):
    """Validate shapes and dtypes; returns ``(batch, dim, length, d_state, groups)``.

    Raises ``ValueError``/``TypeError`` naming the argument, its value and the accepted range.
    """
    for name, t in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.is_complex():  # before the floating-point check, which a complex dtype also fails
            raise TypeError(f"{name} must be real: complex {name} ({str(t.dtype).replace('torch.', '')}) is not "
                            "supported (mamba_ssm's complex-A variant); accepted: float16, bfloat16, float32, float64")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if u.dim() != 3:
        raise ValueError(f"u must be [batch, dim, length], got shape {tuple(u.shape)}")
    batch, dim, length = u.shape
    if length < 1 or dim < 1 or batch < 1:
        raise ValueError(f"u must have batch, dim, length >= 1, got shape {tuple(u.shape)}")
    if delta.shape != u.shape:
        raise ValueError(f"delta must have u's shape {tuple(u.shape)}, got {tuple(delta.shape)}")
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f"A must be [dim={dim}, d_state], got shape {tuple(A.shape)}")
    d_state = A.shape[1]
    groups = None
    for name, t in (("B", B), ("C", C)):
        if t.dim() == 3 and t.shape == (batch, d_state, length):
            g = 1
        elif t.dim() == 4 and t.shape[0] == batch and t.shape[2:] == (d_state, length):
            g = t.shape[1]
            if g < 1 or dim % g != 0:
                raise ValueError(f"{name} has {g} groups; the group count must divide dim={dim}")
        else:
            raise ValueError(f"{name} must be [batch={batch}, d_state={d_state}, length={length}] or "
                             f"grouped [batch, groups, {d_state}, {length}], got {tuple(t.shape)}")
        if groups is not None and g != groups:
            raise ValueError(f"B and C must have the same number of groups, got {groups} and {g}")
        groups = g
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None:
            if not isinstance(t, torch.Tensor) or not t.is_floating_point():
                raise TypeError(f"{name} must be a floating-point tensor or None")
            if t.shape != (dim,):
                raise ValueError(f"{name} must be [dim={dim}], got shape {tuple(t.shape)}")
    if z is not None:
        if not isinstance(z, torch.Tensor) or not z.is_floating_point():
            raise TypeError("z must be a floating-point tensor or None")
        if z.shape != u.shape:
            raise ValueError(f"z must have u's shape {tuple(u.shape)}, got {tuple(z.shape)}")
    devices = {t.device for t in (u, delta, A, B, C, D, z, delta_bias) if t is not None}
    if len(devices) != 1:
        raise ValueError(f"all tensors must be on one device, got {sorted(map(str, devices))}")
    return batch, dim, length, d_state, groups


def _per_channel(BC: torch.Tensor, dim: int) -> torch.Tensor:
    """[B, N, L] -> [B, 1, N, L]; grouped [B, G, N, L] -> [B, dim, N, L] (group g owns a run of channels)."""
    if BC.dim() == 3:
        return BC.unsqueeze(1)
    return BC.repeat_interleave(dim // BC.shape[1], dim=1)


def _prepare(u, delta, A, B, C, delta_bias, delta_softplus):
    dim = u.shape[1]
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    u = u.float()
    Bd = _per_channel(B.float(), dim)  # [B, 1 or dim, N, L]
    Cd = _per_channel(C.float(), dim)
    decay = torch.exp(delta.unsqueeze(2) * A.float()[None, :, :, None])  # [B, dim, N, L]
    drive = (delta * u).unsqueeze(2) * Bd  # [B, dim, N, L]
    return u, decay, drive, Cd


def _finish(y, u, D, z, out_dtype):
    if D is not None:
        y = y + D.float()[:, None] * u
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(out_dtype)


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                       delta_softplus=False, return_last_state=False):
    """Sequential selective scan in float32: the ground truth.

    Args:
        u: ``[B, D, L]`` input.
        delta: ``[B, D, L]`` step sizes (before ``delta_bias`` and softplus).
        A: ``[D, N]`` real state matrix (diagonal per channel; negative for a stable scan).
        B, C: ``[B, N, L]``, or grouped ``[B, G, N, L]`` with G dividing D.
        D: ``[D]`` skip weight, default None.
        z: ``[B, D, L]`` gate, default None: ``out = y * silu(z)``.
        delta_bias: ``[D]``, default None.
        delta_softplus: apply softplus to ``delta + delta_bias``, default False.
        return_last_state: also return the final state ``[B, D, N]`` (float32).

    Returns:
        ``out [B, D, L]`` in ``u.dtype`` (and ``last_state [B, D, N]`` float32).

    Example:
        >>> u = torch.randn(1, 4, 7); A = -torch.rand(4, 3)
        >>> selective_scan_ref(u, torch.rand(1, 4, 7), A, torch.randn(1, 3, 7), torch.randn(1, 3, 7)).shape
        torch.Size([1, 4, 7])
    """
    check_scan_args(u, delta, A, B, C, D, z, delta_bias)
    out_dtype = u.dtype
    u32, decay, drive, Cd = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    h = u32.new_zeros(decay.shape[:3])  # [B, D, N]
    ys = []
    for decay_t, drive_t, C_t in zip(decay.unbind(-1), drive.unbind(-1), Cd.unbind(-1)):
        h = decay_t * h + drive_t
        ys.append((h * C_t).sum(-1))  # [B, D]
    y = torch.stack(ys, dim=-1)
    out = _finish(y, u32, D, z, out_dtype)
    return (out, h) if return_last_state else out


CHUNK_ELEMENTS = 3 << 16  # state elements per time chunk (768 KiB in float32): the backward's four
# chunk buffers (decay, states, state gradient, product) stay in a 2-4 MiB L2 cache


EXP_FLOOR = -87.0  # exp(-87) = 1.6e-38: just above float32's smallest normal number (1.2e-38)


def _decay(delta: torch.Tensor, A: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``exp(delta A)`` into ``out`` ``[c, B, G, N, H]``; exponents floored at ``EXP_FLOOR``.

    Below the floor exp() lands on subnormals, which CPUs evaluate tens of times slower; the
    floor changes a decay by less than 2e-38 (absolute), far below float32 rounding of any
    state it multiplies.
    """
    return torch.mul(delta[:, :, :, None, :], A, out=out).clamp_min_(EXP_FLOOR).exp_()


def _chunk_steps(slab: int) -> int:
    """Time steps per chunk for a ``[B, G, H, N]`` slab of ``slab`` elements (at least one)."""
    return max(1, CHUNK_ELEMENTS // max(1, slab))


def _chunk_states(delta, du, A, B, start, t0, t1, decay_out, h_out):
    """Decays and states of steps ``t0..t1-1`` into the chunk buffers, from the state before ``t0``.

    ``start`` is ``h_{t0-1}`` ``[B, G, N, H]`` (None at ``t0 = 0``). Returns ``(decay, h)`` ``[c, B, G, N, H]``.
    """
    c = t1 - t0
    decay = _decay(delta[t0:t1], A, decay_out[:c])
    h = torch.mul(du[t0:t1], B[t0:t1, ..., None], out=h_out[:c])  # drive
    if start is not None:
        h[0].addcmul_(decay[0], start)
    for i in range(1, c):
        h[i].addcmul_(decay[i], h[i - 1])
    return decay, h


class _ScanCore(torch.autograd.Function):
    """y[b, d, t] = sum_n C h, with h the recurrence above; float32, time-major ``[L, B, G, N, H]``.

    The channel axis H is innermost, so every broadcast (Δ·A, Δu·B, ∂y·C) runs along
    contiguous rows of H and every sum over the state index N is a batched ``[N] x [N, H]``
    product. Both passes walk time in chunks of a few steps whose ``[chunk, B, G, N, H]``
    buffers (decay, states, state gradient, one product) are allocated once per call and stay
    in cache. Nothing of size ``[L, B, G, N, H]`` is ever written: the forward keeps only the
    state at the end of each chunk, and the backward recomputes a chunk's decays and states
    from the previous chunk's end state (the same operations in the same order, so the same
    numbers) just before it needs them. Writing the states and decays to memory in the
    forward and reading them back costs more than recomputing them in cache (B12 D256 N16
    L64 fwd+bwd: 22.9 -> 16.2 ms CPU time). Per step the recurrence is one in-place fused
    multiply-add.
    """

    @staticmethod
    def forward(ctx, delta, u, A, B, C):
        # delta, u: [L, B, G, H]; A: [G, N, H]; B, C: [L, B, G, N]
        L, nb, G, H = delta.shape
        N = A.shape[1]
        step = min(L, _chunk_steps(nb * G * H * N))
        du = (delta * u)[:, :, :, None, :]  # [L, B, G, 1, H]
        y = delta.new_empty(L, nb, G, H)
        ends = delta.new_empty(-(-L // step), nb, G, N, H)  # state at the end of each chunk
        decay_buf, h_buf = (delta.new_empty(step, nb, G, N, H) for _ in range(2))  # reused: no page faults
        for k, t0 in enumerate(range(0, L, step)):
            t1 = min(L, t0 + step)
            _, h = _chunk_states(delta, du, A, B, ends[k - 1] if k else None, t0, t1, decay_buf, h_buf)
            torch.bmm(C[t0:t1].reshape(-1, 1, N), h.view(-1, N, H), out=y[t0:t1].view(-1, 1, H))
            ends[k].copy_(h[-1])
        ctx.save_for_backward(delta, u, A, B, C, ends)
        ctx.step = step
        return y, ends[-1].clone()

    @staticmethod
    def backward(ctx, grad_y, grad_last):
        delta, u, A, B, C, ends = ctx.saved_tensors
        step = ctx.step
        L, nb, G, H = delta.shape
        N = A.shape[1]
        du = delta * u
        du5 = du[:, :, :, None, :]
        grad_y = grad_y.contiguous()
        gy5 = grad_y[:, :, :, None, :]
        grad_delta, grad_du = torch.empty_like(delta), torch.empty_like(delta)
        grad_B, grad_C = torch.empty_like(B), torch.empty_like(C)
        grad_A = torch.zeros_like(A)
        decay_buf, h_buf, g_buf, tmp_buf = (delta.new_empty(step, nb, G, N, H) for _ in range(4))  # reused
        g_next, decay_next = (delta.new_empty(nb, G, N, H) for _ in range(2))  # carried from the later chunk
        for k in range(len(ends) - 1, -1, -1):
            t0 = k * step
            t1 = min(L, t0 + step)
            start = ends[k - 1] if k else None
            decay, h = _chunk_states(delta, du5, A, B, start, t0, t1, decay_buf, h_buf)
            g = torch.mul(gy5[t0:t1], C[t0:t1, ..., None], out=g_buf[:t1 - t0])  # dy/dh_t
            if t1 == L and grad_last is not None:
                g[-1] += grad_last
            if t1 < L:
                g[-1].addcmul_(decay_next, g_next)
            for i in range(t1 - t0 - 2, -1, -1):
                g[i].addcmul_(decay[i + 1], g[i + 1])  # total d loss / d h_t
            g_next.copy_(g[0])
            decay_next.copy_(decay[0])
            tmp = tmp_buf[:t1 - t0]  # sums over H: multiply, then reduce the contiguous rows (a bmm
            torch.sum(torch.mul(h, gy5[t0:t1], out=tmp), 4, out=grad_C[t0:t1])  # matvec of this
            torch.sum(torch.mul(g, du5[t0:t1], out=tmp), 4, out=grad_B[t0:t1])  # shape is slower)
            torch.bmm(B[t0:t1].reshape(-1, 1, N), g.view(-1, N, H), out=grad_du[t0:t1].view(-1, 1, H))
            term = g.mul_(decay)  # d loss / d (delta A) = g_t * decay_t * h_{t-1}; g is done
            term[1:].mul_(h[:-1])
            if start is None:
                term[0].zero_()
            else:
                term[0].mul_(start)
            torch.sum(torch.mul(term, A, out=tmp), 3, out=grad_delta[t0:t1])
            grad_A += term.mul_(delta[t0:t1, :, :, None, :]).sum((0, 1))
        grad_delta.addcmul_(grad_du, u)
        return grad_delta, grad_du.mul_(delta), grad_A, grad_B, grad_C


def selective_scan_vectorized(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                              delta_softplus=False, return_last_state=False):
    """Same signature and numbers as :func:`selective_scan_ref` (to float32 rounding), for CPU.

    Time is walked in cache-sized chunks (``CHUNK_ELEMENTS``): within a chunk everything but
    the recurrence runs as whole-chunk operations and batched matmuls; the recurrence is one
    in-place fused multiply-add per step; the backward is written out (a reverse recurrence
    plus the same chunked products, over states recomputed chunk by chunk) instead of traced
    step by step. Memory: one ``[B, D, N]`` state per chunk plus the chunk buffers; nothing
    of the states' full size ``[B, D, N, L]``.
    """
    batch, dim, length, d_state, groups = check_scan_args(u, delta, A, B, C, D, z, delta_bias)
    heads = dim // groups

    def time_major(t):  # [B, D, L] -> contiguous float32 [L, B, G, H]
        return t.permute(2, 0, 1).float().contiguous().view(length, batch, groups, heads)

    def time_major_bc(t):  # [B, (G,) N, L] -> [L, B, G, N]
        return t.float().reshape(batch, groups, d_state, length).permute(3, 0, 1, 2).contiguous()

    # Every elementwise step runs on contiguous time-major tensors: the model's [B, D, L] inputs
    # are transposed views of [B, L, D] memory, on which strided elementwise kernels (and their
    # backwards) are several times slower. Same operations, same order as selective_scan_ref.
    u32 = time_major(u)
    delta32 = time_major(delta)
    if delta_bias is not None:
        delta32 = delta32 + delta_bias.float().view(groups, heads)
    if delta_softplus:
        delta32 = F.softplus(delta32)
    y, last = _ScanCore.apply(delta32, u32, A.float().reshape(groups, heads, d_state).transpose(1, 2).contiguous(),
                              time_major_bc(B), time_major_bc(C))  # [L, B, G, H]
    if D is not None:
        y = y + D.float().view(groups, heads) * u32
    if z is not None:
        y = y * F.silu(time_major(z))
    out = y.view(length, batch, dim).permute(1, 2, 0).to(u.dtype)  # [B, D, L] view of [L, B, D] memory
    return (out, last.transpose(-1, -2).reshape(batch, dim, d_state)) if return_last_state else out


def selective_state_update(state, u, delta, A, B, C, D=None, z=None, delta_bias=None,
                           delta_softplus=False):
    """One step of the selective scan, for generation: O(1) per token.

    Does not modify ``state``; returns the new one. Stepping it over t = 0..L-1 from a zero
    state reproduces ``selective_scan(..., return_last_state=True)`` at every position.

    Args:
        state: ``[B, D, N]`` state before this token (float32 recommended).
        u, delta, z: ``[B, D]`` this token's input, step size and optional gate.
        A: ``[D, N]``. B, C: ``[B, N]`` or grouped ``[B, G, N]``.
        D, delta_bias: ``[D]`` or None. delta_softplus: as in the full scan.

    Returns:
        ``(out [B, D] in u.dtype, new_state [B, D, N] in state.dtype)``.

    Example:
        >>> s = torch.zeros(1, 4, 3); A = -torch.rand(4, 3)
        >>> out, s = selective_state_update(s, torch.randn(1, 4), torch.rand(1, 4), A,
        ...                                 torch.randn(1, 3), torch.randn(1, 3))
    """
    if not isinstance(state, torch.Tensor) or state.dim() != 3:
        raise ValueError(f"state must be a [batch, dim, d_state] tensor, got "
                         f"{tuple(state.shape) if isinstance(state, torch.Tensor) else type(state).__name__}")
    for name, t in (("u", u), ("delta", delta), ("z", z)):
        if t is not None and (not isinstance(t, torch.Tensor) or t.shape != state.shape[:2]):
            raise ValueError(f"{name} must be [batch, dim] = {tuple(state.shape[:2])}, got "
                             f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
    as_seq = lambda t: None if t is None else t.unsqueeze(-1)  # noqa: E731  [..] -> [.., L=1]
    check_scan_args(as_seq(u), as_seq(delta), A, as_seq(B), as_seq(C), D, as_seq(z), delta_bias)
    dim = u.shape[1]
    dt = delta.float()
    if delta_bias is not None:
        dt = dt + delta_bias.float()
    if delta_softplus:
        dt = F.softplus(dt)
    Bd = _per_channel(B.float().unsqueeze(-1), dim)[..., 0]  # [B, 1 or dim, N]
    Cd = _per_channel(C.float().unsqueeze(-1), dim)[..., 0]
    decay = torch.exp(dt.unsqueeze(-1) * A.float())  # [B, dim, N]
    h = decay * state.float() + (dt * u.float()).unsqueeze(-1) * Bd
    y = (h * Cd).sum(-1)
    out = _finish(y[..., None], u.float()[..., None], D, as_seq(z), u.dtype)[..., 0]
    return out, h.to(state.dtype)
