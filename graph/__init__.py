"""Semantic graphs over token states (``sosm.graph``)."""
from .blocks import BLOCK_NAMES, BLOCK_DIM, N_BLOCKS, SEMANTIC_DIM, TEMPORAL_DIM, block_index, block_slice
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

__all__ = ["BLOCK_NAMES", "BLOCK_DIM", "N_BLOCKS", "SEMANTIC_DIM", "TEMPORAL_DIM", "block_index", "block_slice",
           "GraphConfig", "EDGE_TYPES", "STAGES", "UNREACHABLE", "SemanticGraph",
           "GraphBuilder", "TemporalGate", "adaptive_k", "block_entropy", "block_similarity", "dense_topk",
           "featurize", "gated_acceptance", "mutual_filter", "pair_scores", "projection_matrix",
           "sequential_edges", "streaming_topk", "threshold_filter"]
