"""``LayerContext``: what every layer of one forward pass (or one decoding step) shares.

The model computes these once per forward (one graph, one kernel layout, one set of positions,
one structural encoding) and hands the same object to every layer of the stack.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class LayerContext:
    """Everything the layers share in one forward pass (or one decoding step).

    Args:
        angles: rotary angles ``[B or 1, T, head_dim/2]`` (None: no rotary positions).
        neighbors: ``[B, T, Kn]`` key positions of each query's graph neighbours, -1 padded
            (decoding: ``[B, 1, Kn]`` for the new token). None without a graph.
        layout: the kernels' ``GraphLayout`` of ``neighbors``, built once, shared by all layers.
        alibi_coords: ``[B, T, L]`` float landmark coordinates for Graph-ALiBi (decoding: the
            coordinates of positions ``0..t``), or None.
        structure: ``[B, T, S]`` structural encoding for Mamba's Δ (None: absent).
        position: decoding only: the index t of the new token.
        memory: a :class:`~sosm.model.memory_attention.ModelMemory` to read (None: no memory).
        memory_slots: ``[B, T, Km]`` memory ids of each query's memory edges, -1 padded.
        record_kv: when a list, each graph-attention layer appends its ``(k, v)`` ``[B, T, H, d]``
            (k before rotary positions, detached), in layer order, for writing into memory.
        semantic: ``[B, T, 64]`` the MU semantic state of the graph models' front end (16 blocks of 4;
            decoding: the new token's ``[B, 1, 64]``), read by multi-block attention heads; None without it.
    """

    angles: Optional[torch.Tensor] = None
    neighbors: Optional[torch.Tensor] = None
    layout: Optional[object] = None
    alibi_coords: Optional[torch.Tensor] = None
    structure: Optional[torch.Tensor] = None
    position: int = 0
    memory: Optional[object] = None
    memory_slots: Optional[torch.Tensor] = None
    record_kv: Optional[list] = None
    semantic: Optional[torch.Tensor] = None
