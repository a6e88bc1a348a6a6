"""`integrate_into_graph`: add ``memory``-typed edges from retrieved memory entries to tokens.

Memory nodes. The returned graph numbers the retrieved entries ``m = 0, 1, ...`` in order
of first appearance (by target node, then rank); entries already on the input graph keep
their m and stores one dict
per memory node in ``graph.memory_meta``::

    {"memory_id": int, "position": int | None, "document": ..., "offset": ...,
     "max_similarity": float, "metadata": dict}

(``document``/``offset`` are copied from the entry's metadata, None when absent). A memory
edge has source ``B * T + m`` and target ``b * T + t``; its states are
``memory.get_states([meta["memory_id"] for meta in graph.memory_meta])``
(:func:`memory_node_states`).

Causality. ``positions`` gives each token's position in the global stream that memory
write positions refer to (an int offset ``o`` meaning token t is at ``o + t`` in every
sample, a LongTensor[T], or a LongTensor[B, T]). In causal mode token (b, t) retrieves
only entries written at positions ``p < positions[b, t]``; ``positions`` is then required.

Provenance of a memory edge: ``similarity`` and ``edge_weight`` are the retrieval
similarity (cosine for a cosine memory), ``gate_score`` NaN, ``stage`` "memory",
``edge_type`` "memory". When the memory dim is the 64-d semantic state,
``block_similarity[e, b]`` is the cosine of block b between the query state and the
memory state (eps 1e-8) and ``dominant_block`` its argmax; for any other dim both are 0.

Example:
    >>> import torch
    >>> from sosm.graph.types import SemanticGraph, empty_edge_columns
    >>> from sosm.memory import HNSWMemory, integrate_into_graph
    >>> mem = HNSWMemory(dim=64); x = torch.randn(1, 6, 64)
    >>> _ = mem.add(x[0], positions=torch.arange(6))
    >>> g = SemanticGraph(edge_index=torch.zeros(2, 0, dtype=torch.long), batch_size=1, seq_len=6,
    ...                   **empty_edge_columns(0))
    >>> out = integrate_into_graph(g, x, mem, k=2, threshold=0.0, positions=6)
    >>> bool((out.edge_index[0] >= 6).all())
    True
"""
from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Optional, Union

import torch

from sosm.common.blocks import BLOCK_DIM, N_BLOCKS, SEMANTIC_DIM
from sosm.graph.types import EDGE_TYPE_ID, STAGE_ID, SemanticGraph

from ._checks import as_float_matrix, check_positive_int
from .hnsw import HNSWMemory


def integrate_into_graph(graph: SemanticGraph, states: torch.Tensor, memory: HNSWMemory, k: int,
                         threshold: float, *, causal: Optional[bool] = None,
                         positions: Union[None, int, torch.Tensor] = None) -> SemanticGraph:
    """A copy of ``graph`` with memory edges to every real token (the input is not modified).

    Args:
        graph: the token graph (B samples of T tokens).
        states: ``[B, T, memory.dim]`` query states (the semantic state for a 64-d memory).
        memory: the memory to retrieve from.
        k: entries retrieved per token (> 0); only those with similarity >= threshold become edges.
        threshold: minimum similarity of a memory edge.
        causal: default ``graph.causal``; True filters by write position (see module docstring).
        positions: stream position of each token (int offset, [T] or [B, T]); required if causal.

    A zero state retrieves nothing from a cosine memory (no direction; one ``RuntimeWarning``), as
    it gets no semantic edges from the graph builders.

    Returns:
        SemanticGraph with the new edges appended after the existing ones.
    """
    B, T = graph.batch_size, graph.seq_len
    if not isinstance(states, torch.Tensor) or states.dim() != 3 or tuple(states.shape[:2]) != (B, T):
        raise ValueError(f"states must be a tensor [B={B}, T={T}, {memory.dim}], got "
                         f"{tuple(states.shape) if isinstance(states, torch.Tensor) else type(states).__name__}")
    queries = as_float_matrix(states.reshape(B * T, -1), "states", memory.dim)
    k = check_positive_int(k, "k")
    causal = graph.causal if causal is None else bool(causal)
    limits = _token_positions(positions, B, T) if causal or positions is not None else None
    if causal and limits is None:
        raise ValueError("positions is required in causal mode: the stream position of each token "
                         "(int offset, LongTensor[T] or LongTensor[B, T]) so that only earlier memory entries are visible")
    real = torch.ones(B * T, dtype=torch.bool) if graph.padding_mask is None else graph.padding_mask.reshape(-1).cpu()
    if memory.space == "cosine":
        real = real & _with_direction(queries, real)
    rows = torch.nonzero(real).squeeze(1)
    result = memory.retrieve(queries[rows.numpy()], k, max_position=None if not causal else limits[rows])
    keep = (result.ids >= 0) & (result.similarities >= threshold)  # [R, k]
    query_row, slot = torch.nonzero(keep, as_tuple=True)
    memory_ids = result.ids[query_row, slot]
    similarity = result.similarities[query_row, slot]
    memory_states = result.states[query_row, slot]  # [E_new, dim]
    targets = rows[query_row]

    meta = [dict(m) for m in (graph.memory_meta or [])]
    node_of = {m["memory_id"]: i for i, m in enumerate(meta) if "memory_id" in m}
    node = []
    for q, s, mid, sim in zip(query_row.tolist(), slot.tolist(), memory_ids.tolist(), similarity.tolist()):
        if mid not in node_of:
            record = result.metadata[q][s]
            position = int(result.positions[q, s])
            node_of[mid] = len(meta)
            meta.append({"memory_id": mid, "position": None if position < 0 else position,
                         "document": record.get("document"), "offset": record.get("offset"),
                         "max_similarity": sim, "metadata": record})
        entry = meta[node_of[mid]]
        entry["max_similarity"] = max(entry.get("max_similarity", float("-inf")), sim)
        node.append(node_of[mid])

    device = graph.device
    sources = B * T + torch.tensor(node, dtype=torch.long)
    fresh = _not_in_graph(graph, sources, targets)  # a second integration: one edge per (entry, token)
    sources, targets, similarity, memory_states = sources[fresh], targets[fresh], similarity[fresh], memory_states[fresh]
    n_new = sources.numel()
    block_sim = _block_cosine(states.reshape(B * T, -1)[targets].float().cpu(), memory_states) \
        if memory.dim == SEMANTIC_DIM else torch.zeros(n_new, N_BLOCKS)
    new = {
        "edge_index": torch.stack([sources, targets]),
        "edge_type": torch.full((n_new,), EDGE_TYPE_ID["memory"], dtype=torch.long),
        "edge_weight": similarity.clone(),
        "block_similarity": block_sim,
        "dominant_block": block_sim.argmax(dim=1) if memory.dim == SEMANTIC_DIM and n_new else torch.zeros(n_new, dtype=torch.long),
        "similarity": similarity.clone(),
        "gate_score": torch.full((n_new,), float("nan")),
        "stage": torch.full((n_new,), STAGE_ID["memory"], dtype=torch.long),
    }
    merged = {}
    for name, column in new.items():
        old = getattr(graph, name)
        merged[name] = torch.cat([old, column.to(device=device, dtype=old.dtype)], dim=-1 if name == "edge_index" else 0)
    return replace(graph, **merged, memory_meta=meta).validate()


def _not_in_graph(graph: SemanticGraph, sources: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """BoolTensor[E_new]: True for the (source, target) pairs the graph does not hold yet."""
    old_src, old_dst = graph.edge_index.cpu()
    if old_src.numel() == 0 or sources.numel() == 0:
        return torch.ones(sources.numel(), dtype=torch.bool)
    span = int(max(int(old_src.max()), int(sources.max()))) + 1
    return ~torch.isin(targets * span + sources, old_dst * span + old_src)


def _with_direction(queries, real: torch.Tensor) -> torch.Tensor:
    """BoolTensor[N]: False for the zero states among the real rows (one warning): they retrieve nothing.

    The rule of the graph builders (``sosm.common.features.has_direction``): a zero vector has no
    direction, so it gets no similarity edges, memory edges included.
    """
    direction = torch.from_numpy(queries.any(axis=1))
    zero = int((real & ~direction).sum())
    if zero:
        warnings.warn(f"{zero} {'state is' if zero == 1 else 'states are'} zero (e.g. out-of-vocabulary text or "
                      f"zero tensors): a zero vector has no direction, so {'it gets' if zero == 1 else 'they get'} "
                      "no memory edges", RuntimeWarning, stacklevel=3)
    return direction


def memory_node_states(graph: SemanticGraph, memory: HNSWMemory) -> torch.Tensor:
    """States of the graph's memory nodes, ``FloatTensor[M, memory.dim]`` in node order m."""
    ids = [m["memory_id"] for m in (graph.memory_meta or [])]
    return memory.get_states(torch.tensor(ids, dtype=torch.long)) if ids else torch.zeros(0, memory.dim)


def _token_positions(positions, B: int, T: int) -> Optional[torch.Tensor]:
    """Stream position of each token as LongTensor[B * T] (None if ``positions`` is None)."""
    if positions is None:
        return None
    if isinstance(positions, int) and not isinstance(positions, bool):
        grid = positions + torch.arange(T).expand(B, T)
    elif isinstance(positions, torch.Tensor) and not positions.is_floating_point() and positions.dtype != torch.bool:
        if tuple(positions.shape) == (T,):
            grid = positions.expand(B, T)
        elif tuple(positions.shape) == (B, T):
            grid = positions
        else:
            raise ValueError(f"positions must be an int, LongTensor[T={T}] or LongTensor[B={B}, T={T}], got shape {tuple(positions.shape)}")
    else:
        raise TypeError(f"positions must be an int or an integer tensor ([T] or [B, T]), got {type(positions).__name__}"
                        + (f" {positions.dtype}" if isinstance(positions, torch.Tensor) else ""))
    grid = grid.reshape(-1).long().cpu()
    if grid.numel() and grid.min() < 0:
        raise ValueError(f"positions must be >= 0, got minimum {int(grid.min())}")
    return grid


def _block_cosine(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Per-block cosine [E, 16] of query states [E, 64] against memory states [E, 64]."""
    q = queries.reshape(-1, N_BLOCKS, BLOCK_DIM)
    m = keys.reshape(-1, N_BLOCKS, BLOCK_DIM)
    return (q * m).sum(-1) / (q.norm(dim=-1).clamp_min(1e-8) * m.norm(dim=-1).clamp_min(1e-8))
