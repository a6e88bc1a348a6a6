"""Landmarks: selection rules, BFS distances vs scipy csgraph, causality, bounds, random-walk encoding."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings, strategies as st
from scipy.sparse import csgraph

from sosm.graph import landmarks
from sosm.graph.landmarks import (landmark_distance_bounds, landmark_distances, random_walk_encoding,
                                  select_landmarks)
from sosm.graph.types import UNREACHABLE


def oracle(edge_index, B, T, landmarks, max_distance, causal):
    """scipy csgraph BFS per sample; causal keeps forward edges only (source pos < target pos)."""
    out = np.full((B, T, landmarks.shape[1]), UNREACHABLE, dtype=np.int64)
    src, dst = edge_index.numpy()
    for b in range(B):
        keep = (src // T == b) & (dst // T == b) & (src != dst)
        if causal:
            keep &= src % T < dst % T
        adj = sp.csr_matrix((np.ones(keep.sum()), (src[keep] % T, dst[keep] % T)), shape=(T, T))
        d = csgraph.shortest_path(adj, directed=causal, unweighted=True, indices=landmarks[b].numpy())
        d = np.where(np.isinf(d) | (d > max_distance), UNREACHABLE, d).astype(np.int64)
        out[b] = d.T
    return torch.from_numpy(out)


def random_edges(B, T, m, gen, causal):
    src = torch.randint(0, T, (B, m), generator=gen)
    dst = torch.randint(0, T, (B, m), generator=gen)
    if causal:
        src, dst = torch.minimum(src, dst), torch.maximum(src, dst)
    base = torch.arange(B)[:, None] * T
    ei = torch.stack([(src + base).reshape(-1), (dst + base).reshape(-1)])
    return ei[:, ei[0] != ei[1]]


def test_select_stride_and_auto():
    ei = torch.empty(2, 0, dtype=torch.long)
    assert select_landmarks(ei, 2, 10, 3, rule="stride", causal=True).tolist() == [[0, 3, 6], [0, 3, 6]]
    assert select_landmarks(ei, 1, 10, 3, rule="auto", causal=True).tolist() == [[0, 3, 6]]
    assert select_landmarks(ei, 1, 10, 0, rule="auto", causal=True).shape == (1, 0)


def test_select_degree_ties_and_padding():
    # undirected degrees: 0:1, 1:3, 2:2, 3:3, 4:1 (duplicate 1->2 once; the edge from padded 5 does not count)
    ei = torch.tensor([[0, 1, 1, 2, 3, 1, 5], [1, 2, 3, 3, 4, 2, 4]])
    mask = torch.tensor([[True] * 5 + [False]])
    got = select_landmarks(ei, 1, 6, 3, rule="degree", causal=False, padding_mask=mask)
    assert got.tolist() == [[1, 3, 2]]
    assert select_landmarks(ei, 1, 6, 3, rule="auto", causal=False, padding_mask=mask).tolist() == [[1, 3, 2]]


def test_select_errors():
    ei = torch.empty(2, 0, dtype=torch.long)
    with pytest.raises(ValueError, match="num_landmarks"):
        select_landmarks(ei, 1, 4, 5, rule="stride", causal=True)
    with pytest.raises(ValueError, match="causal=False"):
        select_landmarks(ei, 1, 4, 2, rule="degree", causal=True)
    with pytest.raises(ValueError, match="rule"):
        select_landmarks(ei, 1, 4, 2, rule="random", causal=True)
    with pytest.raises(TypeError, match="edge_index"):
        select_landmarks(ei.int(), 1, 4, 2, rule="stride", causal=True)


def test_distances_hand_example():
    chain = torch.tensor([[0, 1, 2], [1, 2, 3]])
    marks = torch.tensor([[0, 2]])
    d = landmark_distances(chain, 1, 4, marks, max_distance=8, causal=True)
    assert d.dtype == torch.long and d[0].tolist() == [[0, UNREACHABLE], [1, UNREACHABLE], [2, 0], [3, 1]]
    d = landmark_distances(chain, 1, 4, marks, max_distance=1, causal=False)
    assert d[0].tolist() == [[0, UNREACHABLE], [1, 1], [UNREACHABLE, 0], [UNREACHABLE, 1]]


@settings(max_examples=60, deadline=None)
@given(B=st.integers(1, 3), T=st.integers(1, 14), density=st.integers(0, 30), L=st.integers(0, 6),
       max_distance=st.integers(0, 6), causal=st.booleans(), seed=st.integers(0, 10_000))
def test_distances_match_scipy(B, T, density, L, max_distance, causal, seed):
    gen = torch.Generator().manual_seed(seed)
    L = min(L, T)
    ei = random_edges(B, T, density, gen, causal)
    marks = torch.stack([torch.randperm(T, generator=gen)[:L] for _ in range(B)]) if L else torch.zeros(B, 0,
                                                                                                         dtype=torch.long)
    got = landmark_distances(ei, B, T, marks, max_distance=max_distance, causal=causal)
    assert torch.equal(got, oracle(ei, B, T, marks, max_distance, causal))


@pytest.mark.parametrize("causal", [True, False])
def test_distances_many_landmarks_multiword(causal):
    gen = torch.Generator().manual_seed(1)
    B, T, L = 2, 150, 130  # three 64-bit words, bit 63 included
    ei = random_edges(B, T, 400, gen, causal)
    marks = torch.stack([torch.randperm(T, generator=gen)[:L] for _ in range(B)])
    got = landmark_distances(ei, B, T, marks, max_distance=50, causal=causal)
    assert torch.equal(got, oracle(ei, B, T, marks, 50, causal))


def test_causal_ignores_backward_edges_and_memory_sources():
    ei = torch.tensor([[0, 2, 1, 8], [1, 1, 2, 2]])  # 2 -> 1 is backward; 8 = B*T is a memory source
    d = landmark_distances(ei, 1, 4, torch.tensor([[2]]), max_distance=5, causal=True)
    assert d[0, :, 0].tolist() == [UNREACHABLE, UNREACHABLE, 0, UNREACHABLE]


@pytest.mark.parametrize("t", [0, 7, 19, 33])
def test_causal_distances_unchanged_by_later_edges(t):
    gen = torch.Generator().manual_seed(t)
    B, T = 2, 40
    ei = random_edges(B, T, 120, gen, causal=True)
    extra = random_edges(B, T, 120, gen, causal=True)
    perturbed = torch.cat([ei[:, ei[1] % T <= t], extra[:, extra[1] % T > t]], dim=1)
    marks = select_landmarks(ei, B, T, 5, rule="auto", causal=True)
    assert torch.equal(marks, select_landmarks(perturbed, B, T, 5, rule="auto", causal=True))
    a = landmark_distances(ei, B, T, marks, max_distance=10, causal=True)
    b = landmark_distances(perturbed, B, T, marks, max_distance=10, causal=True)
    assert torch.equal(a[:, :t + 1], b[:, :t + 1])


def test_distance_errors():
    ei = torch.tensor([[0], [1]])
    with pytest.raises(ValueError, match="landmarks"):
        landmark_distances(ei, 1, 4, torch.tensor([[4]]), max_distance=3, causal=True)
    with pytest.raises(TypeError, match="landmarks"):
        landmark_distances(ei, 1, 4, torch.tensor([0]), max_distance=3, causal=True)
    with pytest.raises(ValueError, match="max_distance"):
        landmark_distances(ei, 1, 4, torch.tensor([[0]]), max_distance=-1, causal=True)


@settings(max_examples=30, deadline=None)
@given(T=st.integers(2, 16), density=st.integers(1, 40), L=st.integers(1, 5), seed=st.integers(0, 10_000))
def test_bounds_are_valid(T, density, L, seed):
    gen = torch.Generator().manual_seed(seed)
    L = min(L, T)
    marks = torch.randperm(T, generator=gen)[:L][None]
    ei = random_edges(1, T, density, gen, causal=True)
    adj = sp.csr_matrix((np.ones(ei.shape[1]), (ei[0].numpy(), ei[1].numpy())), shape=(T, T))
    und = csgraph.shortest_path(adj, directed=False, unweighted=True)
    dirs = csgraph.shortest_path(adj, directed=True, unweighted=True)
    for causal in (False, True):
        d = landmark_distances(ei, 1, T, marks, max_distance=T, causal=causal)[0]  # [T, L]
        lower, upper = landmark_distance_bounds(d[:, None, :], d[None, :, :])  # [T, T], (i, j)
        known = upper != UNREACHABLE
        assert (torch.from_numpy(und)[known] <= upper[known]).all()
        if not causal:
            assert (lower.double() <= torch.from_numpy(und)).all()
        else:
            lower_dir, _ = landmark_distance_bounds(d[:, None, :], d[None, :, :], directed=True)
            true_ji = torch.from_numpy(dirs).T  # [i, j] = distance j -> i
            assert (lower_dir.double() <= true_ji).all()


def test_bounds_without_common_landmark():
    lower, upper = landmark_distance_bounds(torch.tensor([[1, UNREACHABLE]]), torch.tensor([[UNREACHABLE, 4]]))
    assert lower.tolist() == [0] and upper.tolist() == [UNREACHABLE]
    lower, upper = landmark_distance_bounds(torch.zeros(3, 0, dtype=torch.long), torch.zeros(3, 0, dtype=torch.long))
    assert lower.tolist() == [0, 0, 0] and upper.tolist() == [UNREACHABLE] * 3


def test_random_walk_encoding_matches_dense():
    gen = torch.Generator().manual_seed(0)
    N = 12
    ei = random_edges(1, N, 30, gen, causal=False)
    got = random_walk_encoding(ei, N, 5)
    A = torch.zeros(N, N, dtype=torch.float64)
    A[ei[0], ei[1]] = 1
    A[ei[1], ei[0]] = 1
    deg = A.sum(1, keepdim=True)
    P = torch.where(deg > 0, A / deg.clamp(min=1), 0)
    want, Pk = [], torch.eye(N, dtype=torch.float64)
    for _ in range(5):
        Pk = Pk @ P
        want.append(torch.diagonal(Pk))
    assert torch.allclose(got.double(), torch.stack(want, 1), atol=1e-6)
    with pytest.raises(ValueError, match="needs seq_len"):
        random_walk_encoding(ei, N, 5, causal=True)
    with pytest.raises(ValueError, match="needs seq_len"):
        random_walk_encoding(ei, N, 5, causal=True, seq_len=5)  # 12 nodes are not samples of 5
    with pytest.raises(ValueError, match="walk_length"):
        random_walk_encoding(ei, N, 0)


def _prefix_oracle(ei, B, T, walk_length):
    """Causal RWPE by definition: for each (b, t), the bidirectional encoding of sample b's graph cut after t."""
    want = torch.zeros(B * T, walk_length)
    for b in range(B):
        src, dst = ei[0] - b * T, ei[1] - b * T
        for t in range(T):
            keep = (src >= 0) & (dst >= 0) & (src <= t) & (dst <= t)
            want[b * T + t] = random_walk_encoding(torch.stack([src[keep], dst[keep]]), t + 1, walk_length)[t]
    return want


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), T=st.integers(1, 14), m=st.integers(0, 40), directed=st.booleans())
def test_causal_random_walk_encoding_is_the_walk_on_each_prefix_graph(seed, T, m, directed):
    gen = torch.Generator().manual_seed(seed)
    B, L = 2, 4
    ei = random_edges(B, T, m, gen, causal=directed)  # either direction: the walk is on the undirected view
    got = random_walk_encoding(ei, B * T, L, causal=True, seq_len=T)
    assert got.shape == (B * T, L)
    want = _prefix_oracle(ei, B, T, L)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    # rows in blocks (the default block is wider than these T): each block walks only its [r1, r1] corner
    torch.testing.assert_close(landmarks._prefix_random_walk(ei, B, T, L, row_block=3), want, rtol=0, atol=1e-5)


def test_causal_random_walk_encoding_ignores_edges_after_each_position():
    gen = torch.Generator().manual_seed(3)
    T = 20
    ei = random_edges(1, T, 50, gen, causal=True)
    base = random_walk_encoding(ei, T, 6, causal=True, seq_len=T)
    for t in (0, 7, 15):
        late = torch.stack([torch.randint(0, T, (30,), generator=gen), torch.randint(t + 1, T, (30,), generator=gen)])
        more = torch.cat([ei, late], dim=1)  # new edges, each touching a position after t
        assert torch.equal(random_walk_encoding(more, T, 6, causal=True, seq_len=T)[:t + 1], base[:t + 1])
    assert not torch.equal(random_walk_encoding(more, T, 6, causal=True, seq_len=T), base)


@pytest.mark.parametrize("causal", [True, False])
def test_distances_with_hubs_beyond_the_ell_table(causal):
    gen = torch.Generator().manual_seed(2)
    T = 120
    ei = random_edges(1, T, 150, gen, causal)
    hub_in = torch.stack([torch.arange(0, 90), torch.full((90,), 100)])  # 90 in-edges into 100
    hub_out = torch.stack([torch.full((60,), 5), torch.arange(6, 66)])  # 60 out-edges of 5
    ei = torch.cat([ei, hub_in, hub_out], dim=1)
    marks = torch.tensor([[0, 3, 50, 101]])
    got = landmark_distances(ei, 1, T, marks, max_distance=40, causal=causal)
    assert torch.equal(got, oracle(ei, 1, T, marks, 40, causal))
