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
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if A.is_complex():
        raise TypeError("A must be real; complex A is not supported")
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


def _recurrence(decay: torch.Tensor, drive: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """All h_t = decay_t * h_{t-1} + drive_t over dim 0 (h before the first step = 0).

    One fused multiply-add per step on a contiguous ``[B, D, N]`` slab that stays in cache;
    ``reverse`` runs from the last step to the first.
    """
    out = torch.empty_like(drive)
    order = range(drive.shape[0] - 1, -1, -1) if reverse else range(drive.shape[0])
    h = torch.zeros_like(drive[0])
    for t in order:
        h = torch.addcmul(drive[t], decay[t], h, out=out[t])
    return out


class _ScanCore(torch.autograd.Function):
    """y[b, d, t] = sum_n C h, with h the recurrence above; float32, time-major ``[L, B, G, H, N]``."""

    @staticmethod
    def forward(ctx, delta, u, A, B, C):
        # delta, u: [L, B, G, H]; A: [G, H, N]; B, C: [L, B, G, N]
        decay = torch.exp(delta[..., None] * A)  # [L, B, G, H, N]
        drive = (delta * u)[..., None] * B[:, :, :, None, :]
        states = _recurrence(decay, drive)
        y = torch.einsum("lbghn,lbgn->lbgh", states, C)
        ctx.save_for_backward(delta, u, A, B, C, states)
        return y, states[-1]

    @staticmethod
    def backward(ctx, grad_y, grad_last):
        delta, u, A, B, C, states = ctx.saved_tensors
        decay = torch.exp(delta[..., None] * A)
        inject = grad_y[..., None] * C[:, :, :, None, :]  # dy/dh_t contribution
        if grad_last is not None:
            inject[-1] += grad_last
        next_decay = torch.cat([decay[1:], torch.zeros_like(decay[:1])])
        grad_h = _recurrence(next_decay, inject, reverse=True)  # total d loss / d h_t
        prev = torch.cat([torch.zeros_like(states[:1]), states[:-1]])
        grad_decay_term = grad_h * prev * decay  # d loss / d (delta A) per element
        grad_C = torch.einsum("lbgh,lbghn->lbgn", grad_y, states)
        grad_B = torch.einsum("lbghn,lbgh->lbgn", grad_h, delta * u)
        grad_du = torch.einsum("lbghn,lbgn->lbgh", grad_h, B)  # d loss / d (delta u)
        grad_delta = grad_du * u + torch.einsum("lbghn,ghn->lbgh", grad_decay_term, A)
        grad_u = grad_du * delta
        grad_A = torch.einsum("lbghn,lbgh->ghn", grad_decay_term, delta)
        return grad_delta, grad_u, grad_A, grad_B, grad_C


def selective_scan_vectorized(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                              delta_softplus=False, return_last_state=False):
    """Same signature and numbers as :func:`selective_scan_ref` (to float32 rounding), for CPU.

    Everything but the recurrence itself runs as whole-tensor operations; the recurrence is
    one fused multiply-add per step on a cache-sized ``[B, D, N]`` slab, and the backward is
    written out (a reverse recurrence plus whole-tensor products) instead of traced step by
    step. Memory: a few ``[B, D, N, L]`` float32 tensors.
    """
    batch, dim, length, d_state, groups = check_scan_args(u, delta, A, B, C, D, z, delta_bias)
    out_dtype = u.dtype
    delta32 = delta.float()
    if delta_bias is not None:
        delta32 = delta32 + delta_bias.float()[:, None]
    if delta_softplus:
        delta32 = F.softplus(delta32)
    u32 = u.float()
    heads = dim // groups

    def time_major(t):  # [B, D, L] -> [L, B, G, H]
        return t.permute(2, 0, 1).reshape(length, batch, groups, heads)

    def time_major_bc(t):  # [B, (G,) N, L] -> [L, B, G, N]
        return t.float().reshape(batch, groups, d_state, length).permute(3, 0, 1, 2)

    y, last = _ScanCore.apply(time_major(delta32).contiguous(), time_major(u32).contiguous(),
                              A.float().reshape(groups, heads, d_state),
                              time_major_bc(B).contiguous(), time_major_bc(C).contiguous())
    y = y.reshape(length, batch, dim).permute(1, 2, 0)
    out = _finish(y, u32, D, z, out_dtype)
    return (out, last.reshape(batch, dim, d_state)) if return_last_state else out


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
