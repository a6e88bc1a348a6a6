"""Causal retrieval: an entry written at position p is visible to a query at i iff p < i."""
import numpy as np
import torch
from hypothesis import given, settings, strategies as st

from sosm.memory import HNSWMemory
from sosm.memory.hnsw import exact_similarity


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 80), n_queries=st.integers(1, 6), k=st.integers(1, 12), seed=st.integers(0, 2**16),
       exact_threshold=st.sampled_from([0, 4096]), per_query=st.booleans(), n_deleted=st.integers(0, 5))
def test_causal_retrieval_never_returns_entries_at_or_after_the_query(n, n_queries, k, seed, exact_threshold,
                                                                      per_query, n_deleted):
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((n, 8)).astype(np.float32)
    positions = rng.integers(0, 50, size=n)
    memory = HNSWMemory(dim=8, exact_threshold=exact_threshold, M=8, ef=16)
    memory.add(data, positions=torch.from_numpy(positions))
    deleted = rng.choice(n, size=min(n_deleted, n), replace=False)
    memory.delete(torch.from_numpy(deleted))
    queries = rng.standard_normal((n_queries, 8)).astype(np.float32)
    limits = rng.integers(0, 55, size=n_queries) if per_query else np.full(n_queries, rng.integers(0, 55))
    result = memory.retrieve(queries, k, max_position=torch.from_numpy(limits) if per_query else int(limits[0]))
    for q in range(n_queries):
        visible = np.nonzero((positions < limits[q]) & ~np.isin(np.arange(n), deleted))[0]
        got = [i for i in result.ids[q].tolist() if i >= 0]
        assert all(positions[i] < limits[q] for i in got)
        assert set(got) <= set(visible.tolist())
        assert len(got) == min(k, len(visible)) and len(set(got)) == len(got)
        assert (result.positions[q, :len(got)] < limits[q]).all()
        if exact_threshold:  # exact path: the true top-k, ties to the lower id
            scores = exact_similarity(queries[q:q + 1], data[visible], "cosine")[0]
            order = np.lexsort((visible, -scores))[:k]
            assert got == visible[order].tolist()


def test_unpositioned_entries_are_visible_to_every_causal_query():
    memory = HNSWMemory(dim=4)
    memory.add(torch.randn(3, 4))
    memory.add(torch.randn(2, 4), positions=torch.tensor([0, 5]))
    got = set(memory.retrieve(torch.randn(1, 4), k=5, max_position=0).ids[0].tolist()) - {-1}
    assert got == {0, 1, 2}
    got = set(memory.retrieve(torch.randn(1, 4), k=5, max_position=5).ids[0].tolist()) - {-1}
    assert got == {0, 1, 2, 3}
