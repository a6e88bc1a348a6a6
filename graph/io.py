"""Graph files: JSON (round trip) and GraphML (via networkx). Every write is atomic.

JSON layout (``format: "sosm.semantic_graph"``, ``version: 1``)::

    {"format", "version",
     "meta": {"batch_size", "seq_len", "causal", "num_nodes", "num_edges", "block_names",
              "edge_types", "stages", "landmarks" ([B][L] or null), "landmark_distances" ([B][T][L] or null),
              "padding_mask" ([B][T] or null), "memory_meta"},
     "nodes": [{"id", "sample", "position", "label", "padded"}],           # one per token node b*T+t
     "edges": [{"source", "target", "type", "weight", "similarity", "dominant_block",
                "block_similarity": {block name: value}, "gate_score" (null where no gate ran),
                "stage"}]}

Example:
    >>> import torch, tempfile, os
    >>> from sosm.graph.types import SemanticGraph, empty_edge_columns
    >>> from sosm.graph.io import from_json, load_json, save_json, to_json
    >>> g = SemanticGraph(edge_index=torch.tensor([[0], [1]]), **empty_edge_columns(1), batch_size=1, seq_len=2)
    >>> to_json(g)["edges"][0]["type"]
    'sequential'
    >>> path = save_json(g, os.path.join(tempfile.mkdtemp(), "g.json"))
    >>> load_json(path).edge_index.tolist()
    [[0], [1]]
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Union

import torch

from ..common.blocks import BLOCK_NAMES, N_BLOCKS
from ..common.files import atomic_write
from .convert import node_label, to_networkx
from .types import EDGE_TYPE_ID, EDGE_TYPES, STAGE_ID, STAGES, SemanticGraph

FORMAT = "sosm.semantic_graph"
VERSION = 1


def _float(value: float):
    return None if math.isnan(value) else float(value)


def to_json(graph: SemanticGraph) -> dict:
    """The graph as a JSON-ready ``dict`` (see the module docstring); NaN becomes ``null``."""
    if not isinstance(graph, SemanticGraph):
        raise TypeError(f"graph must be a SemanticGraph, got {type(graph).__name__}")
    B, T, N = graph.batch_size, graph.seq_len, graph.num_nodes
    real = None if graph.padding_mask is None else graph.padding_mask.reshape(-1).tolist()
    nodes = [{"id": n, "sample": n // T, "position": n % T, "label": node_label(graph, n),
              "padded": bool(real is not None and not real[n])} for n in range(N)]
    src, dst = graph.edge_index.tolist()
    blocks = graph.block_similarity.tolist()
    cols = zip(src, dst, graph.edge_type.tolist(), graph.edge_weight.detach().tolist(), graph.similarity.tolist(),
               graph.dominant_block.tolist(), blocks, graph.gate_score.tolist(), graph.stage.tolist())
    edges = [{"source": s, "target": d, "type": EDGE_TYPES[k], "weight": _float(w), "similarity": _float(sim),
              "dominant_block": BLOCK_NAMES[db], "block_similarity": dict(zip(BLOCK_NAMES, bs)),
              "gate_score": _float(g), "stage": STAGES[st]}
             for s, d, k, w, sim, db, bs, g, st in cols]

    def listed(t):
        return None if t is None else t.tolist()

    meta = {"batch_size": B, "seq_len": T, "causal": graph.causal, "num_nodes": N, "num_edges": graph.num_edges,
            "block_names": list(BLOCK_NAMES), "edge_types": list(EDGE_TYPES), "stages": list(STAGES),
            "landmarks": listed(graph.landmarks), "landmark_distances": listed(graph.landmark_distances),
            "padding_mask": listed(graph.padding_mask), "tokens": graph.tokens, "memory_meta": graph.memory_meta}
    return {"format": FORMAT, "version": VERSION, "meta": meta, "nodes": nodes, "edges": edges}


def from_json(data: dict) -> SemanticGraph:
    """Rebuild a :class:`SemanticGraph` from :func:`to_json` output, validated as strictly as a built graph.

    Raises ``ValueError`` on a foreign or malformed dict, and on any broken invariant
    (:meth:`SemanticGraph.validate`: node ids out of range, an edge across samples or from the
    future, a duplicate pair, NaN similarities, landmarks out of range, ...), naming the edge.
    """
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} document (format={data.get('format') if isinstance(data, dict) else None!r})")
    if data.get("version") != VERSION:
        raise ValueError(f"unsupported {FORMAT} version {data.get('version')!r}; accepted: {VERSION}")
    meta, edges = data["meta"], data["edges"]
    E = len(edges)

    def column(key, dtype, convert=lambda v: v):
        return torch.tensor([convert(e[key]) for e in edges], dtype=dtype).reshape(E)

    def nan(v):
        return float("nan") if v is None else v

    try:
        block_similarity = torch.tensor([[e["block_similarity"][b] for b in BLOCK_NAMES] for e in edges],
                                        dtype=torch.float32).reshape(E, N_BLOCKS)
        graph = SemanticGraph(
            edge_index=torch.tensor([[e["source"] for e in edges], [e["target"] for e in edges]],
                                    dtype=torch.long).reshape(2, E),
            edge_type=column("type", torch.long, EDGE_TYPE_ID.__getitem__),
            edge_weight=column("weight", torch.float32, nan),
            block_similarity=block_similarity,
            dominant_block=column("dominant_block", torch.long, BLOCK_NAMES.index),
            similarity=column("similarity", torch.float32, nan),
            gate_score=column("gate_score", torch.float32, nan),
            stage=column("stage", torch.long, STAGE_ID.__getitem__),
            batch_size=int(meta["batch_size"]), seq_len=int(meta["seq_len"]), causal=bool(meta["causal"]),
            padding_mask=None if meta.get("padding_mask") is None else torch.tensor(meta["padding_mask"], dtype=torch.bool),
            landmarks=None if meta.get("landmarks") is None else torch.tensor(meta["landmarks"], dtype=torch.long),
            landmark_distances=(None if meta.get("landmark_distances") is None
                                else torch.tensor(meta["landmark_distances"], dtype=torch.long)),
            tokens=meta.get("tokens"), memory_meta=meta.get("memory_meta"))
    except (KeyError, ValueError, TypeError, IndexError) as err:
        raise ValueError(f"malformed {FORMAT} document: {err!r}") from None
    graph.validate()  # every invariant a built graph keeps
    for key, have in (("num_nodes", graph.num_nodes), ("num_edges", graph.num_edges)):
        if key in meta and meta[key] != have:
            what = f"B*T = {have}" if key == "num_nodes" else f"{have} edges listed"
            raise ValueError(f"meta.{key} {meta[key]!r} disagrees with the document ({what})")
    return graph


def save_json(graph: SemanticGraph, path: Union[str, Path], indent: int = 1) -> Path:
    """Write :func:`to_json` to ``path`` atomically (temp file, fsync, rename); returns the path."""
    text = json.dumps(to_json(graph), indent=indent, allow_nan=False)
    return atomic_write(path, text)


def load_json(path: Union[str, Path]) -> SemanticGraph:
    """Read a graph written by :func:`save_json`; errors name the file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return from_json(data)
    except (json.JSONDecodeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from None


def save_graphml(graph: SemanticGraph, path: Union[str, Path]) -> Path:
    """Write the :func:`~sosm.graph.convert.to_networkx` view as GraphML atomically; returns the path."""
    import networkx as nx

    nxg = to_networkx(graph)
    nxg.graph.clear()
    nxg.graph.update(batch_size=graph.batch_size, seq_len=graph.seq_len, causal=graph.causal)
    return atomic_write(path, lambda handle: nx.write_graphml(nxg, handle))
