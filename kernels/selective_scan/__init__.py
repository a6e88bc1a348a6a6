"""Selective scan (Mamba-1): one dispatching entry point plus the single-step update.

``selective_scan`` runs the Triton kernel on CUDA tensors and the vectorised PyTorch path
(:func:`~.reference.selective_scan_vectorized`) elsewhere; the choice is ``sosm.kernels._backend``'s
(detected once, each fallback warns once, forced by ``backend=``, ``force_backend`` or
``SOSM_KERNEL_BACKEND``).
"""
from __future__ import annotations

from .._backend import resolve
from .reference import (check_scan_args, selective_scan_ref, selective_scan_vectorized,
                        selective_state_update)

__all__ = ["selective_scan", "selective_state_update", "selective_scan_ref"]


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
            ``"triton"``, ``"vectorized"`` or ``"reference"`` (the sequential loop);
            ``"auto"`` defers to ``sosm.kernels._backend.force_backend`` when set.

    Returns:
        ``out [B, D, L]`` in ``u.dtype``, and ``last_state`` if asked. Differentiable in
        u, delta, A, B, C, D, z and delta_bias.

    Example:
        >>> u = torch.randn(2, 8, 33); A = -torch.rand(8, 4)
        >>> out = selective_scan(u, torch.randn(2, 8, 33), A, torch.randn(2, 4, 33),
        ...                      torch.randn(2, 4, 33), delta_softplus=True)
    """
    check_scan_args(u, delta, A, B, C, D, z, delta_bias)
    path = resolve("selective_scan", u.device, backend)
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if path == "reference":
        return selective_scan_ref(*args)
    if path == "vectorized":
        return selective_scan_vectorized(*args)
    from .triton_scan import selective_scan_triton
    return selective_scan_triton(*args)
