"""Zero states and states at extreme scales (issue 12 items 5 and 6).

Rule (docs/CONTRACTS.md, "Semantic similarity"): a token whose similarity features are all zero
(an all-zero state; in "blocks" mode, zero in every weighted block) has no direction, so it gets
no semantic edges, in either direction, and the builder says so once per call with a warning.
Features are normalised after a power-of-two rescaling of each row (or block), so any finite state
normalises: float32 states times 1e20 or float64 states of 1e39 give the graph of the unscaled ones.
"""
import warnings

import pytest
import torch

from sosm.common.features import block_units, featurize
from sosm.graph import GraphBuilder, GraphConfig
from sosm.graph.types import EDGE_TYPE_ID
from sosm.kernels import topk_similarity

SEM = EDGE_TYPE_ID["semantic"]
COLUMNS = ("edge_index", "edge_type", "edge_weight", "block_similarity", "dominant_block", "similarity", "stage")


def _states(batch=2, length=30, seed=0):
    return torch.randn(batch, length, 64, generator=torch.Generator().manual_seed(seed))


def _semantic_pairs(graph):
    sem = graph.edge_type == SEM
    return graph.edge_index[:, sem]


def _build_quietly(builder, x, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ordinary states: no warning at all
        return builder.build(x, *args)


@pytest.mark.parametrize("options", [dict(), dict(mutual=True, adaptive_k=True), dict(causal=False),
                                     dict(similarity="projection")])
def test_zero_states_get_no_semantic_edges_and_a_warning(options):
    x = _states()
    zero = [(0, 5), (0, 17), (1, 0), (1, 29)]
    for b, t in zero:
        x[b, t] = 0.0
    builder = GraphBuilder(GraphConfig(k=4, **options))
    with pytest.warns(RuntimeWarning, match=r"4 states are zero.*no semantic edges"):
        graph = builder.build(x)
    nodes = {b * 30 + t for b, t in zero}
    src, dst = _semantic_pairs(graph).tolist()
    assert not nodes & set(src) and not nodes & set(dst)
    assert _semantic_pairs(graph).shape[1] > 0
    seq = graph.edge_type == EDGE_TYPE_ID["sequential"]
    assert set(graph.edge_index[1, seq].tolist()) >= nodes - {30}  # sequential edges are kept (30 is t = 0)
    assert torch.isfinite(graph.similarity).all()


def test_blocks_mode_zero_in_every_weighted_block_is_a_zero_state():
    cfg = GraphConfig(k=3, similarity="blocks", block_weights={"I": 1.0, "K": 1.0})
    x = _states(1, 20)
    x[0, 9, 0:4] = 0.0   # block I
    x[0, 9, 16:20] = 0.0  # block K; the other 14 blocks stay non-zero
    with pytest.warns(RuntimeWarning, match="1 state is zero in every weighted block"):
        graph = GraphBuilder(cfg).build(x)
    src, dst = _semantic_pairs(graph).tolist()
    assert 9 not in src and 9 not in dst


def test_all_zero_input_has_only_sequential_edges():
    with pytest.warns(RuntimeWarning, match="12 states are zero"):
        graph = GraphBuilder(GraphConfig(k=2)).build(torch.zeros(1, 12, 64))
    assert graph.num_edges == 11 and (graph.edge_type == EDGE_TYPE_ID["sequential"]).all()


def test_padding_is_not_counted_and_the_topk_hook_follows_the_rule():
    x = _states()
    x[0, 3] = 0.0
    x[1, 25:] = 0.0
    mask = torch.ones(2, 30, dtype=torch.bool)
    mask[1, 25:] = False  # padded zero states: not a zero-state warning
    cfg = GraphConfig(k=4)
    with pytest.warns(RuntimeWarning, match="1 state is zero"):
        streaming = GraphBuilder(cfg).build(x, padding_mask=mask)
    with pytest.warns(RuntimeWarning, match="1 state is zero"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="topk_similarity")  # the CPU fallback's own notice
        hooked = GraphBuilder(cfg, topk_fn=topk_similarity).build(x, padding_mask=mask)
    for name in COLUMNS:
        assert torch.equal(getattr(streaming, name), getattr(hooked, name)), name


@pytest.mark.parametrize("mode", ["full", "blocks", "projection"])
@pytest.mark.parametrize("scale, dtype", [(1e20, torch.float32), (1e-30, torch.float32), (1e-41, torch.float32),
                                          (1e39, torch.float64), (1e300, torch.float64), (1e-300, torch.float64)])
def test_features_normalise_at_any_finite_scale(mode, scale, dtype):
    x = _states(1, 6)
    kwargs = dict(block_weights=torch.ones(16)) if mode == "blocks" else {}
    if mode == "projection":
        kwargs = dict(projection=torch.linalg.qr(torch.randn(64, 16, generator=torch.Generator().manual_seed(1)))[0].T)
    want = featurize(x, mode, **kwargs)
    got = featurize(x.to(dtype) * scale, mode, **kwargs)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6 if scale != 1e-41 else 2e-2)  # 1e-41: subnormal inputs
    units = block_units(x.to(dtype) * scale, mode)
    torch.testing.assert_close(units, block_units(x, mode), rtol=0, atol=1e-6 if scale != 1e-41 else 2e-2)


def test_power_of_two_scales_change_no_bit():
    x = _states()
    builder = GraphBuilder(GraphConfig(k=4, num_landmarks=2))
    base = builder.build(x)
    for factor in (2.0 ** 66, 2.0 ** -100):
        scaled = builder.build(x * factor)
        for name in COLUMNS:
            assert torch.equal(getattr(scaled, name), getattr(base, name)), (factor, name)
    assert torch.equal(builder.build(x.double() * 2.0 ** 200).similarity, base.similarity)


@pytest.mark.parametrize("options", [dict(), dict(similarity="blocks"), dict(adaptive_k=True, mutual=True)])
def test_extreme_scales_give_the_graph_of_the_unscaled_states(options):
    x = _states()
    builder = GraphBuilder(GraphConfig(k=4, **options))
    base = _build_quietly(builder, x)
    for scaled in (x * 1e20, x.double() * 1e39, x.double() * 1e-300, x.double() * 1e300):
        graph = _build_quietly(builder, scaled)
        assert torch.equal(graph.edge_index, base.edge_index) and torch.equal(graph.stage, base.stage)
        assert torch.isfinite(graph.similarity).all()
        torch.testing.assert_close(graph.similarity, base.similarity, rtol=0, atol=1e-6)
        assert torch.equal(graph.dominant_block, base.dominant_block)


def test_topk_kernel_reference_follows_both_rules():
    x = _states(1, 20)
    x[0, 4] = 0.0
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="topk_similarity")
        idx, sim, blocks = topk_similarity(x, 3)
        big_idx, big_sim, _ = topk_similarity(x.double() * 1e39, 3)
    assert (idx[0, 4] == -1).all() and not (idx == 4).any()
    assert torch.equal(big_idx, idx) and torch.isfinite(big_sim).all()
    torch.testing.assert_close(big_sim, sim, rtol=0, atol=1e-6)
