"""Dense masked graph attention in plain PyTorch: the float32 ground truth for every path.

For batch item b, head h and query position i, with ``A(i) = {i} ∪ {valid neighbours of i}``
(a *set*: ``-1`` padding, duplicate entries and an explicit self entry add nothing)::

    score(i, j) = scale * q[b,i,h] · k[b,j,h] - slope[h] * max_l |coords[b,i,l] - coords[b,j,l]|
    out[b,i,h]  = sum_{j in A(i)} softmax_j(score(i, j)) * v[b,j,h]

The ALiBi term is present only when ``alibi_slopes`` and ``alibi_coords`` are given. This file
writes that score once: :func:`score_bias` (the mask and the ALiBi term) and
:func:`graph_attention_scores` (the ``[B, H, T, T]`` matrix); :func:`graph_attention_ref`
(the oracle, tests only), the CPU path's dense branch and DePass's frozen probabilities all use
them. It computes in float32 and casts back to ``q.dtype``; differentiable in q, k, v.
"""
from __future__ import annotations

import math

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
INDEX_DTYPES = (torch.int32, torch.int64)


def _shape(t) -> tuple:
    return tuple(t.shape)


def check_graph_attention_args(q, k, v, neighbors, scale=None, alibi_slopes=None,
                               alibi_coords=None) -> float:
    """Validate dtypes and shapes (no host-device sync); returns the softmax scale.

    Index *values* are checked once per graph by ``GraphLayout.build``.

    Raises:
        TypeError: a non-tensor or a wrong dtype, naming the argument.
        ValueError: a wrong shape or device, or a bad ``scale``, naming the argument.
    """
    for name, t in (("q", q), ("k", k), ("v", v), ("neighbors", neighbors)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if q.dtype not in FLOAT_DTYPES:
        raise TypeError(f"q must have dtype float32, float16 or bfloat16, got {q.dtype}")
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise TypeError(f"{name} must have q's dtype {q.dtype}, got {t.dtype}")
    if q.dim() != 4:
        raise ValueError(f"q must be [B, T, H, d], got shape {_shape(q)}")
    batch, seq_len, heads, head_dim = q.shape
    if batch < 1 or seq_len < 1 or heads < 1 or head_dim < 1:  # not min(): it would pin traced sizes to each other
        raise ValueError(f"q must have B, T, H, d >= 1, got shape {_shape(q)}")
    for name, t in (("k", k), ("v", v)):
        if t.shape != q.shape:
            raise ValueError(f"{name} must have q's shape {_shape(q)} [B, T, H, d], "
                             f"got {_shape(t)}")
    if neighbors.dtype not in INDEX_DTYPES:
        raise TypeError(f"neighbors must have dtype int32 or int64, got {neighbors.dtype}")
    if neighbors.dim() != 3 or neighbors.shape[:2] != (batch, seq_len):
        raise ValueError(f"neighbors must be [B={batch}, T={seq_len}, Kn], "
                         f"got shape {_shape(neighbors)}")
    for name, t in (("k", k), ("v", v), ("neighbors", neighbors)):
        if t.device != q.device:
            raise ValueError(f"{name} must be on q's device {q.device}, got {t.device}")
    if (alibi_slopes is None) != (alibi_coords is None):
        raise ValueError("alibi_slopes and alibi_coords must be given together "
                         f"(got alibi_slopes={'set' if alibi_slopes is not None else None}, "
                         f"alibi_coords={'set' if alibi_coords is not None else None})")
    if alibi_slopes is not None:
        for name, t in (("alibi_slopes", alibi_slopes), ("alibi_coords", alibi_coords)):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
            if not t.is_floating_point():
                raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
            if t.device != q.device:
                raise ValueError(f"{name} must be on q's device {q.device}, got {t.device}")
        if alibi_slopes.shape != (heads,):
            raise ValueError(f"alibi_slopes must be [H={heads}], got shape {_shape(alibi_slopes)}")
        if (alibi_coords.dim() != 3 or alibi_coords.shape[:2] != (batch, seq_len)
                or alibi_coords.shape[2] < 1):
            raise ValueError(f"alibi_coords must be [B={batch}, T={seq_len}, L>=1], "
                             f"got shape {_shape(alibi_coords)}")
    if scale is None:
        return 1.0 / math.sqrt(head_dim)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"scale must be a Python float or None, got {type(scale).__name__}")
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a finite float > 0, got {scale}")
    return float(scale)


def dense_mask(neighbors: torch.Tensor, seq_len: int) -> torch.Tensor:
    """``[B, T, T]`` bool: ``mask[b, i, j]`` is True where query i attends to key j (self included).

    Entries outside ``[-1, T)`` raise ValueError (naming ``neighbors``); under ``torch.export`` the
    values cannot be read, and the exporter's caller checks them.
    """
    if neighbors.numel() and not torch.compiler.is_exporting() and (int(neighbors.min()) < -1 or int(neighbors.max()) >= seq_len):
        raise ValueError(f"neighbors entries must lie in [-1, T={seq_len}), got min "
                         f"{int(neighbors.min())}, max {int(neighbors.max())}")
    batch = neighbors.shape[0]
    index = torch.where(neighbors < 0, seq_len, neighbors).long()  # -1 -> a spill column
    mask = torch.zeros(batch, seq_len, seq_len + 1, dtype=torch.bool, device=neighbors.device)
    mask.scatter_(2, index, True)
    mask = mask[..., :seq_len]
    mask |= torch.eye(seq_len, dtype=torch.bool, device=neighbors.device)
    return mask


def alibi_distance(coords_q: torch.Tensor, coords_k: torch.Tensor) -> torch.Tensor:
    """``max_l |coords_q[..., l] - coords_k[..., l]|`` in float32 (broadcasting)."""
    return (coords_q.float() - coords_k.float()).abs().amax(-1)


def score_bias(mask: torch.Tensor, alibi_slopes=None, alibi_coords=None) -> torch.Tensor:
    """What the graph adds to ``scale * q . k``: ``[B, 1, T, T]`` (0 on edges) or, with ALiBi, ``[B, H, T, T]``
    (``-slope_h * max_l |c_i,l - c_j,l|`` on edges); ``-inf`` off the edges.

    Args:
        mask: ``[B, T, T]`` bool, True where query i attends to key j (self included).
    """
    if alibi_slopes is None:
        return torch.zeros(mask.shape, device=mask.device).masked_fill_(~mask, float("-inf"))[:, None]
    dist = alibi_distance(alibi_coords[:, :, None, :], alibi_coords[:, None, :, :])  # [B, T, T]
    bias = dist[:, None] * -alibi_slopes.float()[None, :, None, None]  # [B, H, T, T]
    return bias.masked_fill_(~mask[:, None], float("-inf"))


def graph_attention_scores(q, k, neighbors, scale: float, alibi_slopes=None, alibi_coords=None) -> torch.Tensor:
    """The score matrix ``[B, H, T, T]`` float32: ``scale * q_i . k_j`` plus :func:`score_bias` (-inf off edges)."""
    scores = torch.einsum("bihd,bjhd->bhij", q.float(), k.float()) * scale  # [B, H, T, T]
    return scores + score_bias(dense_mask(neighbors, q.shape[1]), alibi_slopes, alibi_coords)


def graph_attention_ref(q, k, v, neighbors, *, scale=None, alibi_slopes=None, alibi_coords=None,
                        layout=None, return_lse=False):
    """Dense masked attention over ``{i} ∪ neighbours(i)``; float32 inside, ``q.dtype`` out.

    Args:
        q, k, v: ``[B, T, H, d]``, one float dtype.
        neighbors: ``[B, T, Kn]`` int32/int64 key positions, ``-1`` padded, self excluded.
        scale: score scale, default ``1/sqrt(d)``.
        alibi_slopes: ``[H]`` float or None. alibi_coords: ``[B, T, L]`` float or None.
        layout: accepted for signature parity and ignored (the mask comes from ``neighbors``).
        return_lse: also return the log-sum-exp of each query's scores, ``[B, T, H]`` float32.

    Returns:
        ``[B, T, H, d]`` in ``q.dtype`` (and the lse). Memory ``O(B·H·T²)``: for tests and small inputs.

    Example:
        >>> q = k = v = torch.randn(1, 5, 2, 8)
        >>> nbrs = torch.tensor([[[-1], [0], [0], [1], [2]]])
        >>> graph_attention_ref(q, k, v, nbrs).shape
        torch.Size([1, 5, 2, 8])
    """
    scale = check_graph_attention_args(q, k, v, neighbors, scale, alibi_slopes, alibi_coords)
    scores = graph_attention_scores(q, k, neighbors, scale, alibi_slopes, alibi_coords)  # [B, H, T, T]
    probs = torch.softmax(scores, dim=-1)
    out = torch.einsum("bhij,bjhd->bihd", probs, v.float()).to(q.dtype)
    if not return_lse:
        return out
    return out, torch.logsumexp(scores, dim=-1).transpose(1, 2)  # [B, T, H]
