"""Long-term HNSW memory of states (``sosm.memory``)."""
