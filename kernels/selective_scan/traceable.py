"""The selective scan as one ``torch.ops.higher_order.scan``: traceable at any length, for export.

:func:`selective_scan_ref` runs the recurrence as a Python loop, which ``torch.export`` would
unroll into a graph of one fixed length. Here the same recurrence (the same ``_prepare`` and
``_finish`` in float32) is a single scan over the length axis, so an exported program (and its
ONNX ``Scan``) takes any length and any batch. ``selective_scan`` dispatches here while
``torch.compiler.is_exporting()``; it is tested equal to the reference at odd lengths.
"""
from __future__ import annotations

import torch
from torch._higher_order_ops.scan import scan

from .reference import _finish, _prepare, check_scan_args


def _combine(h: torch.Tensor, xs):
    """One step: ``h [B, D, N]``, slices ``decay, drive [B, D, N]``, ``C [B, 1 or D, N]`` -> (h, y [B, D])."""
    decay_t, drive_t, C_t = xs
    h = decay_t * h + drive_t
    return h, (h * C_t).sum(-1)  # not einsum: its decomposition does not survive symbolic batch sizes


def selective_scan_traceable(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                             delta_softplus=False, return_last_state=False):
    """:func:`~.reference.selective_scan_ref`'s arguments and numbers (float32 inside), with no Python loop.

    Example:
        >>> u = torch.randn(1, 4, 7); A = -torch.rand(4, 3)
        >>> selective_scan_traceable(u, torch.rand(1, 4, 7), A, torch.randn(1, 3, 7), torch.randn(1, 3, 7)).shape
        torch.Size([1, 4, 7])
    """
    check_scan_args(u, delta, A, B, C, D, z, delta_bias)
    out_dtype = u.dtype
    u32, decay, drive, Cd = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)  # [B, D, N, L] ...
    h0 = torch.zeros_like(drive[..., 0])  # [B, D, N]
    h, ys = scan(_combine, h0, (decay.permute(3, 0, 1, 2), drive.permute(3, 0, 1, 2), Cd.permute(3, 0, 1, 2)))
    out = _finish(ys.permute(1, 2, 0), u32, D, z, out_dtype)  # ys [L, B, D] -> [B, D, L]
    return (out, h) if return_last_state else out
