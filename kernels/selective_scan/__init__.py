"""Selective scan (Mamba-1): one dispatching entry point plus the single-step update.

``selective_scan`` runs the Triton kernel on CUDA tensors and the native C loop
(:func:`~.native_cpu.selective_scan_native`, compiled on first use) on CPU tensors; where no
C compiler or no working build exists, or ``SOSM_NATIVE_CPU=0``, CPU tensors run the
vectorised PyTorch path (:func:`~.reference.selective_scan_vectorized`). The choice is
``sosm.kernels._backend``'s (detected once, each fallback warns once, forced by ``backend=``,
``force_backend`` or ``SOSM_KERNEL_BACKEND``); :func:`scan_path` names it without running.
"""
from __future__ import annotations

import torch

from .._backend import BACKENDS, forced_backend, resolve, warn_once
from . import native_cpu
from .causal_conv import causal_conv1d, causal_conv1d_ref, causal_conv1d_update
from .native_cpu import selective_scan_native
from .reference import (check_scan_args, selective_scan_ref, selective_scan_vectorized,
                        selective_state_update)
from .traceable import selective_scan_traceable

__all__ = ["selective_scan", "selective_state_update", "selective_scan_ref", "scan_path", "causal_conv1d",
           "causal_conv1d_ref", "causal_conv1d_update"]


def scan_path(device, backend: str = "auto") -> str:
    """The path ``selective_scan`` takes for tensors on ``device``: ``"triton"``, ``"native"``,
    ``"vectorized"`` or ``"reference"`` (building the native library on the first CPU call).

    ``"auto"`` (or ``"native"``) on CPU gives ``"native"`` when ``SOSM_NATIVE_CPU`` is not ``0``
    and the library builds; otherwise ``"vectorized"``, with one warning per process saying why.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    name = forced_backend() if backend == "auto" else backend
    device_type = getattr(device, "type", device)
    if name in ("auto", "native") and device_type == "cpu":
        if not native_cpu.enabled():
            if name == "native":
                warn_once("selective_scan", "native-disabled",
                          f"selective_scan: backend 'native' asked for but {native_cpu.ENV_SWITCH}=0; CPU "
                          "tensors use the vectorised PyTorch path")
                return "vectorized"
        else:
            ok, reason = native_cpu.status()
            if ok:
                return "native"
            warn_once("selective_scan", "native-unavailable",
                      f"selective_scan: native CPU scan unavailable ({reason}); CPU tensors use the "
                      "vectorised PyTorch path")
            return "vectorized"
    return resolve("selective_scan", device, name)


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, *, backend="auto"):
    """Selective scan with mamba_ssm's arguments and semantics.

    Args:
        u: ``[B, D, L]`` input.
        delta: ``[B, D, L]`` step sizes, before ``delta_bias`` and softplus.
        A: ``[D, N]`` real (negative for a decaying state).
        B, C: ``[B, N, L]`` or grouped ``[B, G, N, L]``, G dividing D.
        D: ``[D]`` skip weight or None. z: ``[B, D, L]`` gate or None (``out = y * silu(z)``).
        delta_bias: ``[D]`` or None. delta_softplus: ``delta = softplus(delta + delta_bias)``.
        return_last_state: also return the final state ``[B, D, N]`` (float32).
        backend: ``"auto"`` (Triton on CUDA, the native C loop on CPU), or force
            ``"triton"``, ``"native"``, ``"vectorized"`` or ``"reference"`` (the sequential
            loop); ``"auto"`` defers to ``sosm.kernels._backend.force_backend`` when set.

    Returns:
        ``out [B, D, L]`` in ``u.dtype``, and ``last_state`` if asked. Differentiable in
        u, delta, A, B, C, D, z and delta_bias.

    Example:
        >>> u = torch.randn(2, 8, 33); A = -torch.rand(8, 4)
        >>> out = selective_scan(u, torch.randn(2, 8, 33), A, torch.randn(2, 4, 33),
        ...                      torch.randn(2, 4, 33), delta_softplus=True)
    """
    check_scan_args(u, delta, A, B, C, D, z, delta_bias)
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if torch.compiler.is_exporting():  # torch.export / ONNX: one scan op, any length (see .traceable)
        return selective_scan_traceable(*args)
    path = scan_path(u.device, backend)
    if path == "native":
        return selective_scan_native(*args)
    if path == "reference":
        return selective_scan_ref(*args)
    if path == "vectorized":
        return selective_scan_vectorized(*args)
    from .triton_scan import selective_scan_triton
    return selective_scan_triton(*args)
