"""Exact top-k semantic neighbours: one dispatching entry point (Triton on CUDA).

On CUDA the Triton kernel streams key tiles and keeps a running top-k per query (memory
O(T·k)); elsewhere this falls back, with a one-time warning, to the dense oracle, which
holds a ``[B, T, T]`` score matrix: on CPU use ``sosm.graph``'s blocked top-k instead.
"""
from __future__ import annotations

import warnings

from .reference import block_similarities, check_topk_args, featurize, topk_similarity_ref

__all__ = ["topk_similarity", "topk_similarity_ref"]

BACKENDS = ("auto", "triton", "reference")
_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def topk_similarity(x, k, *, similarity="full", block_weights=None, projection=None,
                    causal=True, window=1, backend="auto"):
    """Top-k most similar earlier (or, bidirectional, other) tokens of every token.

    Similarity, candidates and tie rule follow docs/CONTRACTS.md exactly.

    Args:
        x: ``[B, T, 64]`` semantic states (finite).
        k: neighbours per query, ``1 <= k`` (``k <= 32`` on the Triton path).
        similarity: ``"full"`` (cosine), ``"blocks"`` (weighted per-block cosine) or
            ``"projection"`` (cosine after a fixed projection).
        block_weights: 16 weights ``>= 0`` in block order (``"blocks"`` only).
        projection: ``[d', 64]`` matrix (``"projection"`` only).
        causal: candidates ``j <= i - window - 1``; else ``|i - j| > window``. Default True.
        window: the sequential window excluded from candidates, ``>= 0``. Default 1.
        backend: ``"auto"``, or force ``"triton"`` / ``"reference"`` (dense oracle).

    Returns:
        ``indices [B, T, k]`` long (``-1`` where fewer candidates, ordered by similarity
        descending then index ascending), ``similarities [B, T, k]`` float32 (0 at ``-1``),
        ``block_similarities [B, T, k, 16]`` float32.

    Example:
        >>> import torch
        >>> idx, sim, blk = topk_similarity(torch.randn(1, 10, 64), 3)
        >>> idx.shape, blk.shape
        (torch.Size([1, 10, 3]), torch.Size([1, 10, 3, 16]))
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    check_topk_args(x, k, similarity, block_weights, projection, causal, window)
    kwargs = dict(similarity=similarity, block_weights=block_weights, projection=projection,
                  causal=causal, window=window)
    if backend == "reference":
        return topk_similarity_ref(x, k, **kwargs)
    if backend == "auto" and x.device.type != "cuda":
        _warn_once("cpu", "topk_similarity: non-CUDA tensors use the dense [B, T, T] reference; "
                          "on CPU prefer sosm.graph's blocked top-k")
        return topk_similarity_ref(x, k, **kwargs)
    try:
        from .triton_topk import topk_indices_triton
    except ImportError as err:
        if backend == "triton":
            raise RuntimeError(f"topk_similarity: backend='triton' needs triton ({err})") from err
        _warn_once("no-triton", f"topk_similarity: triton unavailable ({err}); using the dense reference")
        return topk_similarity_ref(x, k, **kwargs)
    features = featurize(x, similarity, block_weights, projection)
    indices, sims = topk_indices_triton(features, k, causal=causal, window=window)
    return indices, sims, block_similarities(x, indices, similarity)
