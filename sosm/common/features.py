"""Per-token features that several rooms compute the same way, defined once.

- :func:`featurize` — similarity features of the semantic state (docs/CONTRACTS.md, "Semantic
  similarity"): every similarity mode is ``f_i . f_j``. The graph builders (``sosm.graph``) and
  the fused top-k kernel (``sosm.kernels.topk_similarity``) both call this, so they agree bit
  for bit on the definition.
- :func:`block_units` — each 4-dim block as a unit vector (the per-block provenance of an edge).
- :func:`candidate_mask` — which key positions a query may link to (causal or bidirectional,
  sequential window excluded).
- :func:`sinusoidal_positions` — the ``[T, 32]`` sinusoidal position features of the temporal
  state (used by the model's front end and by model-free text states).

Example:
    >>> import torch
    >>> f = featurize(torch.randn(1, 5, 64), "full")          # [1, 5, 64], unit rows
    >>> bool(torch.allclose(f.norm(dim=-1), torch.ones(1, 5)))
    True
    >>> candidate_mask(torch.arange(4), torch.arange(4), causal=True, window=1).int().tolist()
    [[0, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0]]
"""
from __future__ import annotations

from typing import Optional

import torch

from .blocks import BLOCK_DIM, N_BLOCKS, TEMPORAL_DIM

SIMILARITY_MODES = ("full", "blocks", "projection")
EPS = 1e-8  # floor of every norm a feature is divided by


def featurize(x: torch.Tensor, similarity: str = "full", block_weights: Optional[torch.Tensor] = None,
              projection: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-token features ``[B, T, d']`` float32 so that ``similarity(i, j) = f_i . f_j``.

    Args:
        x: ``[B, T, 64]`` semantic states (any float dtype; computed in float32).
        similarity: ``"full"`` (``x / |x|``), ``"blocks"`` (each block unit-normed, times
            ``sqrt(w_b / sum w)``) or ``"projection"`` (``P x / |P x|``).
        block_weights: ``[16]`` weights in block order, for ``"blocks"``.
        projection: ``[d', 64]`` matrix, for ``"projection"``.
    """
    x = x.float()
    if similarity == "full":
        return x / x.norm(dim=-1, keepdim=True).clamp_min(EPS)
    if similarity == "blocks":
        w = torch.as_tensor(block_weights, dtype=torch.float32, device=x.device)
        scale = (w / w.sum()).sqrt()  # [16]
        xb = x.unflatten(-1, (N_BLOCKS, BLOCK_DIM))
        xb = xb / xb.norm(dim=-1, keepdim=True).clamp_min(EPS) * scale[:, None]
        return xb.flatten(-2)
    if similarity == "projection":
        p = x @ projection.float().to(x.device).T  # [B, T, d']
        return p / p.norm(dim=-1, keepdim=True).clamp_min(EPS)
    raise ValueError(f"similarity={similarity!r} is invalid; accepted: one of {SIMILARITY_MODES}")


def block_units(x: torch.Tensor, similarity: str = "full") -> torch.Tensor:
    """``[..., 64]`` -> ``[..., 16, 4]`` float32: the vectors whose block-wise dot products are the provenance.

    ``"full"``: blocks of ``x / |x|`` (a block's dot product is its share of the cosine);
    ``"blocks"`` and ``"projection"``: each block normed on its own (the dot product is ``cos_b``).
    """
    x = x.float()
    if similarity == "full":
        return (x / x.norm(dim=-1, keepdim=True).clamp_min(EPS)).unflatten(-1, (N_BLOCKS, BLOCK_DIM))
    xb = x.unflatten(-1, (N_BLOCKS, BLOCK_DIM))
    return xb / xb.norm(dim=-1, keepdim=True).clamp_min(EPS)


def candidate_mask(queries: torch.Tensor, keys: torch.Tensor, causal: bool, window: int) -> torch.Tensor:
    """``[len(queries), len(keys)]`` bool: True where key position j is a candidate of query position i.

    Causal: ``j <= i - window - 1`` (self and the sequential window excluded); bidirectional:
    ``|i - j| > window``.
    """
    gap = queries[:, None] - keys[None, :]
    return gap > window if causal else gap.abs() > window


def sinusoidal_positions(seq_len: int, dim: int = TEMPORAL_DIM, base: float = 10000.0) -> torch.Tensor:
    """Sinusoidal position features ``[T, dim]`` float32: sines in the first half, cosines in the second.

    Example:
        >>> sinusoidal_positions(5).shape
        torch.Size([5, 32])
    """
    if not isinstance(seq_len, (int, torch.SymInt)) or seq_len < 0:  # SymInt: a length traced by torch.export
        raise ValueError(f"seq_len={seq_len!r} is invalid; accepted: an int >= 0")
    if dim % 2 or dim < 2:
        raise ValueError(f"dim={dim!r} is invalid; accepted: an even int >= 2")
    half = dim // 2
    freqs = base ** (-torch.arange(half, dtype=torch.float64) / half)       # [dim/2]
    angles = torch.arange(seq_len, dtype=torch.float64)[:, None] * freqs      # [T, dim/2]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()            # [T, dim]
