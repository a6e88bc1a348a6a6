"""Fibonacci and betweenness shortcuts: exact edge lists, padding, determinism, causality."""
import pytest
import torch

from sosm.graph.shortcuts import betweenness_shortcuts, fibonacci_numbers, fibonacci_shortcuts


def pairs(edge_index):
    return [tuple(p) for p in edge_index.t().tolist()]


def test_fibonacci_numbers():
    assert fibonacci_numbers(1, 21) == [2, 3, 5, 8, 13, 21]
    assert fibonacci_numbers(0, 4) == [1, 2, 3]
    assert fibonacci_numbers(8, 8) == []


def test_fibonacci_causal_exact():
    ei = fibonacci_shortcuts(1, 7, window=1, fibonacci_max=5, causal=True)  # hops 2, 3, 5
    want = [(0, 2), (0, 3), (1, 3), (1, 4), (2, 4), (0, 5), (2, 5), (3, 5), (1, 6), (3, 6), (4, 6)]
    assert pairs(ei) == want


def test_fibonacci_bidirectional_exact_and_batched():
    ei = fibonacci_shortcuts(2, 4, window=2, fibonacci_max=3, causal=False)  # hop 3 only
    assert pairs(ei) == [(3, 0), (0, 3), (7, 4), (4, 7)]


def test_fibonacci_padding_and_empty():
    mask = torch.tensor([[True, True, True, True, False, False]])
    ei = fibonacci_shortcuts(1, 6, window=1, fibonacci_max=3, causal=True, padding_mask=mask)
    assert pairs(ei) == [(0, 2), (0, 3), (1, 3)]
    assert fibonacci_shortcuts(1, 6, window=8, fibonacci_max=8, causal=True).shape == (2, 0)


def test_fibonacci_bad_input():
    with pytest.raises(ValueError, match="fibonacci_max"):
        fibonacci_shortcuts(1, 6, window=1, fibonacci_max=1, causal=True)
    with pytest.raises(ValueError, match="window"):
        fibonacci_shortcuts(1, 6, window=-1, fibonacci_max=5, causal=True)
    with pytest.raises(TypeError, match="padding_mask"):
        fibonacci_shortcuts(1, 6, window=1, fibonacci_max=5, causal=True, padding_mask=torch.ones(1, 5, dtype=torch.bool))


def chain(T, b=0):
    t = torch.arange(T - 1)
    return torch.stack([t, t + 1]) + b * T


def test_betweenness_bidirectional_path_center_is_hub():
    ei = betweenness_shortcuts(chain(5), 1, 5, num_hubs=1, chunk=4, samples=None, seed=0, causal=False)
    assert pairs(ei) == [(2, 0), (2, 1), (0, 2), (1, 2), (3, 2), (4, 2), (2, 3), (2, 4)]


def test_betweenness_causal_chunks_exact():
    # chunk 0 = positions 0..3: path 0-1-2-3, betweenness ties 1 and 2 -> hub 1 (lower position)
    ei = betweenness_shortcuts(chain(8), 1, 8, num_hubs=1, chunk=4, samples=None, seed=0, causal=True)
    assert pairs(ei) == [(1, 4), (1, 5), (1, 6), (1, 7)]
    # three chunks of 3: chunk 0 (0..2) hub 1; chunk 1 graph 0..5 path -> hubs 2 and 3 tie -> 2
    ei = betweenness_shortcuts(chain(9), 1, 9, num_hubs=1, chunk=3, samples=None, seed=0, causal=True)
    assert pairs(ei) == [(1, 3), (1, 4), (1, 5), (1, 6), (2, 6), (1, 7), (2, 7), (1, 8), (2, 8)]


def test_betweenness_batched_padding_and_memory_edges_ignored():
    T = 6
    ei = torch.cat([chain(T, 0), chain(T, 1), torch.tensor([[12], [3]])], dim=1)  # memory source 12 = B*T
    mask = torch.tensor([[True] * 6, [True] * 5 + [False]])
    out = betweenness_shortcuts(ei, 2, T, num_hubs=1, chunk=4, samples=None, seed=0, causal=False, padding_mask=mask)
    src, dst = out
    assert (src // T == dst // T).all()
    assert not ((src == 11) | (dst == 11)).any()
    want = {(2, t) for t in range(6) if t != 2} | {(t, 2) for t in range(6) if t != 2}  # path 0..5: 2, 3 tie -> 2
    assert set(pairs(out[:, dst < T])) == want


def random_causal_edges(T, per_node, gen):
    dst = torch.arange(1, T).repeat_interleave(per_node)
    src = (torch.rand(dst.numel(), generator=gen) * dst).long()
    return torch.stack([src, dst])


def test_betweenness_sampled_deterministic_and_causal():
    gen = torch.Generator().manual_seed(0)
    T = 40
    ei = random_causal_edges(T, 3, gen)
    a = betweenness_shortcuts(ei, 1, T, num_hubs=2, chunk=8, samples=10, seed=3, causal=True)
    b = betweenness_shortcuts(ei, 1, T, num_hubs=2, chunk=8, samples=10, seed=3, causal=True)
    assert torch.equal(a, b)
    assert (a[0] < a[1]).all() and a.shape[1] > 0


@pytest.mark.parametrize("t", [5, 11, 17, 30])
def test_betweenness_causality_under_perturbation(t):
    gen = torch.Generator().manual_seed(t)
    T = 36
    ei = random_causal_edges(T, 2, gen)
    extra = random_causal_edges(T, 2, gen)
    perturbed = torch.cat([ei[:, ei[1] <= t], extra[:, extra[1] > t]], dim=1)  # only edges into targets > t change
    kw = dict(num_hubs=2, chunk=6, samples=None, seed=0, causal=True)
    a, b = betweenness_shortcuts(ei, 1, T, **kw), betweenness_shortcuts(perturbed, 1, T, **kw)
    assert torch.equal(a[:, a[1] <= t], b[:, b[1] <= t])


def test_betweenness_zero_hubs_and_bad_input():
    assert betweenness_shortcuts(chain(5), 1, 5, 0, 4, None, 0, causal=True).shape == (2, 0)
    with pytest.raises(ValueError, match="chunk"):
        betweenness_shortcuts(chain(5), 1, 5, 1, 0, None, 0, causal=True)
    with pytest.raises(ValueError, match="samples"):
        betweenness_shortcuts(chain(5), 1, 5, 1, 4, 0, 0, causal=True)
    with pytest.raises(TypeError, match="edge_index"):
        betweenness_shortcuts(chain(5).int(), 1, 5, 1, 4, None, 0, causal=True)
