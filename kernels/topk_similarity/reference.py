"""Dense oracle for ``topk_similarity`` and the pieces the Triton path shares with it.

The similarity definition is docs/CONTRACTS.md's ("Semantic similarity"): every mode is a dot
product of per-token features ``f = featurize(x)``; candidates of query i are
``j <= i - window - 1`` (causal) or ``|i - j| > window`` (bidirectional), and a zero state
(all features zero, :func:`~sosm.common.features.has_direction`) is neither a candidate nor a
query with candidates; top-k by similarity, ties to the lower index j; a query with fewer than
k candidates gets ``-1`` indices and zero similarities in the unused slots.

The features, per-block units and candidate rule are the leaf's (:mod:`sosm.common.features`),
the same functions the graph builders call.
"""
from __future__ import annotations

import torch

from ...common.blocks import BLOCK_DIM, N_BLOCKS, SEMANTIC_DIM
from ...common.features import SIMILARITY_MODES as SIMILARITIES
from ...common.features import block_units, candidate_mask, featurize, has_direction

MAX_K = 32  #: largest k the Triton kernel keeps in registers (the reference has no limit)


def check_topk_args(x, k, similarity, block_weights, projection, causal, window):
    """Validate; raises ``ValueError``/``TypeError`` naming the argument and the accepted range."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor [B, T, {SEMANTIC_DIM}], got "
                        f"{x.dtype if isinstance(x, torch.Tensor) else type(x).__name__}")
    if x.dim() != 3 or x.shape[2] != SEMANTIC_DIM or x.shape[1] < 1:
        raise ValueError(f"x must be [B, T >= 1, {SEMANTIC_DIM}], got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or Inf; similarities need finite states")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {causal!r}")
    if isinstance(window, bool) or not isinstance(window, int) or window < 0:
        raise ValueError(f"window must be an int >= 0, got {window!r}")
    if similarity == "blocks":
        if block_weights is None:
            raise ValueError(f"similarity='blocks' needs block_weights: {N_BLOCKS} weights >= 0 "
                             "in block order")
        w = torch.as_tensor(block_weights, dtype=torch.float32)
        if w.shape != (N_BLOCKS,) or not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"block_weights must be {N_BLOCKS} finite weights >= 0 with a positive "
                             f"sum, got {block_weights!r}")
    if similarity == "projection":
        if not isinstance(projection, torch.Tensor) or projection.dim() != 2 \
                or projection.shape[1] != SEMANTIC_DIM or projection.shape[0] < 1:
            raise ValueError(f"similarity='projection' needs projection: a [d', {SEMANTIC_DIM}] "
                             f"tensor, got {getattr(projection, 'shape', projection)!r}")


def block_similarities(x, indices, similarity="full") -> torch.Tensor:
    """Per-block similarity of each query with each chosen key: ``[B, T, k, 16]``, 0 where index is -1.

    ``full``: the block's share of the cosine, ``x_i^b . x_j^b / (|x_i| |x_j|)``;
    ``blocks`` and ``projection``: ``cos(x_i^b, x_j^b)``.
    """
    unit = block_units(x, similarity)  # [B, T, 16, 4]
    batch, length, k = indices.shape
    safe = indices.clamp_min(0).reshape(batch, length * k)
    keys = torch.gather(unit.flatten(-2), 1, safe[..., None].expand(-1, -1, SEMANTIC_DIM))
    keys = keys.reshape(batch, length, k, N_BLOCKS, BLOCK_DIM)
    sims = (unit[:, :, None] * keys).sum(-1)  # [B, T, k, 16]
    return sims.masked_fill((indices < 0)[..., None], 0.0)


def topk_similarity_ref(x, k, *, similarity="full", block_weights=None, projection=None,
                        causal=True, window=1):
    """Dense ``[B, T, T]`` oracle (tests only); same signature and results as ``topk_similarity``.

    Returns ``(indices [B, T, k] long, similarities [B, T, k] float32,
    block_similarities [B, T, k, 16] float32)``.
    """
    check_topk_args(x, k, similarity, block_weights, projection, causal, window)
    f = featurize(x, similarity, block_weights, projection)
    f64 = f.double()
    scores = (f64 @ f64.transpose(1, 2)).float()  # [B, T, T]; float64 then rounded: exact ties stay tied
    positions = torch.arange(x.shape[1], device=x.device)
    direction = has_direction(f)  # [B, T]: zero states take no part
    valid = candidate_mask(positions, positions, causal, window) & direction[:, :, None] & direction[:, None, :]
    scores = scores.masked_fill(~valid, float("-inf"))  # [B, T, T]
    values, order = torch.sort(scores, dim=-1, descending=True, stable=True)  # ties: lower j first
    kk = min(k, x.shape[1])
    values, order = values[..., :kk], order[..., :kk]
    missing = torch.isinf(values)
    indices = order.masked_fill(missing, -1)
    sims = values.masked_fill(missing, 0.0)
    if kk < k:
        pad = k - kk
        indices = torch.cat([indices, indices.new_full((*indices.shape[:2], pad), -1)], -1)
        sims = torch.cat([sims, sims.new_zeros((*sims.shape[:2], pad))], -1)
    return indices, sims, block_similarities(x, indices, similarity)
