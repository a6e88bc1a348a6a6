"""Conversions of a :class:`SemanticGraph`: PyG ``Data``, networkx, dense mask, neighbour index, BlockMask.

Every conversion copies; the caller's graph is never modified. Only token-to-token edges
enter the masks and the neighbour index (memory keys travel separately, docs/CONTRACTS.md).

Example:
    >>> import torch
    >>> from sosm.graph.types import SemanticGraph, empty_edge_columns
    >>> from sosm.graph.convert import to_dense_mask, to_neighbor_index
    >>> g = SemanticGraph(edge_index=torch.tensor([[0, 0, 1], [1, 2, 2]]), **empty_edge_columns(3),
    ...                   batch_size=1, seq_len=3)
    >>> to_neighbor_index(g)[0].tolist()
    [[-1, -1], [0, -1], [0, 1]]
    >>> to_dense_mask(g, include_self=False)[0].int().tolist()
    [[0, 0, 0], [1, 0, 0], [1, 1, 0]]
"""
from __future__ import annotations

import math

import torch

from ..common.blocks import BLOCK_NAMES
from .types import EDGE_TYPES, STAGES, SemanticGraph


def _check_graph(graph) -> None:
    if not isinstance(graph, SemanticGraph):
        raise TypeError(f"graph must be a SemanticGraph, got {type(graph).__name__}")


def _token_edges(graph: SemanticGraph) -> torch.Tensor:
    ei = graph.edge_index
    return ei[:, (ei[0] < graph.num_nodes) & (ei[1] < graph.num_nodes)]


def node_label(graph: SemanticGraph, node: int) -> str:
    """Display label of global node ``node``: its token string, or ``"t<position>"``/``"mem<m>"``."""
    if node >= graph.num_nodes:
        return f"mem{node - graph.num_nodes}"
    b, t = divmod(node, graph.seq_len)
    if graph.tokens is not None and b < len(graph.tokens) and t < len(graph.tokens[b]):
        return str(graph.tokens[b][t])
    return f"t{t}"


def to_pyg(graph: SemanticGraph):
    """``torch_geometric.data.Data`` with the edges, their attributes and provenance (copies).

    Fields: ``edge_index [2, E]``, ``edge_type``, ``edge_weight``, ``edge_attr`` (= per-block
    similarity ``[E, 16]``), ``similarity``, ``dominant_block``, ``gate_score``, ``stage``,
    ``batch [N]`` (sample of each node), ``pos_in_sample [N]``, ``num_nodes`` (token nodes plus
    memory sources), and when present ``padding_mask``, ``landmarks``, ``landmark_distances``,
    ``tokens``; ``batch_size``, ``seq_len``, ``causal`` as plain attributes.
    """
    from torch_geometric.data import Data

    _check_graph(graph)
    N, T = graph.num_nodes, graph.seq_len
    num_nodes = max(N, int(graph.edge_index[0].max()) + 1) if graph.num_edges else N
    node = torch.arange(num_nodes, device=graph.device)
    data = Data(edge_index=graph.edge_index.clone(), edge_type=graph.edge_type.clone(),
                edge_weight=graph.edge_weight.detach().clone(), edge_attr=graph.block_similarity.clone(),
                similarity=graph.similarity.clone(), dominant_block=graph.dominant_block.clone(),
                gate_score=graph.gate_score.clone(), stage=graph.stage.clone(),
                batch=torch.where(node < N, node // T, -1), pos_in_sample=torch.where(node < N, node % T, -1),
                num_nodes=num_nodes)
    data.batch_size, data.seq_len, data.causal = graph.batch_size, T, graph.causal
    for name in ("padding_mask", "landmarks", "landmark_distances"):
        value = getattr(graph, name)
        if value is not None:
            data[name] = value.clone()
    if graph.tokens is not None:
        data.tokens = [list(row) for row in graph.tokens]
    return data


def to_networkx(graph: SemanticGraph):
    """``networkx.DiGraph`` (edge j -> i as in ``edge_index``) with readable attributes.

    Node attributes: ``sample``, ``position``, ``label``, ``kind`` (``"token"``/``"memory"``),
    ``padded``. Edge attributes: ``type``, ``weight``, ``similarity``, ``dominant_block``
    (block name), ``stage`` (stage name), ``gate`` (float, NaN where no gate ran).
    """
    import networkx as nx

    _check_graph(graph)
    N, T = graph.num_nodes, graph.seq_len
    out = nx.DiGraph(batch_size=graph.batch_size, seq_len=T, causal=graph.causal)
    real = None if graph.padding_mask is None else graph.padding_mask.reshape(-1).tolist()
    for node in range(N):
        out.add_node(node, sample=node // T, position=node % T, label=node_label(graph, node), kind="token",
                     padded=bool(real is not None and not real[node]))
    src, dst = graph.edge_index.tolist()
    for s in sorted({s for s in src if s >= N}):
        out.add_node(s, sample=-1, position=-1, label=node_label(graph, s), kind="memory", padded=False)
    cols = zip(src, dst, graph.edge_type.tolist(), graph.edge_weight.detach().tolist(), graph.similarity.tolist(),
               graph.dominant_block.tolist(), graph.stage.tolist(), graph.gate_score.tolist())
    for s, d, kind, weight, sim, block, stage, gate in cols:
        out.add_edge(s, d, type=EDGE_TYPES[kind], weight=float(weight), similarity=float(sim),
                     dominant_block=BLOCK_NAMES[block], stage=STAGES[stage],
                     gate=float("nan") if math.isnan(gate) else float(gate))
    return out


def to_dense_mask(graph: SemanticGraph, include_self: bool = True) -> torch.Tensor:
    """``BoolTensor[B, T, T]``: ``mask[b, i, j]`` True iff query i may attend to key j.

    True for every stored token edge j -> i, plus the diagonal when ``include_self`` (attention
    always adds self; every row then has at least one key). O(B * T^2) memory: for tests and
    small graphs.
    """
    _check_graph(graph)
    B, T = graph.batch_size, graph.seq_len
    mask = torch.zeros(B * T, T, dtype=torch.bool, device=graph.device)
    ei = _token_edges(graph)
    mask[ei[1], ei[0] % T] = True
    mask = mask.reshape(B, T, T)
    if include_self:
        mask |= torch.eye(T, dtype=torch.bool, device=graph.device)
    return mask


def to_neighbor_index(graph: SemanticGraph) -> torch.Tensor:
    """``LongTensor[B, T, Kn]``: key positions (ascending) of each query's incoming token edges, ``-1`` padded.

    Self is not included and memory edges are left out (docs/CONTRACTS.md). ``Kn`` is the largest
    in-degree (0 when there are no token edges). Syncs host and device once (to size ``Kn``).
    """
    _check_graph(graph)
    B, T, N = graph.batch_size, graph.seq_len, graph.num_nodes
    ei = _token_edges(graph)
    key = torch.unique(ei[1] * N + ei[0])  # sorted by (query, key), duplicates dropped
    dst, src = key // N, key % N
    counts = torch.bincount(dst, minlength=N)
    width = int(counts.max()) if dst.numel() else 0
    rank = torch.arange(dst.numel(), device=dst.device) - (torch.cumsum(counts, 0) - counts)[dst]
    out = torch.full((N, width), -1, dtype=torch.long, device=graph.device)
    out[dst, rank] = src % T
    return out.reshape(B, T, width)


def to_block_mask(graph: SemanticGraph, block_size: int = 128):
    """FlexAttention ``BlockMask`` equal to :func:`to_dense_mask` (self included), heads broadcast.

    The ``mask_mod`` reads a dense ``[B, T, T]`` adjacency, so memory is O(B * T^2) bits.

    Example:
        >>> import torch
        >>> from sosm.graph.types import SemanticGraph, empty_edge_columns
        >>> g = SemanticGraph(edge_index=torch.tensor([[0], [1]]), **empty_edge_columns(1), batch_size=1, seq_len=2)
        >>> to_block_mask(g, block_size=128).shape
        (1, 1, 2, 2)
    """
    from torch.nn.attention.flex_attention import create_block_mask

    _check_graph(graph)
    if not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size={block_size!r} is invalid; accepted: an int >= 1 (FlexAttention uses 128)")
    dense = to_dense_mask(graph, include_self=True)

    def mask_mod(b, h, q_idx, kv_idx):
        return dense[b, q_idx, kv_idx]

    T = graph.seq_len
    return create_block_mask(mask_mod, graph.batch_size, None, T, T, device=str(graph.device), BLOCK_SIZE=block_size)
