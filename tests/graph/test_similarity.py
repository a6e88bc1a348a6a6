"""Similarity featurization, exact pair scores and per-block provenance vs the contract table."""
import numpy as np
import torch
from hypothesis import given, settings, strategies as st

from sosm.graph import GraphConfig
from sosm.common.blocks import BLOCK_NAMES
from sosm.graph.similarity import block_similarity, block_weight_vector, featurize, pair_scores, projection_matrix

from . import oracles


def test_full_mode_is_cosine_hand_checked():
    x = torch.zeros(1, 2, 64)
    x[0, 0, 0], x[0, 1, 0], x[0, 1, 1] = 3.0, 1.0, 1.0
    f = featurize(x, GraphConfig(similarity="full"))
    assert abs(float(pair_scores(f[0, 0], f[0, 1])) - 1 / np.sqrt(2)) < 1e-6


def test_blocks_mode_weights_blocks_hand_checked():
    cfg = GraphConfig(similarity="blocks", block_weights={"I": 3.0, "K": 1.0})
    x = torch.zeros(1, 2, 64)
    x[0, :, 0:4] = torch.tensor([1.0, 0, 0, 0])        # I identical in both tokens: cos 1
    x[0, 0, 16:20] = torch.tensor([1.0, 0, 0, 0])       # K orthogonal: cos 0
    x[0, 1, 16:20] = torch.tensor([0.0, 1, 0, 0])
    f = featurize(x, cfg)
    assert abs(float(pair_scores(f[0, 0], f[0, 1])) - 0.75) < 1e-6
    sims, dom = block_similarity(x[0], torch.tensor([0]), torch.tensor([1]), cfg)
    assert sims[0, 0] == 1.0 and sims[0, 4] == 0.0 and int(dom[0]) == 0


@settings(max_examples=20, deadline=None)
@given(st.sampled_from(["full", "blocks", "projection"]), st.integers(1, 5), st.integers(0, 2 ** 31 - 1))
def test_featurize_matches_contract_formula(mode, length, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, length, 64, generator=gen)
    x[0, 0, 8:12] = 0.0  # a zero block
    cfg = GraphConfig(similarity=mode, block_weights={"I": 0.5, "R2": 0.3, "K": 0.2, "Z": 1.0})
    f = featurize(x, cfg).numpy()
    want = oracles.features(x.numpy(), mode, block_weight_vector(cfg).numpy(), projection_matrix(cfg).numpy())
    np.testing.assert_allclose(f, want, atol=2e-6)


def test_projection_is_orthonormal_and_seeded():
    p = projection_matrix(GraphConfig(similarity="projection", projection_dim=16, projection_seed=3))
    assert p.shape == (16, 64)
    torch.testing.assert_close(p @ p.T, torch.eye(16), atol=1e-5, rtol=0)
    same = projection_matrix(GraphConfig(similarity="projection", projection_dim=16, projection_seed=3))
    other = projection_matrix(GraphConfig(similarity="projection", projection_dim=16, projection_seed=4))
    assert torch.equal(p, same) and not torch.equal(p, other)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 64), st.integers(0, 2 ** 31 - 1))
def test_pair_scores_bit_identical_to_float32_sequential_sum(dim, seed):
    gen = torch.Generator().manual_seed(seed)
    f = torch.randn(7, dim, generator=gen)
    want = oracles.score_matrix(f.numpy())
    got = pair_scores(f[:, None, :], f[None, :, :]).numpy()
    assert np.array_equal(got, want)
    assert torch.equal(pair_scores(f[2], f[5]), torch.tensor(want[2, 5]))  # batching-independent


def test_full_mode_block_shares_sum_to_cosine():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 64, generator=gen)
    cfg = GraphConfig(similarity="full")
    src, dst = torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5])
    sims, dom = block_similarity(x, src, dst, cfg)
    cos = torch.nn.functional.cosine_similarity(x[src], x[dst], dim=-1)
    torch.testing.assert_close(sims.sum(-1), cos, atol=1e-5, rtol=0)
    assert torch.equal(dom, sims.argmax(-1))


def test_blocks_mode_dominant_block_is_weighted_argmax():
    x = torch.zeros(2, 64)
    x[:, 0:4] = 1.0           # I: cos 1, weight 0.1
    x[:, 16:20] = 1.0         # K: cos 1, weight 0.9
    cfg = GraphConfig(similarity="blocks", block_weights={"I": 0.1, "K": 0.9})
    sims, dom = block_similarity(x, torch.tensor([0]), torch.tensor([1]), cfg)
    assert BLOCK_NAMES[int(dom[0])] == "K" and float(sims[0, 0]) == 1.0
