"""Mamba's causal depthwise convolution, optionally followed by SiLU: one dispatching entry point.

For ``x [B, T, E]`` (the in-projection's layout; channels may be a strided half of a wider
tensor), taps ``weight [E, K]`` and ``bias [E]``::

    c[b, t, e] = bias[e] + sum_k weight[e, k] * x[b, t - (K - 1) + k, e]     (x = 0 before t = 0)
    out = silu(c) if activation == "silu" else c

which is ``nn.Conv1d(E, E, K, groups=E, padding=K - 1)`` on ``x.transpose(1, 2)`` cut to the
first T outputs. Paths: :func:`causal_conv1d_ref` (that ``F.conv1d``: the oracle, and cuDNN on
GPUs), :func:`causal_conv1d_vectorized` (K shifted multiply-adds along contiguous rows in
``[B, T, E]``, no transposes), and on CPU the native C loop of the selective scan's library
(:func:`~.native_cpu.causal_conv1d_native`: one pass per direction with SiLU fused, its backward
recomputing the pre-activation). All are differentiable in x, weight, bias (and initial_states).

Precision: every path computes in ``promote(x, weight, bias, float32)``: float16/bfloat16 inputs
are multiplied and summed in float32 with the taps as given (never cast down), the output is
cast back to ``x.dtype`` and the gradients to their inputs' dtypes (causal-conv1d's rule).

Carried state (chunked prefill, streaming, decoding): ``initial_states [B, K-1, E]`` are the
K - 1 inputs before ``x[:, 0]`` (oldest first; zeros when None), ``return_final_states`` also
returns the last K - 1 inputs ``[B, K-1, E]``, the next chunk's ``initial_states``; and
:func:`causal_conv1d_update` advances by one (or a few) steps from such a state.
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


def compute_dtype(x, weight, bias=None) -> torch.dtype:
    """The dtype every path computes in: ``promote(x, weight, bias, float32)`` (float32 for half inputs)."""
    dtype = torch.promote_types(torch.promote_types(x.dtype, weight.dtype), torch.float32)
    return dtype if bias is None else torch.promote_types(dtype, bias.dtype)


def check_state_args(x, weight, initial_states, name: str = "initial_states") -> None:
    """TypeError / ValueError naming ``initial_states`` (or ``conv_state``): ``[B, K-1, E]`` floating, on x's device."""
    if initial_states is None:
        return
    B, E, K = x.shape[0], weight.shape[0], weight.shape[1]
    if not isinstance(initial_states, torch.Tensor) or not initial_states.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor [B, K-1, E], got "
                        f"{getattr(initial_states, 'dtype', type(initial_states).__name__)}")
    if tuple(initial_states.shape) != (B, K - 1, E):
        raise ValueError(f"{name} must be [B={B}, K-1={K - 1}, E={E}] (the K - 1 inputs before the first, oldest "
                         f"first), got {tuple(initial_states.shape)}")
    if initial_states.device != x.device:
        raise ValueError(f"{name} is on {initial_states.device} but x is on {x.device}")


def _with_states(x, weight, bias, initial_states, return_final_states, activation, conv):
    """Run ``conv`` (a path over ``[B, T', E]`` in the compute dtype) with carried state; cast back."""
    dtype, K = compute_dtype(x, weight, bias), weight.shape[1]
    xc = x if x.dtype == dtype else x.to(dtype)
    if initial_states is not None:
        xc = torch.cat([initial_states.to(dtype), xc], 1)  # [B, K-1+T, E]
    out = conv(xc, weight.to(dtype), None if bias is None else bias.to(dtype), activation)
    out = (out if initial_states is None else out[:, K - 1:]).to(x.dtype)
    if not return_final_states:
        return out
    missing = K - 1 - xc.shape[1]
    full = xc if missing <= 0 else F.pad(xc, (0, 0, missing, 0))  # fewer than K - 1 inputs: zeros before
    return out, full[:, full.shape[1] - (K - 1):].to(x.dtype)


def _conv_ref(x, weight, bias, activation):
    T, K = x.shape[1], weight.shape[1]
    with torch.autocast(x.device.type, enabled=False):  # autocast would cast the float32 inputs down again
        out = F.conv1d(x.transpose(1, 2), weight[:, None, :], bias, padding=K - 1, groups=x.shape[2])[..., :T]
    out = out.transpose(1, 2)
    return F.silu(out) if activation == "silu" else out


def causal_conv1d_ref(x, weight, bias=None, activation: Optional[str] = None, *, initial_states=None,
                      return_final_states: bool = False):
    """The oracle: ``F.conv1d`` (depthwise, left padding K - 1) on ``x.transpose(1, 2)`` in the compute
    dtype (:func:`compute_dtype`); ``[B, T, E]`` in ``x.dtype`` (and the final states if asked)."""
    return _with_states(x, weight, bias, initial_states, return_final_states, activation, _conv_ref)


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


def _conv_vectorized(x, weight, bias, activation):
    out = _ShiftedConv.apply(x, weight, x.new_zeros(x.shape[2]) if bias is None else bias)
    return F.silu(out) if activation == "silu" else out


def causal_conv1d_vectorized(x, weight, bias=None, activation: Optional[str] = None, *, initial_states=None,
                             return_final_states: bool = False):
    """:func:`causal_conv1d_ref`'s numbers (to float32 rounding) by shifted multiply-adds; ``[B, T, E]``."""
    return _with_states(x, weight, bias, initial_states, return_final_states, activation, _conv_vectorized)


def conv_path(x: torch.Tensor, backend: str = "auto") -> str:
    """``"native"``, ``"vectorized"`` or ``"reference"``: the path :func:`causal_conv1d` takes for ``x``.

    GPU tensors take ``"reference"`` (cuDNN's depthwise convolution). On CPU, ``"auto"`` and
    ``"native"`` give the native C loop for float32, float16 and bfloat16 inputs (all computed in
    float32; float64 takes the vectorised path) when the selective scan's library is
    available (``SOSM_NATIVE_CPU`` not ``0``; the scan warns once when it is not), else the
    vectorised path; ``"triton"`` (no Triton convolution) gives the vectorised path.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    name = forced_backend() if backend == "auto" else backend
    if x.device.type != "cpu" or name == "reference" or torch.compiler.is_exporting():
        return "reference"  # (under torch.export: F.conv1d, traceable at any length)
    if name in ("auto", "native") and x.dtype in (torch.float32, torch.float16, torch.bfloat16) \
            and native_cpu.enabled() and native_cpu.status()[0]:  # float32 inside (compute_dtype)
        return "native"
    return "vectorized"


def causal_conv1d(x, weight, bias=None, activation: Optional[str] = None, *, initial_states=None,
                  return_final_states: bool = False, backend: str = "auto"):
    """Causal depthwise convolution of ``x [B, T, E]`` with taps ``weight [E, K]`` (+ ``bias [E]``), then SiLU.

    Args:
        x: ``[B, T, E]`` floating point; the channel axis may be strided (e.g. a half of a
            ``[B, T, 2E]`` projection), it is read without a copy on the native path.
        weight: ``[E, K]`` taps, oldest first (``nn.Conv1d(E, E, K, groups=E).weight[:, 0, :]``).
        bias: ``[E]`` or None.
        activation: None or ``"silu"``.
        initial_states: ``[B, K-1, E]``, the K - 1 inputs before ``x[:, 0]`` (oldest first), e.g. the
            previous chunk's final states; None means zeros. Differentiable.
        return_final_states: also return the last K - 1 inputs ``[B, K-1, E]`` (in ``x.dtype``).
        backend: ``"auto"``, or force ``"native"``, ``"vectorized"`` or ``"reference"`` (see :func:`conv_path`).

    Returns:
        ``[B, T, E]`` in ``x.dtype`` (computed in float32 or wider, :func:`compute_dtype`): output t
        sees inputs ``t - K + 1 .. t`` only; and ``final_states`` when asked.

    Example:
        >>> conv = torch.nn.Conv1d(6, 6, 4, groups=6, padding=3)
        >>> x = torch.randn(2, 5, 6)
        >>> out = causal_conv1d(x, conv.weight[:, 0, :], conv.bias, activation="silu")
        >>> want = torch.nn.functional.silu(conv(x.transpose(1, 2))[..., :5].transpose(1, 2))
        >>> torch.allclose(out, want, atol=1e-6)
        True
    """
    check_conv_args(x, weight, bias, activation)
    check_state_args(x, weight, initial_states)
    path = conv_path(x, backend)
    if path == "native" and compute_dtype(x, weight, bias) != torch.float32:  # float64 weight or bias
        path = "vectorized"
    conv = {"native": native_cpu.causal_conv1d_native, "vectorized": _conv_vectorized, "reference": _conv_ref}[path]
    return _with_states(x, weight, bias, initial_states, return_final_states, activation, conv)


def causal_conv1d_update(x, conv_state, weight, bias=None, activation: Optional[str] = None):
    """One decoding step (or a few) of :func:`causal_conv1d` from a carried state; nothing is modified.

    Args:
        x: ``[B, E]`` the new input (or ``[B, L, E]``, L new inputs).
        conv_state: ``[B, K-1, E]`` the K - 1 previous inputs, oldest first (zeros at the start).
        weight, bias, activation: as for :func:`causal_conv1d`.

    Returns:
        ``(out, new_state)``: ``out`` shaped like ``x`` in ``x.dtype`` (float32 sums), and the new
        ``[B, K-1, E]`` state (the last K - 1 inputs). Equal to ``causal_conv1d(x[:, None] or x, ...,
        initial_states=conv_state, return_final_states=True)`` (the reference path: no native call
        for a step).

    Example:
        >>> w = torch.randn(6, 4); x = torch.randn(2, 5, 6)
        >>> state = torch.zeros(2, 3, 6)
        >>> outs = []
        >>> for t in range(5):
        ...     out, state = causal_conv1d_update(x[:, t], state, w)
        ...     outs.append(out)
        >>> torch.allclose(torch.stack(outs, 1), causal_conv1d(x, w), atol=1e-6)
        True
    """
    if not isinstance(x, torch.Tensor) or x.dim() not in (2, 3):
        raise ValueError(f"x must be [B, E] or [B, L, E], got {tuple(getattr(x, 'shape', ())) or type(x).__name__}")
    steps = x if x.dim() == 3 else x[:, None]
    check_conv_args(steps, weight, bias, activation)
    check_state_args(steps, weight, conv_state, "conv_state")
    out, state = _with_states(steps, weight, bias, conv_state, True, activation, _conv_vectorized)
    return (out if x.dim() == 3 else out[:, 0]), state
