"""Triton kernels with pure-PyTorch references beside them (``sosm.kernels``).

Each op is a folder (``reference.py`` beside the Triton kernel) with one dispatching entry point:
CUDA runs Triton, the CPU a native C loop or a vectorised PyTorch path (docs/CONTRACTS.md).
This room imports nothing of ours but the leaf ``sosm.common``.
"""
from .graph_attention import GraphLayout, graph_attention
from .selective_scan import causal_conv1d, causal_conv1d_update, selective_scan, selective_state_update
from .topk_similarity import topk_similarity

__all__ = ["graph_attention", "GraphLayout", "selective_scan", "selective_state_update", "causal_conv1d",
           "causal_conv1d_update", "topk_similarity"]
