"""Selective scan (Mamba-1): one dispatching entry point plus the single-step update.

``selective_scan`` runs the Triton kernel on CUDA tensors and the vectorised PyTorch path
(:func:`~.reference.selective_scan_vectorized`) on CPU; each fallback warns once.
"""
from __future__ import annotations

import warnings

import torch

from .reference import (check_scan_args, selective_scan_ref, selective_scan_vectorized,
                        selective_state_update)

__all__ = ["selective_scan", "selective_state_update", "selective_scan_ref"]

BACKENDS = ("auto", "triton", "vectorized", "reference")
_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _triton_scan():
    try:
        from . import triton_scan
    except ImportError as err:  # triton missing or too old
        return None, err
    return triton_scan, None


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
        backend: ``"auto"`` (Triton on CUDA, the vectorised path on CPU), or force
            ``"triton"``, ``"vectorized"`` or ``"reference"`` (the sequential loop).

    Returns:
        ``out [B, D, L]`` in ``u.dtype``, and ``last_state`` if asked. Differentiable in
        u, delta, A, B, C, D, z and delta_bias.

    Example:
        >>> u = torch.randn(2, 8, 33); A = -torch.rand(8, 4)
        >>> out = selective_scan(u, torch.randn(2, 8, 33), A, torch.randn(2, 4, 33),
        ...                      torch.randn(2, 4, 33), delta_softplus=True)
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    check_scan_args(u, delta, A, B, C, D, z, delta_bias)
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if backend == "reference":
        return selective_scan_ref(*args)
    if backend == "vectorized":
        return selective_scan_vectorized(*args)
    if backend == "auto" and u.device.type != "cuda":
        _warn_once("cpu", "selective_scan: non-CUDA tensors use the vectorised PyTorch path "
                          "(no Triton kernel)")
        return selective_scan_vectorized(*args)
    module, err = _triton_scan()
    if module is None:
        if backend == "triton":
            raise RuntimeError(f"selective_scan: backend='triton' needs triton ({err})")
        _warn_once("no-triton", f"selective_scan: triton unavailable ({err}); "
                                "using the vectorised PyTorch path")
        return selective_scan_vectorized(*args)
    return module.selective_scan_triton(*args)
