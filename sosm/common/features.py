"""Per-token features that several rooms compute the same way, defined once.

- :func:`featurize` — similarity features of the semantic state (docs/CONTRACTS.md, "Semantic
  similarity"): every similarity mode is ``f_i . f_j``. The graph builders (``sosm.graph``) and
  the fused top-k kernel (``sosm.kernels.topk_similarity``) both call this, so they agree bit
  for bit on the definition.
- :func:`rescale` — a state times a power of two per row, as float32: what every norm is taken
  of, so float32 states of 1e20 or float64 states of 1e39 normalise like any other (no square
  overflows, no cast overflows) and no bit of a cosine changes (float32 stays float32: no
  float64 copy).
- :func:`has_direction` — the zero-state rule: a token whose features are all zero has no
  direction, so it is no similarity candidate and gets no similarity neighbours.
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
EPS = 1e-8  # floor of every norm a feature is divided by (after rescale a non-zero row's norm is >= 0.5)


def _power_of_two(exponent: torch.Tensor) -> torch.Tensor:
    """``2.0 ** exponent`` as float64, exactly (int64 ``exponent`` in [-1022, 1023]; built from the bits)."""
    return ((exponent + 1023) << 52).view(torch.float64)


def rescale(x: torch.Tensor, block: int = 0) -> torch.Tensor:
    """``x`` times a power of two per row of the last axis (per ``block``-wide group if ``block``), float32.

    The factor brings each row's largest ``|value|`` into ``[0.5, 1)``, so any finite input
    (float32 1e20, float64 1e39 or 1e-300) lands in range, squares and norms cannot overflow or
    underflow, and ``x / |x|`` keeps the bits it has in the ordinary range (a power-of-two factor is
    exact). All-zero rows stay zero. The result is the exact product rounded once to float32:

    - float64 input: computed in float64 (two factors, each a normal float64), then cast;
    - float32 input (and float16 / bfloat16, widened exactly): computed in float32, bit for bit the
      float64 route's result without the 2x-wide copy. Scaling up is exact in any number of steps
      (two normal float32 factors, the result stays below 1); scaling down is one multiplication by
      ``2^e``, ``e >= -128`` (a float32, subnormal below ``2^-126`` but exact), rounded once.

    Example:
        >>> rescale(torch.tensor([[3e39, -4e39]], dtype=torch.float64))
        tensor([[ 0.5510, -0.7347]])
    """
    if x.dtype == torch.float64:
        x64 = x.unflatten(-1, (-1, block)) if block else x
        _, exponent = torch.frexp(x64.abs().amax(-1, keepdim=True))  # max = m * 2^e, m in [0.5, 1); 0 -> e = 0
        down = -exponent.long()
        half = torch.div(down, 2, rounding_mode="floor")  # two factors: each stays a normal float64
        x64 = x64 * _power_of_two(half) * _power_of_two(down - half)
        return (x64.flatten(-2) if block else x64).float()
    x32 = x.float()
    if block:
        x32 = x32.unflatten(-1, (-1, block))
    _, exponent = torch.frexp(x32.abs().amax(-1, keepdim=True))  # e in [-148, 128] for finite float32
    down = -exponent.long()
    up = down >= 0
    first = torch.where(up, torch.div(down, 2, rounding_mode="floor"), down)  # [0, 74] or [-128, -1]
    second = torch.where(up, down - first, torch.zeros_like(down))  # [0, 75] or 0
    x32 = x32 * _power_of_two(first).float() * _power_of_two(second).float()  # the factors convert exactly
    return x32.flatten(-2) if block else x32


def has_direction(features: torch.Tensor) -> torch.Tensor:
    """``[..., d'] -> [...]`` bool: False where a token's features are all zero (a zero state).

    A zero state has no direction: its similarity to everything would be 0 and its dominant block
    arbitrary, so it is no candidate and gets no neighbours (graph builders, ``topk_similarity``).
    In ``"blocks"`` mode that is a state zero in every weighted block.
    """
    return (features != 0).any(-1)


def featurize(x: torch.Tensor, similarity: str = "full", block_weights: Optional[torch.Tensor] = None,
              projection: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-token features ``[B, T, d']`` float32 so that ``similarity(i, j) = f_i . f_j``.

    Args:
        x: ``[B, T, 64]`` semantic states (any float dtype, any finite scale; computed in float32
            after :func:`rescale`).
        similarity: ``"full"`` (``x / |x|``), ``"blocks"`` (each block unit-normed, times
            ``sqrt(w_b / sum w)``) or ``"projection"`` (``P x / |P x|``). Zero vectors give zero
            features (see :func:`has_direction`).
        block_weights: ``[16]`` weights in block order, for ``"blocks"``.
        projection: ``[d', 64]`` matrix, for ``"projection"``.
    """
    if similarity == "full":
        x = rescale(x)
        return x / x.norm(dim=-1, keepdim=True).clamp_min(EPS)
    if similarity == "blocks":
        x = rescale(x, BLOCK_DIM)
        w = torch.as_tensor(block_weights, dtype=torch.float32, device=x.device)
        scale = (w / w.sum()).sqrt()  # [16]
        xb = x.unflatten(-1, (N_BLOCKS, BLOCK_DIM))
        xb = xb / xb.norm(dim=-1, keepdim=True).clamp_min(EPS) * scale[:, None]
        return xb.flatten(-2)
    if similarity == "projection":
        p = rescale(rescale(x) @ projection.float().to(x.device).T)  # [B, T, d']
        return p / p.norm(dim=-1, keepdim=True).clamp_min(EPS)
    raise ValueError(f"similarity={similarity!r} is invalid; accepted: one of {SIMILARITY_MODES}")


def block_units(x: torch.Tensor, similarity: str = "full") -> torch.Tensor:
    """``[..., 64]`` -> ``[..., 16, 4]`` float32: the vectors whose block-wise dot products are the provenance.

    ``"full"``: blocks of ``x / |x|`` (a block's dot product is its share of the cosine);
    ``"blocks"`` and ``"projection"``: each block normed on its own (the dot product is ``cos_b``).
    Any finite scale (see :func:`rescale`).
    """
    if similarity == "full":
        x = rescale(x)
        return (x / x.norm(dim=-1, keepdim=True).clamp_min(EPS)).unflatten(-1, (N_BLOCKS, BLOCK_DIM))
    xb = rescale(x, BLOCK_DIM).unflatten(-1, (N_BLOCKS, BLOCK_DIM))
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
