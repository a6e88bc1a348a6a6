"""Exact top-k semantic neighbours: one dispatching entry point (Triton on CUDA).

On CUDA the Triton kernel streams key tiles and keeps a running top-k per query (memory
O(T·k)); elsewhere ``sosm.kernels._backend`` falls back, warning once, and this op's fallback
is the dense oracle, which holds a ``[B, T, T]`` score matrix: on CPU use ``sosm.graph``'s
blocked top-k instead.
"""
from __future__ import annotations

from .._backend import resolve
from .reference import MAX_K, block_similarities, check_topk_args, featurize, topk_similarity_ref

__all__ = ["topk_similarity", "topk_similarity_ref", "MAX_K"]


def topk_similarity(x, k, *, similarity="full", block_weights=None, projection=None,
                    causal=True, window=1, backend="auto"):
    """Top-k most similar earlier (or, bidirectional, other) tokens of every token.

    Similarity, candidates and tie rule follow docs/CONTRACTS.md exactly.

    Args:
        x: ``[B, T, 64]`` semantic states (finite).
        k: neighbours per query, ``1 <= k`` (``k <= MAX_K = 32`` on the Triton path).
        similarity: ``"full"`` (cosine), ``"blocks"`` (weighted per-block cosine) or
            ``"projection"`` (cosine after a fixed projection).
        block_weights: 16 weights ``>= 0`` in block order (``"blocks"`` only).
        projection: ``[d', 64]`` matrix (``"projection"`` only).
        causal: candidates ``j <= i - window - 1``; else ``|i - j| > window``. Default True.
        window: the sequential window excluded from candidates, ``>= 0``. Default 1.
        backend: ``"auto"`` (Triton on CUDA), ``"triton"``, or ``"reference"`` /
            ``"vectorized"`` (both the dense oracle); see ``sosm.kernels._backend``.

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
    check_topk_args(x, k, similarity, block_weights, projection, causal, window)
    kwargs = dict(similarity=similarity, block_weights=block_weights, projection=projection,
                  causal=causal, window=window)
    if resolve("topk_similarity", x.device, backend) != "triton":
        return topk_similarity_ref(x, k, **kwargs)
    from .triton_topk import topk_indices_triton
    features = featurize(x, similarity, block_weights, projection)
    indices, sims = topk_indices_triton(features, k, causal=causal, window=window)
    return indices, sims, block_similarities(x, indices, similarity)
