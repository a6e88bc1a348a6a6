"""Streaming top-k: exact against a brute-force oracle and bit-identical to the dense path."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from sosm.graph.topk import dense_topk, streaming_topk

from . import oracles


def _as_lists(idx, val):
    return [[(int(j), float(v)) for j, v in zip(ri, rv) if j >= 0] for ri, rv in zip(idx.tolist(), val.tolist())]


def test_hand_checked_causal_edges():
    # four 2-d unit vectors; token 3 equals token 0, token 2 is closest to token 1 ... rows are queries
    f = torch.tensor([[[1.0, 0.0], [0.6, 0.8], [0.8, 0.6], [1.0, 0.0], [0.0, 1.0]]])
    idx, val = streaming_topk(f, 2, causal=True, window=1, tile=16)
    assert idx[0].tolist() == [[-1, -1], [-1, -1], [0, -1], [0, 1], [1, 2]]
    assert val[0, 3, 0].item() == 1.0


def test_hand_checked_bidirectional_ties_to_lower_index():
    f = torch.tensor([[[1.0, 0.0]] * 5])  # all identical: every score ties
    idx, _ = streaming_topk(f, 2, causal=False, window=1, tile=16)
    assert idx[0].tolist() == [[2, 3], [3, 4], [0, 4], [0, 1], [0, 1]]


def _random_features(seed, batch, length, dim, dup):
    gen = torch.Generator().manual_seed(seed)
    f = torch.nn.functional.normalize(torch.randn(batch, length, dim, generator=gen), dim=-1)
    if dup:
        f[:, ::dup] = f[:, :1].clone()  # duplicated vectors force exact ties
    return f


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1), length=st.integers(1, 45), dim=st.sampled_from([3, 16, 64]),
       k=st.integers(1, 6), window=st.integers(0, 3), causal=st.booleans(), dup=st.sampled_from([0, 2, 3]),
       pad=st.booleans(), block=st.sampled_from([16, 32]))
def test_streaming_matches_bruteforce_oracle(seed, length, dim, k, window, causal, dup, pad, block):
    f = _random_features(seed, 2, length, dim, dup)
    mask = (torch.rand(2, length, generator=torch.Generator().manual_seed(seed + 1)) > 0.25) if pad else None
    idx, val = streaming_topk(f, k, causal=causal, window=window, padding_mask=mask, tile=block)
    assert idx.shape == (2, length, k) and val.dtype == torch.float32
    for b in range(2):
        want = oracles.topk_lists(f[b].numpy(), k, causal, window, None if mask is None else mask[b].numpy())
        got = _as_lists(idx[b], val[b])
        assert [[j for j, _ in r] for r in got] == [[j for j, _ in r] for r in want]
        assert all(np.float32(g) == w for rg, rw in zip(got, want) for (_, g), (_, w) in zip(rg, rw))
    assert bool((val[idx < 0] == 0).all())


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("dup", [0, 7])
def test_streaming_equals_dense_exactly_with_ties(causal, dup):
    f = _random_features(5, 2, 150, 16, dup)
    f[1, 100:140] = f[1, 50]  # a long run of identical vectors
    mask = torch.ones(2, 150, dtype=torch.bool)
    mask[0, 130:] = False
    dense = dense_topk(f, 8, causal=causal, window=1, padding_mask=mask)
    for block in (16, 1024):
        stream = streaming_topk(f, 8, causal=causal, window=1, padding_mask=mask, tile=block)
        assert torch.equal(stream[0], dense[0]) and torch.equal(stream[1], dense[1])


def test_streaming_equals_dense_on_quantised_states():
    # few distinct values: many near-ties inside the float32 matmul error take the exact path
    gen = torch.Generator().manual_seed(2)
    f = torch.nn.functional.normalize(torch.randint(-2, 3, (1, 250, 8), generator=gen).float(), dim=-1)
    for causal in (True, False):
        dense = dense_topk(f, 5, causal=causal, window=2)
        stream = streaming_topk(f, 5, causal=causal, window=2, tile=64)
        assert torch.equal(stream[0], dense[0]) and torch.equal(stream[1], dense[1])


def test_fewer_candidates_than_k_get_minus_one_not_padding_edges():
    f = _random_features(0, 1, 6, 8, 0)
    idx, val = streaming_topk(f, 4, causal=True, window=1)
    assert (idx[0, :2] == -1).all()
    assert (idx[0, 2, 1:] == -1).all() and idx[0, 2, 0] == 0
    assert (val[idx < 0] == 0).all()


def test_deterministic_and_input_not_mutated():
    f = _random_features(9, 2, 100, 16, 3)
    before = f.clone()
    a = streaming_topk(f, 4, tile=32)
    b = streaming_topk(f, 4, tile=32)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and torch.equal(f, before)


@pytest.mark.parametrize("causal,window,k,block", [(True, 1, 8, 128), (True, 3, 4, 64), (False, 0, 8, 100),
                                                   (False, 2, 5, 128), (True, 1, 8, 512), (False, 0, 6, 512)])
def test_streaming_equals_dense_through_grouped_sparse_merges(causal, window, k, block):
    # several key tiles of >= 256 columns: the chunk floor (tiles of 512 / 256 columns), the
    # sparse merge of late tiles and the dense merge of rows with many hit groups (block 100:
    # 25 groups per tile, too few for chunks) all run; block 512: tiles of two 1024-key sub-blocks
    f = _random_features(11, 2, 1100, 16, 0)
    f[0, 300:320] = f[0, 10]  # exact ties across tiles
    mask = torch.ones(2, 1100, dtype=torch.bool)
    mask[1, ::7] = False
    for padding in (None, mask):
        dense = dense_topk(f, k, causal=causal, window=window, padding_mask=padding)
        stream = streaming_topk(f, k, causal=causal, window=window, padding_mask=padding, tile=block)
        assert torch.equal(stream[0], dense[0]) and torch.equal(stream[1], dense[1])


def test_streaming_equals_dense_with_zero_feature_columns_and_near_ties():
    # weighted-blocks features are zero outside the weighted blocks; quantised values make
    # near-ties inside the float32 matmul error, which take the exact fallback
    gen = torch.Generator().manual_seed(4)
    f = torch.zeros(1, 600, 64)
    f[..., :12] = torch.randint(-2, 3, (1, 600, 12), generator=gen).float()
    f = torch.nn.functional.normalize(f, dim=-1)
    for causal in (True, False):
        dense = dense_topk(f, 6, causal=causal, window=1)
        stream = streaming_topk(f, 6, causal=causal, window=1, tile=64)
        assert torch.equal(stream[0], dense[0]) and torch.equal(stream[1], dense[1])


def test_bidirectional_window_wider_than_a_tile():
    f = _random_features(3, 1, 300, 8, 0)
    dense = dense_topk(f, 3, causal=False, window=70)
    for block in (16, 64, 256):
        stream = streaming_topk(f, 3, causal=False, window=70, tile=block)
        assert torch.equal(stream[0], dense[0]) and torch.equal(stream[1], dense[1])
