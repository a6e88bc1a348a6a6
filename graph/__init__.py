"""Semantic graphs over token states (``sosm.graph``).

Entry points: :class:`GraphConfig` and :class:`GraphBuilder` (``build(states) -> SemanticGraph``);
the builder's steps as small functions (top-k, mutual filter, adaptive K, shortcuts, landmarks)
for composing one's own; conversions (PyG, networkx, masks, neighbour lists), files (JSON,
GraphML) and views (HTML, PNG). The block table lives in :mod:`sosm.common.blocks`.
"""
from .config import GraphConfig
from .types import EDGE_TYPES, STAGES, UNREACHABLE, SemanticGraph
from .adaptive import adaptive_k
from .builder import GraphBuilder
from .gate import TemporalGate
from .mutual import mutual_filter
from .sequential import sequential_edges
from .topk import dense_topk, streaming_topk
from .shortcuts import betweenness_shortcuts, fibonacci_shortcuts
from .landmarks import landmark_distances, random_walk_encoding, select_landmarks
from .convert import to_block_mask, to_dense_mask, to_neighbor_index, to_networkx, to_pyg
from .io import from_json, load_json, save_graphml, save_json, to_json
from .cache import GraphCache
from .view import format_summary, summary, to_html, to_png

__all__ = ["GraphConfig", "GraphBuilder", "SemanticGraph", "EDGE_TYPES", "STAGES", "UNREACHABLE",
           "TemporalGate", "adaptive_k", "dense_topk", "streaming_topk", "mutual_filter", "sequential_edges",
           "betweenness_shortcuts", "fibonacci_shortcuts", "landmark_distances", "random_walk_encoding",
           "select_landmarks", "to_block_mask", "to_dense_mask", "to_neighbor_index", "to_networkx", "to_pyg",
           "from_json", "load_json", "save_graphml", "save_json", "to_json", "GraphCache",
           "format_summary", "summary", "to_html", "to_png"]
