"""Input validation shared by the memory room: clear ``ValueError``/``TypeError`` messages
that name the argument, the value and what is accepted (docs/ARCHITECTURE.md, invariant 6).

Example:
    >>> import numpy as np
    >>> as_float_matrix(np.ones((2, 4)), "states", dim=4).shape
    (2, 4)
"""
from __future__ import annotations

import json
import math
from typing import Any, Optional, Sequence

import numpy as np
import torch

_FLOAT_DTYPES = (np.float16, np.float32, np.float64)
_F32 = np.dtype(np.float32)


def as_float_matrix(value: Any, name: str, dim: int) -> np.ndarray:
    """``value`` ([N, dim] float tensor or ndarray) as a C-contiguous float32 ndarray.

    Raises TypeError for a non-float dtype or a non-array type, ValueError for a wrong
    shape or NaN/Inf entries. A tensor is copied to host memory (host-device sync).
    """
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor (float16, bfloat16, float32, float64), got {value.dtype}")
        original = value.detach()
        array = original.to("cpu", torch.float32).numpy()
    elif isinstance(value, np.ndarray):
        if value.dtype is _F32 and value.ndim == 2 and value.shape[1] == dim and value.flags.c_contiguous:
            array = value  # fast path: already in the accepted layout; only the finiteness check below
            # NaN/Inf propagate into the sum; float32 rows cannot overflow a float64 sum. A few
            # rows are summed in Python: a numpy reduction right after an HNSW search (cold
            # caches) costs a single-query retrieve ~10 us more
            total = sum(array.ravel().tolist()) if array.size <= 1024 else float(array.sum(dtype=np.float64))
            if not math.isfinite(total):
                bad = int((~np.isfinite(array)).any(axis=1).nonzero()[0][0])
                raise ValueError(f"{name} must be finite; row {bad} contains NaN or Inf")
            return array
        if value.dtype.type not in _FLOAT_DTYPES:
            raise TypeError(f"{name} must be a floating-point array (float16, float32, float64), got {value.dtype}")
        array = original = value
    else:
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray of shape [N, {dim}], got {type(value).__name__}")
    if array.ndim != 2 or array.shape[1] != dim:
        raise ValueError(f"{name} must have shape [N, {dim}] (dim={dim}), got {tuple(array.shape)}")
    with np.errstate(over="ignore", invalid="ignore"):  # a finite float64 beyond float32: inf, named below
        array = np.ascontiguousarray(array, dtype=np.float32)
        total = float(array.sum(dtype=np.float64))
    if not math.isfinite(total):  # NaN/Inf propagate; float64 cannot overflow here
        bad = int((~np.isfinite(array)).any(axis=1).nonzero()[0][0])
        row = np.asarray(original[bad].cpu() if isinstance(original, torch.Tensor) else original[bad], dtype=np.float64)
        if np.isfinite(row).all():  # finite, but not as float32: say so, never store or search inf
            raise ValueError(f"{name} row {bad} is beyond the float32 range (largest |value| {np.abs(row).max():.3g} > "
                             f"{np.finfo(np.float32).max:.3g}); the memory stores float32: scale the states down")
        raise ValueError(f"{name} must be finite; row {bad} contains NaN or Inf")
    return array


def directions(array: np.ndarray, name: str) -> np.ndarray:
    """The rows of a float32 ``array`` for a cosine search: zero rows rejected, extreme scales brought in range.

    A zero vector has no direction (the rule of ``sosm.common.features.has_direction``): ValueError
    naming the row. A row whose largest ``|value|`` lies outside ``[2^-60, 2^60]`` is multiplied by a
    power of two (exact: the direction keeps every bit) so that its squared norm neither overflows
    nor underflows float32; other rows are returned as they are (no copy when none needs it).
    """
    peak = np.abs(array).max(axis=1) if array.size else np.ones(len(array), dtype=np.float32)
    if not peak.all():
        bad = int((peak == 0).nonzero()[0][0])
        raise ValueError(f"{name} row {bad} is a zero vector: space='cosine' needs a nonzero norm (a direction)")
    if peak.size == 0 or (peak.min() >= 2.0 ** -60 and peak.max() <= 2.0 ** 60):
        return array
    _, exponent = np.frexp(peak)
    return np.ascontiguousarray(np.ldexp(array, -exponent[:, None]), dtype=np.float32)


def as_positions(value: Any, name: str, count: int, *, allow_scalar: bool) -> Optional[np.ndarray]:
    """``value`` (None, int, or integer tensor/array [count]) as an int64 ndarray [count] of values >= 0."""
    if value is None:
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if not allow_scalar:
            raise TypeError(f"{name} must be an integer tensor of shape [{count}], got a scalar")
        array = np.full(count, int(value), dtype=np.int64)
    elif isinstance(value, (torch.Tensor, np.ndarray)):
        array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
        if array.dtype.kind not in "iu":
            raise TypeError(f"{name} must hold integers (e.g. torch.long), got dtype {array.dtype}")
        if array.ndim == 0 and allow_scalar:
            array = np.full(count, int(array), dtype=np.int64)
        if array.shape != (count,):
            raise ValueError(f"{name} must have shape [{count}]" + (" or be a scalar" if allow_scalar else "") + f", got {tuple(array.shape)}")
        array = array.astype(np.int64)
    else:
        raise TypeError(f"{name} must be an int or an integer tensor of shape [{count}], got {type(value).__name__}")
    if count and array.min() < 0:
        raise ValueError(f"{name} must be >= 0, got minimum {int(array.min())}")
    return array


def check_metadata(metadata: Optional[Sequence[dict]], count: int) -> list[dict]:
    """``metadata`` as a list of ``count`` JSON-serialisable dicts (``None``: empty dicts)."""
    if metadata is None:
        return [{} for _ in range(count)]
    if not isinstance(metadata, (list, tuple)) or len(metadata) != count:
        raise ValueError(f"metadata must be a list of {count} dicts (one per state), got "
                         f"{type(metadata).__name__} of length {len(metadata) if hasattr(metadata, '__len__') else '?'}")
    for i, item in enumerate(metadata):
        if not isinstance(item, dict):
            raise TypeError(f"metadata[{i}] must be a dict, got {type(item).__name__}")
        try:
            json.dumps(item)
        except (TypeError, ValueError) as err:
            raise TypeError(f"metadata[{i}] must be JSON-serialisable (str keys; str/int/float/bool/None/list/dict values): {err}") from None
    return [dict(item) for item in metadata]


def check_positive_int(value: Any, name: str) -> int:
    if type(value) is int and value > 0:  # fast path (hot: every retrieve)
        return value
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows over their norms (float32), computed after a power-of-two rescaling (any finite scale; zero rows stay 0)."""
    if vectors.size == 0:
        return vectors
    _, exponent = np.frexp(np.abs(vectors).max(axis=1, keepdims=True))
    scaled = np.ldexp(vectors, -exponent).astype(np.float32, copy=False)
    return scaled / np.linalg.norm(scaled, axis=1, keepdims=True).clip(min=1e-30)
