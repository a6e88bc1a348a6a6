"""Long-term HNSW memory of states (``sosm.memory``): :class:`HNSWMemory` (hnswlib index,
raw vectors, metadata, causal retrieval, atomic persistence) and
:func:`integrate_into_graph` (memory-typed edges on a :class:`~sosm.graph.SemanticGraph`).

Example:
    >>> import torch
    >>> from sosm.memory import HNSWMemory
    >>> mem = HNSWMemory(dim=64)
    >>> ids = mem.add(torch.randn(10, 64))
    >>> mem.retrieve(torch.randn(2, 64), k=3).ids.shape
    torch.Size([2, 3])
"""
from .edges import integrate_into_graph, memory_node_states
from .hnsw import HNSWMemory, RetrievalResult

__all__ = ["HNSWMemory", "RetrievalResult", "integrate_into_graph", "memory_node_states"]
