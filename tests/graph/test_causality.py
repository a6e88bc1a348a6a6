"""Causality of every causal builder option (docs/ARCHITECTURE.md, invariant 1).

Resample the states (and temporal states) after position t; every edge whose target is <= t,
with all its provenance columns, must be unchanged, and so must the landmark distances at
positions <= t.
"""
import itertools

import pytest
import torch

from sosm.graph import GraphBuilder, GraphConfig

T, CUT = 48, 29

FILTERS = [dict(), dict(adaptive_k=True), dict(mutual=True), dict(threshold=0.05),
           dict(temporal_gate=True, tau_mu=0.0, tau_t=0.4, tau_high=0.5),
           dict(adaptive_k=True, mutual=True, threshold=0.0, temporal_gate=True, tau_mu=-0.2)]
EXTRAS = [dict(), dict(fibonacci_shortcuts=True, fibonacci_max=34),
          dict(betweenness_shortcuts=2, betweenness_chunk=8, betweenness_samples=None),
          dict(num_landmarks=4, max_distance=6), dict(successor_edges=True, num_landmarks=3, max_distance=6)]
MODES = ["full", "blocks", "projection"]


def _prefix(graph, t):
    keep = graph.edge_index[1] % graph.seq_len <= t
    sub = graph.select(keep)
    return [sub.edge_index, sub.edge_type, sub.edge_weight, sub.block_similarity, sub.dominant_block, sub.similarity,
            sub.gate_score, sub.stage]


def _check(cfg, seed, pad):
    gen = torch.Generator().manual_seed(seed)
    x, temporal = torch.randn(2, T, 64, generator=gen), torch.randn(2, T, 32, generator=gen)
    mask = None
    if pad:
        mask = torch.ones(2, T, dtype=torch.bool)
        mask[0, 5:8] = False
        mask[1, 40:] = False
    y, temporal_y = x.clone(), temporal.clone()
    y[:, CUT + 1:] = torch.randn(2, T - CUT - 1, 64, generator=gen)
    temporal_y[:, CUT + 1:] = torch.randn(2, T - CUT - 1, 32, generator=gen)
    builder = GraphBuilder(cfg)
    a, b = builder.build(x, temporal, mask), builder.build(y, temporal_y, mask)
    for u, v in zip(_prefix(a, CUT), _prefix(b, CUT)):
        assert torch.equal(u, v) if not u.is_floating_point() else torch.allclose(u, v, rtol=0, atol=0, equal_nan=True)
    if cfg.num_landmarks:
        assert torch.equal(a.landmarks, b.landmarks)
        assert torch.equal(a.landmark_distances[:, :CUT + 1], b.landmark_distances[:, :CUT + 1])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("filters", FILTERS, ids=lambda d: "+".join(d) or "plain")
def test_semantic_options_are_causal(mode, filters):
    _check(GraphConfig(similarity=mode, k=3, k_min=1, k_max=6, topk_tile=16, **filters), seed=1, pad=False)


@pytest.mark.parametrize("filters,extras", list(itertools.product(FILTERS, EXTRAS[1:])),
                         ids=lambda d: "+".join(d) or "plain")
def test_shortcuts_and_landmarks_are_causal(filters, extras):
    _check(GraphConfig(k=3, k_min=1, k_max=6, topk_tile=16, **filters, **extras), seed=2, pad=True)


def test_everything_at_once_with_padding_and_window():
    cfg = GraphConfig(k=4, window=3, k_min=2, k_max=7, adaptive_k=True, mutual=True, threshold=0.0,
                      temporal_gate=True, tau_mu=-0.5, fibonacci_shortcuts=True, betweenness_shortcuts=1,
                      successor_edges=True,
                      betweenness_chunk=8, num_landmarks=3, max_distance=5, topk_tile=16)
    for seed in range(3):
        _check(cfg, seed=seed, pad=True)
