"""Semantic graphs over token states (``sosm.graph``)."""
from ..common.blocks import BLOCK_NAMES, BLOCK_DIM, N_BLOCKS, SEMANTIC_DIM, TEMPORAL_DIM, block_index, block_slice
from .config import GraphConfig
from .types import EDGE_TYPES, STAGES, UNREACHABLE, SemanticGraph
from .adaptive import adaptive_k, block_entropy
from .builder import GraphBuilder
from .filters import gated_acceptance, threshold_filter
from .gate import TemporalGate
from .mutual import mutual_filter
from .sequential import sequential_edges
from .similarity import block_similarity, featurize, pair_scores, projection_matrix
from .topk import dense_topk, streaming_topk
from .shortcuts import betweenness_shortcuts, fibonacci_shortcuts
from .landmarks import landmark_distance_bounds, landmark_distances, random_walk_encoding, select_landmarks
from .convert import to_block_mask, to_dense_mask, to_neighbor_index, to_networkx, to_pyg
from .io import from_json, load_json, save_graphml, save_json, to_json
from .cache import GraphCache
from .view import format_summary, summary, to_html, to_png

__all__ = ["BLOCK_NAMES", "BLOCK_DIM", "N_BLOCKS", "SEMANTIC_DIM", "TEMPORAL_DIM", "block_index", "block_slice",
           "GraphConfig", "EDGE_TYPES", "STAGES", "UNREACHABLE", "SemanticGraph",
           "GraphBuilder", "TemporalGate", "adaptive_k", "block_entropy", "block_similarity", "dense_topk",
           "featurize", "gated_acceptance", "mutual_filter", "pair_scores", "projection_matrix",
           "sequential_edges", "streaming_topk", "threshold_filter",
           "betweenness_shortcuts", "fibonacci_shortcuts", "landmark_distance_bounds", "landmark_distances",
           "random_walk_encoding", "select_landmarks", "to_block_mask", "to_dense_mask", "to_neighbor_index",
           "to_networkx", "to_pyg", "from_json", "load_json", "save_graphml", "save_json", "to_json",
           "GraphCache", "format_summary", "summary", "to_html", "to_png"]
