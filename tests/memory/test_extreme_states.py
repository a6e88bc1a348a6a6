"""Zero vectors and extreme scales in the memory (issue 12 items 5 and 6).

One rule with the graph builders: a zero vector has no direction, so a cosine memory neither
stores it (``add``) nor answers it (``retrieve``), and ``integrate_into_graph`` gives a zero-state
token no memory edges (with a warning). Cosine similarities normalise any float32 scale; a float64
value beyond float32's range is a clear error, never NaN.
"""
import numpy as np
import pytest
import torch

from sosm.graph.types import SemanticGraph, empty_edge_columns
from sosm.memory import HNSWMemory, integrate_into_graph


def _random(n, dim=16, seed=0):
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("queries", [torch.zeros(1, 16), np.zeros((2, 16), dtype=np.float32)])
def test_cosine_retrieve_rejects_zero_queries_like_add(queries):
    memory = HNSWMemory(dim=16)
    memory.add(_random(10))
    with pytest.raises(ValueError, match=r"queries row 0 is a zero vector.*space='cosine'"):
        memory.retrieve(queries, k=3)
    with pytest.raises(ValueError, match=r"queries row 0 is a zero vector"):
        memory.retrieve(queries, k=3, max_position=5)
    with pytest.raises(ValueError, match=r"states row 0 is a zero vector"):
        memory.add(queries)


def test_other_spaces_accept_zero_queries():
    for space in ("ip", "l2"):
        memory = HNSWMemory(dim=16, space=space)
        memory.add(_random(10))
        assert (memory.retrieve(torch.zeros(1, 16), k=3).ids >= 0).all()


def test_zero_state_tokens_get_no_memory_edges_with_a_warning():
    memory = HNSWMemory(dim=64)
    memory.add(_random(20, 64), positions=torch.arange(20))
    states = _random(6, 64, seed=1)[None]
    states[0, 2] = 0.0
    graph = SemanticGraph(edge_index=torch.zeros(2, 0, dtype=torch.long), batch_size=1, seq_len=6,
                          **empty_edge_columns(0))
    with pytest.warns(RuntimeWarning, match="1 state is zero.*no memory edges"):
        out = integrate_into_graph(graph, states, memory, k=3, threshold=-1.0, positions=100)
    targets = out.edge_index[1].tolist()
    assert 2 not in targets and sorted(set(targets)) == [0, 1, 3, 4, 5]


@pytest.mark.parametrize("scale", [1e20, 1e-20])
def test_cosine_memory_at_extreme_float32_scales(scale):
    data, queries = _random(50), _random(4, seed=1)
    plain, scaled = HNSWMemory(dim=16), HNSWMemory(dim=16)
    plain.add(data)
    scaled.add(data * scale)
    for max_position in (None, 10**6):  # unfiltered (hnswlib) and filtered (exact) searches
        want = plain.retrieve(queries, k=5, max_position=max_position)
        got = scaled.retrieve(queries * scale, k=5, max_position=max_position)
        assert torch.equal(got.ids, want.ids)
        assert torch.isfinite(got.similarities).all()
        torch.testing.assert_close(got.similarities, want.similarities, rtol=0, atol=1e-5)
    assert torch.equal(scaled.get_states(torch.tensor([3])), (data * scale)[3:4])  # raw vectors kept


def test_float64_beyond_float32_range_is_a_clear_error():
    memory = HNSWMemory(dim=16)
    with pytest.raises(ValueError, match=r"states row 0 .*float32 range"):
        memory.add(_random(2).double() * 1e39)
    memory.add(_random(2))
    with pytest.raises(ValueError, match=r"queries row 1 .*float32 range"):
        memory.retrieve(torch.cat([_random(1).double(), _random(1).double() * 1e39]), k=1)
