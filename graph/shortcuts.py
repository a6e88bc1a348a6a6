"""Shortcut edges: Fibonacci-distance hops and bridging shortcuts from betweenness centrality.

Both return ``LongTensor[2, E]`` over global node ids ``b * T + t`` (row 0 source j, the
key; row 1 target i, the query), sorted by (target, source), without self-loops,
duplicates, cross-sample edges or edges touching padded tokens (``padding_mask`` False).
In causal mode every edge has ``source position < target position`` and the edges into
query i depend only on positions ``<= i``.

Example:
    >>> from sosm.graph.shortcuts import fibonacci_shortcuts
    >>> fibonacci_shortcuts(1, 6, window=1, fibonacci_max=3, causal=True).tolist()  # hops 2 and 3
    [[0, 0, 1, 1, 2, 2, 3], [2, 3, 3, 4, 4, 5, 5]]
"""
from __future__ import annotations

from typing import Optional

import torch


def fibonacci_numbers(low: int, high: int) -> list[int]:
    """Distinct Fibonacci numbers F with ``low < F <= high`` (1, 2, 3, 5, 8, ...)."""
    out, a, b = [], 1, 2
    while a <= high:
        if a > low:
            out.append(a)
        a, b = b, a + b
    return out


def _check_common(batch_size: int, seq_len: int, padding_mask: Optional[torch.Tensor]) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is invalid; accepted: an int >= 1")
    if not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"seq_len={seq_len!r} is invalid; accepted: an int >= 1")
    if padding_mask is not None:
        if padding_mask.dtype != torch.bool or tuple(padding_mask.shape) != (batch_size, seq_len):
            raise TypeError(f"padding_mask must be BoolTensor[{batch_size}, {seq_len}], got "
                            f"{tuple(padding_mask.shape)} {padding_mask.dtype}")


def _sort_unique(src: torch.Tensor, dst: torch.Tensor, num_nodes: int) -> torch.Tensor:
    key = torch.unique(dst * num_nodes + src)  # sorted by (target, source), duplicates removed
    return torch.stack([key % num_nodes, key // num_nodes])


def fibonacci_shortcuts(batch_size: int, seq_len: int, window: int, fibonacci_max: int, causal: bool,
                        padding_mask: Optional[torch.Tensor] = None, device=None) -> torch.Tensor:
    """Edges ``j = i - F`` for every Fibonacci ``F`` with ``window < F <= fibonacci_max``.

    Bidirectional mode adds ``j = i + F`` as well. Content-independent, hence causal-safe.

    Args:
        batch_size, seq_len: B and T.
        window: sequential window already covered by window edges (offsets ``<= window`` skipped).
        fibonacci_max: largest hop distance (``>= 2``).
        causal: only backward hops (``j < i``) when True.
        padding_mask: optional ``BoolTensor[B, T]``, True for real tokens.

    Returns:
        ``LongTensor[2, E]`` sorted by (target, source).

    Example:
        >>> fibonacci_shortcuts(1, 5, window=1, fibonacci_max=8, causal=False).tolist()  # hops 2, 3, 5
        [[2, 3, 3, 4, 0, 4, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]]
    """
    _check_common(batch_size, seq_len, padding_mask)
    if not isinstance(window, int) or window < 0:
        raise ValueError(f"window={window!r} is invalid; accepted: an int >= 0")
    if not isinstance(fibonacci_max, int) or fibonacci_max < 2:
        raise ValueError(f"fibonacci_max={fibonacci_max!r} is invalid; accepted: an int >= 2")
    device = padding_mask.device if (device is None and padding_mask is not None) else device
    hops = torch.tensor(fibonacci_numbers(window, fibonacci_max), dtype=torch.long, device=device)
    offsets = -hops if causal else torch.cat([-hops, hops])  # source = target + offset
    target = torch.arange(seq_len, device=device)[:, None].expand(-1, offsets.numel())
    source = target + offsets[None, :]
    ok = (source >= 0) & (source < seq_len)
    src, dst = source[ok], target[ok]
    base = torch.arange(batch_size, device=device)[:, None] * seq_len
    src, dst = (base + src[None]).reshape(-1), (base + dst[None]).reshape(-1)
    if padding_mask is not None:
        real = padding_mask.reshape(-1).to(src.device)
        keep = real[src] & real[dst]
        src, dst = src[keep], dst[keep]
    return _sort_unique(src, dst, batch_size * seq_len)


def _top_hubs(positions: list[int], edges: list[tuple[int, int]], num_hubs: int, samples: Optional[int],
              seed: int) -> list[int]:
    """Top ``num_hubs`` positions by betweenness on the undirected graph (ties: lower position)."""
    import networkx as nx

    graph = nx.Graph()
    graph.add_nodes_from(positions)
    graph.add_edges_from(edges)
    n = graph.number_of_nodes()
    if n == 0:
        return []
    k = samples if (samples is not None and samples < n) else None
    centrality = nx.betweenness_centrality(graph, k=k, seed=seed if k is not None else None)
    ranked = sorted(positions, key=lambda p: (-centrality[p], p))
    return ranked[:num_hubs]


def betweenness_shortcuts(edge_index: torch.Tensor, batch_size: int, seq_len: int, num_hubs: int, chunk: int,
                          samples: Optional[int], seed: int, causal: bool,
                          padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Bridging shortcuts to/from the nodes of highest betweenness centrality.

    Betweenness is computed by networkx on the *undirected* view of the token edges of one
    sample (memory edges, i.e. sources ``>= B*T``, and padded tokens are ignored), exactly
    when the graph has at most ``samples`` nodes (or ``samples`` is None), else with
    ``k=samples`` sampled pivots and ``seed`` (deterministic). Hubs are the ``num_hubs``
    highest-scoring positions, ties to the lower position.

    Rules:
        - bidirectional (``causal=False``): one hub set per sample from the whole sample;
          every real node gets an edge from and an edge to every hub (hubs are linked to each
          other too). ``chunk`` is unused.
        - causal: the sample is split into chunks of ``chunk`` positions. The hubs of chunk c
          are chosen on the graph induced by positions ``< min((c + 1) * chunk, T)`` (only
          edges among those nodes). Every query in a later chunk ``c' > c`` gets an edge
          from each hub of chunk c (the union over all earlier chunks, deduplicated). Since a
          hub of chunk c lies before the end of chunk c, ``source < target`` always, and the
          edges into query i depend only on edges among positions ``< start of i's chunk <= i``.

    Args:
        edge_index: ``LongTensor[2, E]`` current graph (row 0 source, row 1 target).
        batch_size, seq_len: B and T.
        num_hubs: hubs per sample (bidirectional) or per chunk (causal), ``>= 0``.
        chunk: positions per chunk (causal), ``>= 1``.
        samples: networkx pivot count for large graphs, or None for exact.
        seed: seed of the pivot sampling.
        causal: see Rules.
        padding_mask: optional ``BoolTensor[B, T]``, True for real tokens.

    Returns:
        ``LongTensor[2, E']`` sorted by (target, source); syncs to host (networkx runs on CPU).

    Example:
        >>> import torch
        >>> star = torch.tensor([[0, 0, 0, 1, 2, 3], [1, 2, 3, 0, 0, 0]])  # node 0 is the hub
        >>> betweenness_shortcuts(star, 1, 5, num_hubs=1, chunk=4, samples=None, seed=0, causal=False).tolist()
        [[1, 2, 3, 4, 0, 0, 0, 0], [0, 0, 0, 0, 1, 2, 3, 4]]
    """
    _check_common(batch_size, seq_len, padding_mask)
    if edge_index.dim() != 2 or edge_index.shape[0] != 2 or edge_index.dtype != torch.long:
        raise TypeError(f"edge_index must be LongTensor[2, E], got {tuple(edge_index.shape)} {edge_index.dtype}")
    if not isinstance(num_hubs, int) or num_hubs < 0:
        raise ValueError(f"num_hubs={num_hubs!r} is invalid; accepted: an int >= 0")
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk={chunk!r} is invalid; accepted: an int >= 1")
    if samples is not None and (not isinstance(samples, int) or samples < 1):
        raise ValueError(f"samples={samples!r} is invalid; accepted: None or an int >= 1")
    device = edge_index.device
    N = batch_size * seq_len
    empty = torch.empty(2, 0, dtype=torch.long, device=device)
    if num_hubs == 0:
        return empty
    ei = edge_index.cpu()
    ei = ei[:, (ei[0] < N) & (ei[1] < N) & (ei[0] != ei[1])]
    real = torch.ones(N, dtype=torch.bool) if padding_mask is None else padding_mask.cpu().reshape(-1)
    ei = ei[:, real[ei[0]] & real[ei[1]]]
    sample_of = ei[1] // seq_len
    src_all, dst_all = [], []
    for b in range(batch_size):
        pos = (ei[:, sample_of == b] - b * seq_len)
        pos_real = real[b * seq_len:(b + 1) * seq_len].nonzero().flatten().tolist()
        if causal:
            src, dst = _causal_chunks(pos, pos_real, seq_len, num_hubs, chunk, samples, seed)
        else:
            src, dst = _bidirectional(pos, pos_real, num_hubs, samples, seed)
        src_all.append(src + b * seq_len)
        dst_all.append(dst + b * seq_len)
    src, dst = torch.cat(src_all), torch.cat(dst_all)
    keep = (src != dst) & real[src] & real[dst]
    if not keep.any():
        return empty
    return _sort_unique(src[keep], dst[keep], N).to(device)


def _bidirectional(pos: torch.Tensor, pos_real: list[int], num_hubs: int, samples, seed):
    hubs = torch.tensor(_top_hubs(pos_real, list(zip(pos[0].tolist(), pos[1].tolist())), num_hubs, samples, seed),
                        dtype=torch.long)
    nodes = torch.tensor(pos_real, dtype=torch.long)
    h, n = hubs.repeat_interleave(nodes.numel()), nodes.repeat(hubs.numel())
    return torch.cat([h, n]), torch.cat([n, h])


def _causal_chunks(pos: torch.Tensor, pos_real: list[int], seq_len: int, num_hubs: int, chunk: int, samples, seed):
    src, dst = [], []
    real = torch.zeros(seq_len, dtype=torch.bool)
    real[pos_real] = True
    hubs_so_far: set[int] = set()
    for start in range(0, seq_len, chunk):
        end = min(start + chunk, seq_len)
        if hubs_so_far:
            queries = torch.arange(start, end)[real[start:end]]
            hubs = torch.tensor(sorted(hubs_so_far), dtype=torch.long)
            src.append(hubs.repeat(queries.numel()))
            dst.append(queries.repeat_interleave(hubs.numel()))
        if end >= seq_len:
            break
        inside = (pos[0] < end) & (pos[1] < end)
        edges = list(zip(pos[0][inside].tolist(), pos[1][inside].tolist()))
        hubs_so_far.update(_top_hubs([p for p in pos_real if p < end], edges, num_hubs, samples, seed))
    if not src:
        return torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
    return torch.cat(src), torch.cat(dst)
