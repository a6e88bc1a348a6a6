"""Entropy-adaptive K against a hand computation and a pure-Python oracle."""
import numpy as np
import torch
from hypothesis import given, settings, strategies as st

from sosm.graph.adaptive import adaptive_k, block_entropy

from . import oracles


def test_hand_checked_extremes():
    x = torch.zeros(1, 3, 64)
    x[0, 0, 0:4] = 2.0   # one block: H = 0 -> round(8 * 0.5) = 4
    x[0, 1] = 1.0        # all 16 blocks equal: H = 1 -> round(8 * 1.5) = 12
    # x[0, 2] all zero: H = 0 by definition
    assert block_entropy(x)[0].tolist() == [0.0, 1.0, 0.0]
    assert adaptive_k(x, 8, 1.0, 2, 16)[0].tolist() == [4, 12, 4]
    assert adaptive_k(x, 8, 1.0, 6, 10)[0].tolist() == [6, 10, 6]  # clamped
    assert adaptive_k(x, 8, 0.0, 2, 16)[0].tolist() == [8, 8, 8]   # alpha 0: fixed K


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1), k=st.integers(1, 10), alpha=st.floats(0, 3), zero_blocks=st.integers(0, 15))
def test_matches_python_oracle(seed, k, alpha, zero_blocks):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 9, 64, generator=gen)
    x[:, :, : 4 * zero_blocks] = 0.0
    k_min, k_max = max(1, k - 3), k + 5
    got = adaptive_k(x, k, alpha, k_min, k_max)
    assert got.dtype == torch.long
    for b in range(2):
        assert np.array_equal(got[b].numpy(), oracles.adaptive_k(x[b].numpy(), k, alpha, k_min, k_max))


def test_position_local():
    x = torch.randn(1, 10, 64)
    y = x.clone()
    y[0, 6:] = torch.randn(4, 64)
    assert torch.equal(adaptive_k(x, 8, 1.0, 2, 16)[0, :6], adaptive_k(y, 8, 1.0, 2, 16)[0, :6])
