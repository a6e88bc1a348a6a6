"""Causal retrieval: an entry written at position p is visible to a query at i iff p < i."""
import numpy as np
import pytest
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


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _exact_causal(data, positions, live, queries, limits, k):
    """Brute-force oracle: top-k cosine over live entries written before each query's limit, ties to lower id."""
    ids = np.full((len(queries), k), -1)
    for q, limit in enumerate(limits):
        visible = np.nonzero(live & (positions < limit))[0]
        scores = (_unit(queries[q:q + 1]) @ _unit(data[visible]).T)[0]
        order = np.lexsort((visible, -scores))[:k]
        ids[q, :len(order)] = visible[order]
    return ids


@pytest.mark.parametrize("exact_threshold", [64, 4096])
def test_appending_future_entries_never_changes_a_past_query(exact_threshold):
    """Issue 12 item 10: a causal query at p is a function of the entries before p only.

    Sizes above the exact threshold: 6,000 entries, and queries that see all of them, most of them
    or a few; then 3,000 entries are appended at later positions (some of them copies of the
    queries, the most attractive entries there could be). Every hit, id and similarity stays.
    """
    rng = np.random.default_rng(0)
    n, dim = 6000, 16
    data = rng.standard_normal((n, dim)).astype(np.float32)
    positions = np.concatenate([np.full(200, -1), np.arange(n - 200)])  # 200 unpositioned, then a stream
    memory = HNSWMemory(dim=dim, M=8, ef_construction=40, ef=16, exact_threshold=exact_threshold)
    memory.add(data[:200])
    memory.add(data[200:], positions=torch.from_numpy(positions[200:]))
    memory.delete(torch.arange(300, 320))
    queries = rng.standard_normal((8, dim)).astype(np.float32)
    limits = np.array([0, 30, 1000, 4000, 5500, 5800, 5800, 10 ** 6])
    before = memory.retrieve(queries, k=10, max_position=torch.from_numpy(limits))
    live = np.ones(n, dtype=bool)
    live[300:320] = False
    assert before.ids.tolist() == _exact_causal(data, positions, live, queries, limits, 10).tolist()
    future = np.concatenate([np.repeat(queries, 20, axis=0), rng.standard_normal((2840, dim)).astype(np.float32)])
    memory.add(future, positions=torch.from_numpy(10 ** 6 + np.arange(len(future))))
    after = memory.retrieve(queries, k=10, max_position=torch.from_numpy(limits))
    assert torch.equal(after.ids, before.ids)
    assert torch.equal(after.similarities, before.similarities)
    assert torch.equal(after.positions, before.positions)
    single = [memory.retrieve(queries[q:q + 1], k=10, max_position=int(limits[q])) for q in range(8)]
    assert all(torch.equal(s.ids[0], before.ids[q]) for q, s in enumerate(single))  # batch-independent too


def test_the_write_order_of_future_entries_does_not_matter():
    """Interleaving later entries between the past ones changes nothing for a query that cannot see them."""
    rng = np.random.default_rng(1)
    past, future = rng.standard_normal((5000, 8)).astype(np.float32), rng.standard_normal((3000, 8)).astype(np.float32)
    queries = rng.standard_normal((5, 8)).astype(np.float32)
    plain, mixed = HNSWMemory(dim=8, M=8, ef_construction=40, exact_threshold=64), \
        HNSWMemory(dim=8, M=8, ef_construction=40, exact_threshold=64)
    plain.add(past, positions=torch.arange(5000))
    for chunk in range(5):
        mixed.add(future[chunk * 600:(chunk + 1) * 600], positions=torch.arange(9000 + chunk * 600, 9600 + chunk * 600))
        mixed.add(past[chunk * 1000:(chunk + 1) * 1000], positions=torch.arange(chunk * 1000, (chunk + 1) * 1000))
    a = plain.retrieve(queries, k=7, max_position=6000)
    b = mixed.retrieve(queries, k=7, max_position=6000)
    assert torch.equal(a.similarities, b.similarities)
    assert [[int(plain.get_states([i]).sum() * 1e4) for i in row] for row in a.ids.tolist()] == \
        [[int(mixed.get_states([i]).sum() * 1e4) for i in row] for row in b.ids.tolist()]
