"""HNSWMemory: recall against exact search, ids, delete, resize, filters and input validation."""
import numpy as np
import pytest
import torch

from sosm.memory import HNSWMemory


def _random(n, dim=64, seed=0):
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("n", [2_000, pytest.param(20_000, marks=pytest.mark.slow)])
def test_recall_at_10_with_defaults_on_random_vectors(n):
    data, queries = _random(n), _random(200, seed=1)
    memory = HNSWMemory(dim=64, max_elements=n, num_threads=2)
    memory.add(data)
    result = memory.retrieve(queries, k=10)
    normed = torch.nn.functional.normalize
    truth = (normed(queries, dim=1) @ normed(data, dim=1).T).topk(10, dim=1).indices
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(result.ids.tolist(), truth.tolist())])
    assert recall >= 0.95, recall


def test_ids_are_stable_increasing_and_never_reused():
    memory = HNSWMemory(dim=8)
    first = memory.add(_random(3, 8))
    memory.delete(first[1:2])
    second = memory.add(_random(2, 8, seed=1))
    assert first.tolist() == [0, 1, 2] and second.tolist() == [3, 4]
    assert len(memory) == 4 and memory.count == 5


def test_results_carry_similarity_metadata_states_and_padding():
    data = _random(5, 8)
    memory = HNSWMemory(dim=8)
    memory.add(data, metadata=[{"document": "a", "offset": i} for i in range(5)])
    result = memory.retrieve(data[2:3], k=7)
    assert result.ids[0, 0] == 2 and result.ids[0, 5:].tolist() == [-1, -1]
    assert torch.allclose(result.similarities[0, 0], torch.tensor(1.0), atol=1e-5)
    assert torch.isinf(result.similarities[0, 5:]).all()
    assert torch.equal(result.states[0, 0], data[2]) and (result.states[0, 5:] == 0).all()
    assert result.metadata[0][0] == {"document": "a", "offset": 2} and result.metadata[0][6] is None
    sims = torch.nn.functional.cosine_similarity(data[2:3], data[result.ids[0, :5]], dim=1)
    assert torch.allclose(result.similarities[0, :5], sims, atol=1e-5)


def test_delete_hides_entries():
    data = _random(50, 16)
    memory = HNSWMemory(dim=16)
    ids = memory.add(data)
    memory.delete(ids[:10])
    memory.delete(ids[:1])  # idempotent
    for result in (memory.retrieve(data[:10], k=40), memory.retrieve(data[:10], k=40, max_position=0)):
        returned = set(result.ids.flatten().tolist()) - {-1}
        assert returned.isdisjoint(range(10)) and returned
    assert len(memory) == 40
    with pytest.raises(ValueError, match="ids must be in"):
        memory.delete([50])


def test_resize_beyond_initial_capacity():
    data = _random(300, 16)
    memory = HNSWMemory(dim=16, max_elements=16)
    for chunk in data.split(37):
        memory.add(chunk)
    assert len(memory) == 300 and memory.capacity >= 300
    assert memory.retrieve(data[[0, 150, 299]], k=1).ids[:, 0].tolist() == [0, 150, 299]


def test_document_filter():
    data = _random(40, 8)
    memory = HNSWMemory(dim=8)
    memory.add(data, metadata=[{"document": i % 2} for i in range(40)])
    result = memory.retrieve(data[:4], k=5, document=1)
    assert all(i % 2 == 1 for i in result.ids.flatten().tolist())
    assert (memory.retrieve(data[:1], k=3, document="missing").ids == -1).all()


def test_hnsw_filter_path_and_exact_path_agree_on_small_memory():
    data, queries = _random(400, 16), _random(5, 16, seed=3)
    exact = HNSWMemory(dim=16, exact_threshold=10_000)
    approx = HNSWMemory(dim=16, exact_threshold=0, ef=400)
    positions = torch.arange(400)
    exact.add(data, positions=positions)
    approx.add(data, positions=positions)
    a = exact.retrieve(queries, k=5, max_position=300)
    b = approx.retrieve(queries, k=5, max_position=300)
    assert torch.equal(a.ids, b.ids)
    assert torch.allclose(a.similarities, b.similarities, atol=1e-5)


@pytest.mark.parametrize("space", ["ip", "l2"])
def test_other_spaces_match_exact(space):
    data, queries = _random(200, 8), _random(3, 8, seed=2)
    memory = HNSWMemory(dim=8, space=space, ef=200)
    memory.add(data)
    got = memory.retrieve(queries, k=3)
    scores = queries @ data.T if space == "ip" else -torch.cdist(queries, data) ** 2
    want = scores.topk(3, dim=1)
    assert torch.equal(got.ids, want.indices)
    assert torch.allclose(got.similarities, want.values, atol=1e-4)


def test_per_call_ef_is_restored():
    memory = HNSWMemory(dim=8, ef=32)
    memory.add(_random(20, 8))
    memory.retrieve(_random(2, 8), k=3, ef=100)
    assert memory._index.ef == 32


@pytest.mark.parametrize("bad, error, match", [
    (torch.randn(3, 7), ValueError, r"states must have shape \[N, 8\]"),
    (torch.randint(0, 3, (3, 8)), TypeError, "floating-point"),
    (torch.tensor([[float("nan")] * 8]), ValueError, "finite; row 0"),
    (torch.tensor([[float("inf")] * 8]), ValueError, "finite"),
    ([[0.0] * 8], TypeError, "torch.Tensor or numpy.ndarray"),
    (np.zeros((1, 8), dtype=np.float32), ValueError, "nonzero norm"),
])
def test_add_rejects_bad_states(bad, error, match):
    with pytest.raises(error, match=match):
        HNSWMemory(dim=8).add(bad)


def test_bad_arguments_name_themselves():
    memory = HNSWMemory(dim=8)
    memory.add(_random(4, 8))
    with pytest.raises(ValueError, match="queries must have shape"):
        memory.retrieve(torch.randn(2, 9), k=1)
    with pytest.raises(ValueError, match="k must be a positive int"):
        memory.retrieve(torch.randn(2, 8), k=0)
    with pytest.raises(ValueError, match="max_position must have shape"):
        memory.retrieve(torch.randn(2, 8), k=1, max_position=torch.tensor([1, 2, 3]))
    with pytest.raises(TypeError, match="max_position must hold integers"):
        memory.retrieve(torch.randn(2, 8), k=1, max_position=torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="positions must be >= 0"):
        memory.add(_random(2, 8), positions=torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match="metadata must be a list of 2"):
        memory.add(_random(2, 8), metadata=[{}])
    with pytest.raises(TypeError, match=r"metadata\[0\] must be JSON-serialisable"):
        memory.add(_random(1, 8), metadata=[{"x": object()}])
    with pytest.raises(ValueError, match="space must be one of"):
        HNSWMemory(dim=8, space="hamming")
    assert len(memory) == 4


def test_zero_queries_and_empty_memory():
    memory = HNSWMemory(dim=8)
    empty = memory.retrieve(torch.randn(2, 8), k=3)
    assert (empty.ids == -1).all() and empty.states.shape == (2, 3, 8)
    memory.add(_random(4, 8))
    none = memory.retrieve(torch.zeros(0, 8), k=3)
    assert none.ids.shape == (0, 3) and none.metadata == []


def test_auto_ef_follows_the_index_size(monkeypatch):
    from sosm.memory import hnsw

    assert [hnsw.auto_ef(n) for n in (0, 20_000, 200_000, 1_000_000)] == [128, 128, 336, 750]
    monkeypatch.setattr(hnsw, "EF_MIN", 1)  # let a small memory show the growth
    memory = HNSWMemory(dim=8)
    assert memory.ef_auto and "(auto)" in repr(memory)
    for n in (100, 300):
        memory.add(_random(n, 8, seed=n))
        assert memory.ef == memory._index.ef == hnsw.auto_ef(memory.count) == int(np.ceil(0.75 * np.sqrt(memory.count)))
    fixed = HNSWMemory(dim=8, ef=40)
    fixed.add(_random(400, 8))
    assert not fixed.ef_auto and fixed.ef == fixed._index.ef == 40


def test_causal_queries_search_the_visible_entries_exactly_never_the_shared_graph():
    """A causal query never walks the HNSW graph (its nodes and links depend on later entries, issue 12
    item 10): it is answered by exact search over the entries before its position, whatever their number."""
    data = _random(300, 16)
    memory = HNSWMemory(dim=16, exact_threshold=32)
    memory.add(data, positions=torch.arange(300))
    memory.delete(torch.arange(10))
    queries = _random(6, 16, seed=3)
    calls = []
    real_query = memory._index.knn_query
    memory._index = type("Spy", (), {"knn_query": lambda self, *a, **kw: calls.append(kw) or real_query(*a, **kw),
                                     "ef": memory._index.ef})()
    after_all = memory.retrieve(queries, k=5, max_position=torch.full((6,), 300))
    assert not calls
    unit = torch.nn.functional.normalize(data[10:], dim=1)
    best = (torch.nn.functional.normalize(queries, dim=1) @ unit.T).topk(5, dim=1)
    assert torch.equal(after_all.ids, best.indices + 10)
    torch.testing.assert_close(after_all.similarities, best.values, rtol=0, atol=1e-6)
    inside = memory.retrieve(queries, k=5, max_position=torch.tensor([299, 300, 300, 300, 300, 300]))
    assert not calls and 299 not in inside.ids[0].tolist() and (inside.positions[0] < 299).all()
    assert torch.equal(inside.ids[1:], after_all.ids[1:])
    memory.retrieve(queries, k=5)
    assert calls and "filter" not in calls[0]  # unfiltered, non-causal queries use the graph


def test_metadata_is_copied_and_unaffected_by_later_writes():
    memory = HNSWMemory(dim=8)
    data = _random(6, 8)
    memory.add(data[:3])  # no metadata: empty records
    memory.add(data[3:], metadata=[{"document": "d", "offset": i} for i in range(3)])
    result = memory.retrieve(data, k=6)
    memory.add(_random(4, 8, seed=5), metadata=[{"offset": 99}] * 4)  # written after the query
    by_id = {i: m for row_ids, row in zip(result.ids.tolist(), result.metadata) for i, m in zip(row_ids, row)}
    assert by_id == {0: {}, 1: {}, 2: {}, 3: {"document": "d", "offset": 0}, 4: {"document": "d", "offset": 1},
                     5: {"document": "d", "offset": 2}}
    result.metadata[0][0]["changed"] = True  # copies: neither the store nor other slots change
    again = memory.retrieve(data[:3], k=3)
    assert all("changed" not in m for row in again.metadata for m in row)
    assert all("changed" not in m for row in result.metadata[1:] for m in row)
