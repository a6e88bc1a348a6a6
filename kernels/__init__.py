"""Triton kernels with pure-PyTorch references beside them (``sosm.kernels``)."""

from .selective_scan import causal_conv1d, selective_scan, selective_state_update  # noqa: E402
from .topk_similarity import topk_similarity  # noqa: E402
from .graph_attention import GraphLayout, graph_attention  # noqa: E402
