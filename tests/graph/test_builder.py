"""GraphBuilder: exact small graphs, oracle property test, priority, batch independence, hooks."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from sosm.graph import GraphBuilder, GraphConfig, SemanticGraph
from sosm.graph.builder import _merge_parts, _part
from sosm.graph.similarity import featurize
from sosm.graph.types import EDGE_TYPE_ID, STAGE_ID

from . import oracles

SEQ, SEM, SHORT = EDGE_TYPE_ID["sequential"], EDGE_TYPE_ID["semantic"], EDGE_TYPE_ID["shortcut"]


def _unit_states(dims):
    x = torch.zeros(1, len(dims), 64)
    for t, d in enumerate(dims):
        x[0, t, d] = 1.0
    return x


def test_hand_checked_causal_graph():
    g = GraphBuilder(GraphConfig(k=2, window=1, similarity="full")).build(_unit_states([0, 1, 0, 1, 0, 2]))
    want = [(0, 1, SEQ), (0, 2, SEM), (1, 2, SEQ), (0, 3, SEM), (1, 3, SEM), (2, 3, SEQ), (0, 4, SEM),
            (2, 4, SEM), (3, 4, SEQ), (0, 5, SEM), (1, 5, SEM), (4, 5, SEQ)]  # by target, then source
    got = list(zip(g.edge_index[0].tolist(), g.edge_index[1].tolist(), g.edge_type.tolist()))
    assert got == want
    assert g.edge_weight.tolist() == [1, 1, 1, 0, 1, 1, 1, 1, 1, 0, 0, 1]
    assert g.stage.tolist() == [STAGE_ID["window" if t == SEQ else "topk"] for t in g.edge_type.tolist()]
    assert torch.isnan(g.gate_score).all()
    assert g.dominant_block.tolist()[1] == 0 and g.block_similarity[1, 0] == 1.0


def test_hand_checked_bidirectional_graph():
    g = GraphBuilder(GraphConfig(k=1, k_min=1, window=1, similarity="full", causal=False)).build(
        _unit_states([0, 1, 0, 1]))
    got = sorted(zip(g.edge_index[0].tolist(), g.edge_index[1].tolist(), g.edge_type.tolist()),
                 key=lambda e: (e[1], e[0]))
    want = [(1, 0, SEQ), (2, 0, SEM), (0, 1, SEQ), (2, 1, SEQ), (3, 1, SEM), (0, 2, SEM), (1, 2, SEQ), (3, 2, SEQ),
            (1, 3, SEM), (2, 3, SEQ)]
    assert got == want


def test_priority_and_order_of_merge():
    ei = lambda pairs: torch.tensor(pairs, dtype=torch.long).T  # noqa: E731
    parts = [_part(ei([(0, 1), (1, 2)]), "sequential", "window"), _part(ei([(0, 2), (1, 2)]), "semantic", "topk"),
             _part(ei([(0, 2), (0, 1), (1, 3)]), "shortcut", "fibonacci")]
    merged = _merge_parts(parts, 4)
    got = list(zip(*merged["edge_index"].tolist(), merged["edge_type"].tolist()))
    assert got == [(0, 1, SEQ), (0, 2, SEM), (1, 2, SEQ), (1, 3, SHORT)]


def _oracle_graph(x, cfg, mask):
    """Expected {(src, dst): (type, similarity)} from the brute-force oracles."""
    batch, length, _ = x.shape
    f = featurize(x, cfg).numpy()
    out = {}
    for b in range(batch):
        real = np.ones(length, bool) if mask is None else mask[b].numpy()
        kq = oracles.adaptive_k(x[b].numpy(), cfg.k, cfg.alpha, cfg.k_min, cfg.k_max) if cfg.adaptive_k else cfg.k
        s = oracles.score_matrix(f[b])
        mutual = oracles.mutual_edges(f[b], kq, cfg.causal, cfg.window, real) if cfg.mutual else None
        for i, lst in enumerate(oracles.topk_lists(f[b], kq, cfg.causal, cfg.window, real)):
            for j, score in lst:
                if mutual is not None and (j, i) not in mutual:
                    continue
                if cfg.threshold is not None and not score > cfg.threshold:
                    continue
                out[(b * length + j, b * length + i)] = (SEM, float(score))
        for i in range(length):
            for j in range(length):
                if real[i] and real[j] and (1 <= i - j <= cfg.window or (not cfg.causal and 1 <= j - i <= cfg.window)):
                    out[(b * length + j, b * length + i)] = (SEQ, float(s[i, j]))
    return out


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1), length=st.integers(12, 30), k=st.integers(1, 4), window=st.integers(0, 2),
       causal=st.booleans(), mode=st.sampled_from(["full", "blocks", "projection"]), adaptive=st.booleans(),
       mutual=st.booleans(), threshold=st.sampled_from([None, 0.0, 0.2]), pad=st.booleans())
def test_builder_matches_oracle(seed, length, k, window, causal, mode, adaptive, mutual, threshold, pad):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, length, 64, generator=gen)
    mask = (torch.rand(2, length, generator=gen) > 0.2) if pad else None
    cfg = GraphConfig(k=k, window=window, causal=causal, similarity=mode, adaptive_k=adaptive, k_min=1,
                      k_max=k + 2, mutual=mutual, threshold=threshold, topk_tile=16)
    g = GraphBuilder(cfg).build(x, padding_mask=mask)
    want = _oracle_graph(x, cfg, mask)
    src, dst = g.edge_index.tolist()
    assert list(zip(dst, src)) == sorted(zip(dst, src))  # ordered by target then source, unique
    got = {(s, d): (t, sim) for s, d, t, sim in zip(src, dst, g.edge_type.tolist(), g.similarity.tolist())}
    assert got.keys() == want.keys()
    for key, (etype, sim) in want.items():
        assert got[key][0] == etype
        if etype == SEM:
            assert np.float32(got[key][1]) == np.float32(sim)
    semantic = g.edge_type == SEM
    assert torch.equal(g.edge_weight[semantic], g.similarity[semantic]) and (g.edge_weight[~semantic] == 1).all()
    base = "mutual" if mutual else ("adaptive_k" if adaptive else "topk")
    stage = "threshold" if threshold is not None else base
    assert (g.stage[semantic] == STAGE_ID[stage]).all() and (g.stage[~semantic] == STAGE_ID["window"]).all()


def _sample(g: SemanticGraph, b: int):
    """Edges of sample b as positions within the sample, with every provenance column."""
    length = g.seq_len
    keep = g.edge_index[1] // length == b
    sub = g.select(keep)
    return (sub.edge_index % length, sub.edge_type, sub.edge_weight, sub.block_similarity, sub.dominant_block,
            sub.similarity, sub.gate_score, sub.stage)


def _same(a, b):
    return all(torch.equal(u, v) if not u.is_floating_point() else torch.allclose(u, v, atol=0, rtol=0, equal_nan=True)
               for u, v in zip(a, b))


@pytest.mark.parametrize("options", [dict(), dict(adaptive_k=True, mutual=True), dict(temporal_gate=True, tau_mu=0.0),
                                     dict(causal=False, mutual=True, threshold=0.0)])
def test_batch_independence(options):
    gen = torch.Generator().manual_seed(3)
    x, t = torch.randn(3, 40, 64, generator=gen), torch.randn(3, 40, 32, generator=gen)
    builder = GraphBuilder(GraphConfig(topk_tile=16, **options))
    batch = builder.build(x, t)
    perm = torch.tensor([2, 0, 1])
    permuted = builder.build(x[perm], t[perm])
    for b in range(3):
        alone = builder.build(x[b:b + 1], t[b:b + 1])
        assert _same(_sample(alone, 0), _sample(batch, b))
        assert _same(_sample(permuted, int((perm == b).nonzero())), _sample(batch, b))


def test_deterministic_and_inputs_not_mutated():
    gen = torch.Generator().manual_seed(4)
    x, t = torch.randn(2, 30, 64, generator=gen), torch.randn(2, 30, 32, generator=gen)
    mask = torch.ones(2, 30, dtype=torch.bool)
    mask[1, 25:] = False
    copies = (x.clone(), t.clone(), mask.clone())
    cfg = GraphConfig(temporal_gate=True, adaptive_k=True, mutual=True, fibonacci_shortcuts=True, num_landmarks=3)
    a = GraphBuilder(cfg).build(x, t, mask)
    b = GraphBuilder(cfg).build(x, t, mask)
    assert _same(_sample(a, 0), _sample(b, 0)) and _same(_sample(a, 1), _sample(b, 1))
    assert torch.equal(a.landmark_distances, b.landmark_distances)
    assert all(torch.equal(u, v) for u, v in zip((x, t, mask), copies))


def test_padding_gets_no_edges_and_gate_scores_recorded():
    gen = torch.Generator().manual_seed(5)
    x, t = torch.randn(2, 30, 64, generator=gen), torch.randn(2, 30, 32, generator=gen)
    mask = torch.ones(2, 30, dtype=torch.bool)
    mask[0, 10:14] = False
    mask[1, 20:] = False
    g = GraphBuilder(GraphConfig(temporal_gate=True, tau_mu=-1.0, tau_t=0.0)).build(x, t, mask)
    real = mask.reshape(-1)
    assert real[g.edge_index[0]].all() and real[g.edge_index[1]].all()
    semantic = g.edge_type == SEM
    assert torch.isfinite(g.gate_score[semantic]).all() and torch.isnan(g.gate_score[~semantic]).all()
    assert (g.stage[semantic] == STAGE_ID["temporal_gate"]).all()
    assert torch.equal(g.padding_mask, mask)


def test_custom_gate_decides():
    class Closed(torch.nn.Module):
        def forward(self, source, target):
            return torch.zeros(source.shape[0])

    x, t = torch.randn(1, 20, 64), torch.randn(1, 20, 32)
    g = GraphBuilder(GraphConfig(temporal_gate=True, tau_high=1.0), gate=Closed()).build(x, t)
    assert int((g.edge_type == SEM).sum()) == 0


@pytest.mark.parametrize("causal", [True, False])
def test_topk_fn_hook_gives_the_same_graph(causal):
    from sosm.kernels.topk_similarity import topk_similarity_ref

    gen = torch.Generator().manual_seed(6)
    x = torch.randn(2, 50, 64, generator=gen)
    mask = torch.ones(2, 50, dtype=torch.bool)
    mask[1, 7:12] = False
    for mode in ("full", "blocks", "projection"):
        cfg = GraphConfig(similarity=mode, causal=causal, k=4)
        ours = GraphBuilder(cfg).build(x, padding_mask=mask)
        hooked = GraphBuilder(cfg, topk_fn=topk_similarity_ref).build(x, padding_mask=mask)
        assert torch.equal(ours.edge_index, hooked.edge_index) and torch.equal(ours.similarity, hooked.similarity)


def test_shortcuts_and_landmarks_are_wired():
    x = torch.randn(2, 64, 64)
    cfg = GraphConfig(fibonacci_shortcuts=True, fibonacci_max=21, betweenness_shortcuts=2, betweenness_chunk=16,
                      num_landmarks=4, max_distance=8)
    g = GraphBuilder(cfg).build(x)
    assert int((g.edge_type == SHORT).sum()) > 0
    assert set(g.stage[g.edge_type == SHORT].tolist()) <= {STAGE_ID["fibonacci"], STAGE_ID["betweenness"]}
    assert g.landmarks.shape == (2, 4) and g.landmark_distances.shape == (2, 64, 4)
    assert not math.isnan(float(g.similarity.sum()))


def test_gate_scores_are_bit_identical_alone_and_in_any_batch():
    """Issue 12 item 8: the gate runs on a batch-dependent number of edge rows; a matmul (or a vectorised
    activation's scalar tail) over them may round a row differently, so an edge at tau_t could flip."""
    gen = torch.Generator().manual_seed(7)
    x, t = torch.randn(5, 33, 64, generator=gen), torch.randn(5, 33, 32, generator=gen)
    builder = GraphBuilder(GraphConfig(k=4, temporal_gate=True, tau_mu=-1.0, tau_t=0.0))  # every edge gated, kept
    compositions = [list(range(5)), [4, 3, 2, 1, 0], [1, 3], [2, 2, 2]]
    for b in range(5):
        alone = _sample(builder.build(x[b:b + 1], t[b:b + 1]), 0)
        for order in compositions:
            if b not in order:
                continue
            batch = builder.build(x[order], t[order])
            together = _sample(batch, order.index(b))
            assert torch.equal(alone[6].view(torch.int32), together[6].view(torch.int32)), (b, order)
            assert _same(alone, together)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("adaptive", [False, True])
def test_triton_topk_hook_in_a_padded_frame_asks_only_for_k(causal, adaptive, monkeypatch):
    """Issue 12 item 14: a short window in the model's graph frame (T real tokens padded to max_seq_len) made
    the builder ask the hook for k + (frame - T) neighbours, up to 263, and the Triton kernel raises above 32.
    The builder now hides padding from the hook (zero states) and asks for k (k_max) only."""
    from sosm.kernels import topk_similarity
    from sosm.kernels._backend import interpreter_enabled

    if not interpreter_enabled() and not torch.cuda.is_available():
        pytest.skip("the Triton path needs CUDA or TRITON_INTERPRET=1")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    asked = []

    def triton_topk(x, k, **kwargs):
        asked.append(k)
        return topk_similarity(x, k, backend="triton", **kwargs)

    frame, real = 96, 13  # e.g. a 13-token eval window in a 96-position frame
    gen = torch.Generator().manual_seed(8)
    x = torch.zeros(2, frame, 64)
    x[:, :real] = torch.randn(2, real, 64, generator=gen)
    mask = torch.zeros(2, frame, dtype=torch.bool)
    mask[:, :real] = True
    x, mask = x.to(device), mask.to(device)
    cfg = GraphConfig(k=8, causal=causal, adaptive_k=adaptive, k_min=2, k_max=10)
    hooked = GraphBuilder(cfg, topk_fn=triton_topk).build(x, padding_mask=mask)
    assert asked == [cfg.effective_k_max]
    ours = GraphBuilder(cfg).build(x, padding_mask=mask)
    assert torch.equal(ours.edge_index, hooked.edge_index) and torch.equal(ours.similarity, hooked.similarity)
    x[:, real:] = torch.randn(2, frame - real, 64, generator=gen).to(device)  # padding need not be zero
    asked.clear()
    hooked = GraphBuilder(cfg, topk_fn=triton_topk).build(x, padding_mask=mask)
    assert asked == [cfg.effective_k_max] and torch.equal(ours.edge_index, hooked.edge_index)
