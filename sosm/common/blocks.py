"""The one table of MU semantic blocks (docs/ARCHITECTURE.md, "Data contracts").

The semantic state is ``[B, T, 64]``: 16 named blocks of 4 dims. Nothing else in the
code base hard-codes an offset; use :data:`BLOCK_NAMES`, :func:`block_slice` or
:func:`block_index`.

Example:
    >>> from sosm.common.blocks import block_slice, SEMANTIC_DIM
    >>> block_slice("K")
    slice(16, 20, None)
    >>> SEMANTIC_DIM
    64
"""
from __future__ import annotations

BLOCK_NAMES: tuple[str, ...] = (
    "I",   # identity
    "D",   # domain
    "R1",  # relation 1
    "R2",  # relation 2
    "K",   # knowledge
    "M", "T", "P", "S", "C", "N", "X", "E", "F", "A", "Z",  # free aspects
)
BLOCK_DIM: int = 4
N_BLOCKS: int = len(BLOCK_NAMES)
SEMANTIC_DIM: int = N_BLOCKS * BLOCK_DIM  # 64
TEMPORAL_DIM: int = 32  # the temporal state is separate, never concatenated

#: one colour per block, in block order (HTML views and PNG plots alike): 16 hues at least 25 CIE76
#: units apart; the five strongest SVD blocks (I, D, R1, R2, K) get the most saturated ones
BLOCK_COLORS: tuple[str, ...] = (
    "#e6194b", "#4363d8", "#3cb44b", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
    "#ffe119", "#469990", "#9a6324", "#800000", "#808000", "#000075", "#fabed4", "#dcbeff",
)

#: default weights for similarity from weighted named blocks (GraphConfig.block_weights)
DEFAULT_BLOCK_WEIGHTS: dict[str, float] = {"I": 0.5, "R2": 0.3, "K": 0.2}

_INDEX = {name: i for i, name in enumerate(BLOCK_NAMES)}


def block_index(name: str) -> int:
    """Position of block ``name`` in :data:`BLOCK_NAMES`; raises ``ValueError`` naming the valid names."""
    try:
        return _INDEX[name]
    except KeyError:
        raise ValueError(f"unknown block {name!r}; valid blocks are {list(BLOCK_NAMES)}") from None


def block_slice(name: str) -> slice:
    """Slice of the 64-d semantic state that holds block ``name``."""
    i = block_index(name)
    return slice(i * BLOCK_DIM, (i + 1) * BLOCK_DIM)
