"""A log-depth prefix scan of the diagonal linear recurrence ``h_t = a_t * h_{t-1} + b_t``.

The recurrence of every state-space mixer whose transition is diagonal (real or complex) and may
change with the token (OSSM's oscillators, CfC's linear-in-state LTC variant). Pairs ``(a, b)``
compose associatively, ``(a1, b1) then (a2, b2) = (a1 a2, a2 b1 + b2)``, so the prefix over ``T``
steps takes ``ceil(log2 T)`` rounds of elementwise work (Hillis–Steele: round ``k`` combines each
position with the one ``2^k`` earlier); work ``O(T log T)``, all vectorised.

The gradient is the same recurrence run backwards (an adjoint scan, not autograd through the
rounds, which would keep every round's tensors): with ``g_t = dL/dh_t`` accumulated,
``g_t = grad_t + conj(a_{t+1}) g_{t+1}``, ``dL/db_t = g_t``, ``dL/da_t = g_t conj(h_{t-1})``
(PyTorch's convention for complex gradients). Memory: ``a``, ``h`` and ``h0`` are kept.
:func:`sequential_scan` is the plain loop beside it, the reference the tests compare against.

Example:
    >>> a, b = torch.rand(2, 7, 3), torch.randn(2, 7, 3)
    >>> torch.allclose(diagonal_scan(a, b), sequential_scan(a, b), atol=1e-6)
    True
"""
from __future__ import annotations

from typing import Optional

import torch


def _prefix_scan(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """States of ``h_t = a_t h_{t-1} + b_t`` from ``h_{-1} = 0`` along dim 1 (Hillis–Steele rounds, no autograd)."""
    a, b = a.clone(), b.clone()
    T, offset = a.shape[1], 1
    while offset < T:
        b[:, offset:] += a[:, offset:] * b[:, :-offset]  # the product is formed before b is written
        a[:, offset:] = a[:, offset:] * a[:, :-offset]
        offset *= 2
    return b


class _DiagonalScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, h0):
        if h0 is not None:
            b = torch.cat([b[:, :1] + a[:, :1] * h0[:, None], b[:, 1:]], dim=1)
        h = _prefix_scan(a, b)
        ctx.save_for_backward(a, h, h0)
        return h

    @staticmethod
    def backward(ctx, grad_h):
        a, h, h0 = ctx.saved_tensors
        later = torch.cat([a[:, 1:], torch.zeros_like(a[:, :1])], dim=1).conj()  # a_{t+1}, 0 past the end
        grad_b = _prefix_scan(later.flip(1), grad_h.flip(1)).flip(1)  # g_t = grad_t + conj(a_{t+1}) g_{t+1}
        start = torch.zeros_like(h[:, :1]) if h0 is None else h0[:, None].to(h.dtype)
        grad_a = grad_b * torch.cat([start, h[:, :-1]], dim=1).conj()
        grad_h0 = None if h0 is None else grad_b[:, 0] * a[:, 0].conj()
        return grad_a, grad_b, grad_h0


def diagonal_scan(a: torch.Tensor, b: torch.Tensor, h0: Optional[torch.Tensor] = None) -> torch.Tensor:
    """All states of ``h_t = a_t * h_{t-1} + b_t`` (``h_{-1} = h0``, zeros when None), by a log-depth scan.

    Args:
        a: ``[B, T, ...]`` transitions (real or complex), time on dim 1.
        b: ``[B, T, ...]`` inputs, the same shape and dtype.
        h0: ``[B, ...]`` initial state, or None for zeros.

    Returns:
        ``h [B, T, ...]``; differentiable in ``a``, ``b`` and ``h0`` (by the adjoint scan).
    """
    if a.shape != b.shape or a.dtype != b.dtype:
        raise ValueError(f"a and b must have one shape and dtype, got {tuple(a.shape)} {a.dtype} and "
                         f"{tuple(b.shape)} {b.dtype}")
    if h0 is not None and (h0.shape != b.shape[:1] + b.shape[2:]):
        raise ValueError(f"h0 must be [B, ...] = {tuple(b.shape[:1] + b.shape[2:])}, got {tuple(h0.shape)}")
    return _DiagonalScan.apply(a, b, None if h0 is None else h0.to(b.dtype))


def sequential_scan(a: torch.Tensor, b: torch.Tensor, h0: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The same states as :func:`diagonal_scan` by the plain loop over time (the reference): ``[B, T, ...]``."""
    h = torch.zeros_like(b[:, 0]) if h0 is None else h0.to(b.dtype)
    states = []
    for t in range(a.shape[1]):
        h = a[:, t] * h + b[:, t]
        states.append(h)
    return torch.stack(states, dim=1)
