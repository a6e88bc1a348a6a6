"""Mamba's causal depthwise convolution, optionally followed by SiLU: one dispatching entry point.

For ``x [B, T, E]`` (the in-projection's layout; channels may be a strided half of a wider
tensor), taps ``weight [E, K]`` and ``bias [E]``::

    c[b, t, e] = bias[e] + sum_k weight[e, k] * x[b, t - (K - 1) + k, e]     (x = 0 before t = 0)
    out = silu(c) if activation == "silu" else c

which is ``nn.Conv1d(E, E, K, groups=E, padding=K - 1)`` on ``x.transpose(1, 2)`` cut to the
first T outputs. Paths: :func:`causal_conv1d_ref` (that ``F.conv1d``: the oracle, and cuDNN on
GPUs), :func:`causal_conv1d_vectorized` (K shifted multiply-adds along contiguous rows in
``[B, T, E]``, no transposes), and on CPU float32 tensors the native C loop of the selective
scan's library (:func:`~.native_cpu.causal_conv1d_native`: one pass per direction with SiLU
fused, its backward recomputing the pre-activation). All are differentiable in x, weight, bias.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .._backend import BACKENDS, forced_backend
from . import native_cpu

ACTIVATIONS = (None, "silu")


def check_conv_args(x, weight, bias, activation) -> None:
    """TypeError / ValueError naming the argument for wrong types, shapes, dtypes or devices."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor [B, T, E], got {getattr(x, 'dtype', type(x).__name__)}")
    if x.dim() != 3:
        raise ValueError(f"x must be [B, T, E], got shape {tuple(x.shape)}")
    E = x.shape[2]
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or weight.shape[0] != E or weight.shape[1] < 1:
        raise ValueError(f"weight must be [E={E}, K >= 1], got {tuple(getattr(weight, 'shape', ()))}")
    if bias is not None and (not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (E,)):
        raise ValueError(f"bias must be [E={E}] or None, got {tuple(getattr(bias, 'shape', ()))}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but x is on {x.device}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


def causal_conv1d_ref(x, weight, bias=None, activation: Optional[str] = None):
    """The oracle: ``F.conv1d`` (depthwise, left padding K - 1) on ``x.transpose(1, 2)``; ``[B, T, E]``."""
    T, K = x.shape[1], weight.shape[1]
    out = F.conv1d(x.transpose(1, 2), weight[:, None, :].to(x.dtype), None if bias is None else bias.to(x.dtype),
                   padding=K - 1, groups=x.shape[2])[..., :T].transpose(1, 2)
    return F.silu(out) if activation == "silu" else out


class _ShiftedConv(torch.autograd.Function):
    """K shifted multiply-adds in ``[B, T, E]`` with the taps as contiguous ``[K, E]`` rows
    (a strided ``[E]`` column broadcast runs ~4x slower per multiply-add on CPU)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        T, K = x.shape[1], weight.shape[1]
        taps = weight.to(x.dtype).t().contiguous()  # [K, E]
        out = torch.addcmul(bias.to(x.dtype), x, taps[K - 1])  # [B, T, E] in x.dtype
        for k in range(K - 1):
            shift = K - 1 - k
            if shift < T:
                out[:, shift:].addcmul_(x[:, :T - shift], taps[k])
        ctx.save_for_backward(x, taps)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, taps = ctx.saved_tensors
        T, K = x.shape[1], taps.shape[0]
        grad_x = grad * taps[K - 1]
        grad_taps = torch.zeros_like(taps)  # [K, E]
        grad_taps[K - 1] = (grad * x).sum((0, 1))
        for k in range(K - 1):
            shift = K - 1 - k
            if shift < T:
                grad_x[:, :T - shift].addcmul_(grad[:, shift:], taps[k])
                grad_taps[k] = (grad[:, shift:] * x[:, :T - shift]).sum((0, 1))
        return grad_x, grad_taps.t(), grad.sum((0, 1))  # in x.dtype; autograd casts to the parameters' dtype


def causal_conv1d_vectorized(x, weight, bias=None, activation: Optional[str] = None):
    """:func:`causal_conv1d_ref`'s numbers (to float32 rounding) by shifted multiply-adds; ``[B, T, E]``."""
    if bias is None:
        bias = x.new_zeros(x.shape[2])
    out = _ShiftedConv.apply(x, weight, bias)
    return F.silu(out) if activation == "silu" else out


def conv_path(x: torch.Tensor, backend: str = "auto") -> str:
    """``"native"``, ``"vectorized"`` or ``"reference"``: the path :func:`causal_conv1d` takes for ``x``.

    GPU tensors take ``"reference"`` (cuDNN's depthwise convolution). On CPU, ``"auto"`` and
    ``"native"`` give the native C loop for float32 when the selective scan's library is
    available (``SOSM_NATIVE_CPU`` not ``0``; the scan warns once when it is not), else the
    vectorised path; ``"triton"`` (no Triton convolution) gives the vectorised path.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    name = forced_backend() if backend == "auto" else backend
    if x.device.type != "cpu" or name == "reference" or torch.compiler.is_exporting():
        return "reference"  # (under torch.export: F.conv1d, traceable at any length)
    if name in ("auto", "native") and x.dtype == torch.float32 and native_cpu.enabled() and native_cpu.status()[0]:
        return "native"
    return "vectorized"


def causal_conv1d(x, weight, bias=None, activation: Optional[str] = None, *, backend: str = "auto"):
    """Causal depthwise convolution of ``x [B, T, E]`` with taps ``weight [E, K]`` (+ ``bias [E]``), then SiLU.

    Args:
        x: ``[B, T, E]`` floating point; the channel axis may be strided (e.g. a half of a
            ``[B, T, 2E]`` projection), it is read without a copy on the native path.
        weight: ``[E, K]`` taps, oldest first (``nn.Conv1d(E, E, K, groups=E).weight[:, 0, :]``).
        bias: ``[E]`` or None.
        activation: None or ``"silu"``.
        backend: ``"auto"``, or force ``"native"``, ``"vectorized"`` or ``"reference"`` (see :func:`conv_path`).

    Returns:
        ``[B, T, E]`` in ``x.dtype``: output t sees inputs ``t - K + 1 .. t`` only.

    Example:
        >>> conv = torch.nn.Conv1d(6, 6, 4, groups=6, padding=3)
        >>> x = torch.randn(2, 5, 6)
        >>> out = causal_conv1d(x, conv.weight[:, 0, :], conv.bias, activation="silu")
        >>> want = torch.nn.functional.silu(conv(x.transpose(1, 2))[..., :5].transpose(1, 2))
        >>> torch.allclose(out, want, atol=1e-6)
        True
    """
    check_conv_args(x, weight, bias, activation)
    path = conv_path(x, backend)
    if path == "native":
        return native_cpu.causal_conv1d_native(x, weight, bias, activation)
    if path == "vectorized":
        return causal_conv1d_vectorized(x, weight, bias, activation)
    return causal_conv1d_ref(x, weight, bias, activation)
