"""Edge provenance statistics of a :class:`~sosm.graph.types.SemanticGraph` and the attention mass per edge type.

:func:`provenance_report` summarises, over the real positions of a graph:

- per edge type: count, similarity distribution (mean, std, quantiles, histogram), stages;
- per dominant MU block (semantic and shortcut edges): count and mean similarity;
- degree distributions: in-degree (neighbours per query) and out-degree (how often a token is
  attended to), and the hub tokens (largest out-degree) with their labels;
- when attention probabilities are given (``DePassResult.attention``): the attention mass each
  edge type (and ``self``) receives per layer, averaged over queries and heads.

Everything in the result is plain Python (JSON-serialisable).

Example:
    >>> from sosm.graph import GraphBuilder, GraphConfig
    >>> graph = GraphBuilder(GraphConfig(k=2, window=1)).build(torch.randn(1, 12, 64))
    >>> report = provenance_report(graph)
    >>> report["edge_types"]["sequential"]["count"]
    11
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from ..common.blocks import BLOCK_NAMES
from ..graph.types import EDGE_TYPES, STAGES, SemanticGraph
from .depass import edge_type_map

HIST_BINS = 20


def _distribution(values: torch.Tensor, low: float = -1.0, high: float = 1.0) -> dict:
    values = values.float()
    values = values[torch.isfinite(values)]
    if values.numel() == 0:
        return {"n": 0}
    q = torch.quantile(values, torch.tensor([0.1, 0.5, 0.9]))
    hist = torch.histc(values, bins=HIST_BINS, min=low, max=high)
    return {"n": int(values.numel()), "mean": float(values.mean()), "std": float(values.std(unbiased=False)),
            "min": float(values.min()), "p10": float(q[0]), "median": float(q[1]), "p90": float(q[2]),
            "max": float(values.max()), "hist": hist.long().tolist(), "hist_range": [low, high]}


def real_token_edges(graph: SemanticGraph, seq_len: Optional[int] = None) -> torch.Tensor:
    """BoolTensor[E]: token-to-token edges whose endpoints both lie in the first ``seq_len`` positions."""
    frame = graph.seq_len
    T = frame if seq_len is None else seq_len
    src, dst = graph.edge_index
    return (src < graph.num_nodes) & (src % frame < T) & (dst % frame < T)


def provenance_report(graph: SemanticGraph, tokens: Optional[Sequence[str]] = None, seq_len: Optional[int] = None,
                      attention: Optional[list] = None, hubs: int = 10) -> dict:
    """Provenance statistics of ``graph`` (see the module docstring).

    Args:
        graph: the ``SemanticGraph`` (e.g. ``State.graph``; frame padding rows are excluded via ``seq_len``).
        tokens: display labels of sample 0's positions (for hub tokens); default ``"#t"``.
        seq_len: real length T (default: the graph's whole frame).
        attention: ``[(layer index, probs [B, H, T, T])]`` from :class:`DePassResult` (optional).
        hubs: number of hub tokens to list (>= 0).

    Returns:
        dict with keys ``edge_types``, ``dominant_blocks``, ``degree``, ``hubs``, ``attention_mass``.
    """
    if not isinstance(graph, SemanticGraph):
        raise TypeError(f"graph must be a SemanticGraph, got {type(graph).__name__}")
    if not isinstance(hubs, int) or hubs < 0:
        raise ValueError(f"hubs={hubs!r} is invalid; accepted: an int >= 0")
    frame = graph.seq_len
    T = frame if seq_len is None else seq_len
    if not 1 <= T <= frame:
        raise ValueError(f"seq_len={seq_len} is invalid; accepted: 1..{frame} (the graph's frame)")
    keep = real_token_edges(graph, T)
    g = graph.select(keep)
    src, dst = g.edge_index
    report: dict = {"num_edges": g.num_edges, "batch_size": graph.batch_size, "seq_len": T, "edge_types": {},
                    "dominant_blocks": {}}
    for type_id, name in enumerate(EDGE_TYPES):
        sel = g.edge_type == type_id
        stages = torch.bincount(g.stage[sel], minlength=len(STAGES)).tolist() if sel.any() else [0] * len(STAGES)
        report["edge_types"][name] = {"count": int(sel.sum()), "similarity": _distribution(g.similarity[sel]),
                                      "stages": {s: c for s, c in zip(STAGES, stages) if c},
                                      "hop_length": _distribution((dst[sel] - src[sel]).float(), 0.0, float(T))}
    informative = g.edge_type != EDGE_TYPES.index("sequential")
    for block_id, name in enumerate(BLOCK_NAMES):
        sel = informative & (g.dominant_block == block_id)
        if sel.any():
            report["dominant_blocks"][name] = {"count": int(sel.sum()), "mean_similarity": float(g.similarity[sel].mean())}
    in_deg = torch.bincount(dst, minlength=graph.num_nodes).view(graph.batch_size, frame)[:, :T]
    out_deg = torch.bincount(src, minlength=graph.num_nodes).view(graph.batch_size, frame)[:, :T]
    report["degree"] = {"in": _degree_summary(in_deg), "out": _degree_summary(out_deg)}
    labels = list(tokens) if tokens is not None else [f"#{t}" for t in range(T)]
    order = out_deg[0].argsort(descending=True, stable=True)[:hubs].tolist()
    report["hubs"] = [{"position": t, "token": labels[t] if t < len(labels) else f"#{t}",
                       "out_degree": int(out_deg[0, t]), "in_degree": int(in_deg[0, t])} for t in order]
    report["attention_mass"] = attention_mass(graph, attention, T) if attention else []
    return report


def _degree_summary(degrees: torch.Tensor) -> dict:
    flat = degrees.reshape(-1)
    return {"mean": float(flat.float().mean()), "max": int(flat.max()),
            "counts": torch.bincount(flat).tolist()}  # counts[k] = number of tokens with degree k


def attention_mass(graph: SemanticGraph, attention: list, seq_len: int) -> list:
    """``[{"layer", "self", <edge type>: mass}]``: mean over queries and heads of the probability on each key type."""
    types, names = edge_type_map(graph, graph.batch_size, seq_len)
    eye = torch.eye(seq_len, dtype=torch.bool)
    rows = []
    for layer, probs in attention:
        probs = probs.float().cpu()  # [B, H, T, T]
        row = {"layer": layer, "self": float((probs * eye).sum(-1).mean())}
        for type_id, name in enumerate(names):
            row[name] = float((probs * (types == type_id)[:, None]).sum(-1).mean())
        rows.append(row)
    return rows
