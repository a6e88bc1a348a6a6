"""Semantic graphs over token states (``sosm.graph``)."""
from .blocks import BLOCK_NAMES, BLOCK_DIM, N_BLOCKS, SEMANTIC_DIM, TEMPORAL_DIM, block_index, block_slice
from .config import GraphConfig
from .types import EDGE_TYPES, STAGES, UNREACHABLE, SemanticGraph

__all__ = ["BLOCK_NAMES", "BLOCK_DIM", "N_BLOCKS", "SEMANTIC_DIM", "TEMPORAL_DIM", "block_index", "block_slice",
           "GraphConfig", "EDGE_TYPES", "STAGES", "UNREACHABLE", "SemanticGraph"]
