"""integrate_into_graph: memory edges with provenance, causality, and an untouched input graph."""
import copy

import pytest
import torch

from sosm.common.blocks import BLOCK_DIM, N_BLOCKS
from sosm.graph.types import STAGE_ID, SemanticGraph, empty_edge_columns
from sosm.memory import HNSWMemory, integrate_into_graph, memory_node_states

B, T, D = 2, 6, 64


def _graph(causal=True, padding_mask=None):
    """Sequential edges t-1 -> t in each sample (between real tokens)."""
    real = torch.ones(B, T, dtype=torch.bool) if padding_mask is None else padding_mask
    src = torch.tensor([b * T + t - 1 for b in range(B) for t in range(1, T) if real[b, t - 1] and real[b, t]],
                       dtype=torch.long)
    cols = empty_edge_columns(src.numel())
    cols["similarity"] = torch.rand(src.numel(), generator=torch.Generator().manual_seed(0))
    return SemanticGraph(edge_index=torch.stack([src, src + 1]), batch_size=B, seq_len=T, causal=causal,
                         padding_mask=padding_mask, **cols)


def _memory(n=30, seed=0, start=0):
    g = torch.Generator().manual_seed(seed)
    memory = HNSWMemory(dim=D)
    data = torch.randn(n, D, generator=g)
    memory.add(data, positions=torch.arange(start, start + n),
               metadata=[{"document": "past", "offset": i} for i in range(n)])
    return memory, data


def _states(seed=1):
    return torch.randn(B, T, D, generator=torch.Generator().manual_seed(seed))


def test_edges_match_brute_force_with_full_provenance():
    memory, data = _memory()
    states = _states()
    graph = _graph()
    out = integrate_into_graph(graph, states, memory, k=4, threshold=0.05, positions=100)
    mem = out.edges_of_type("memory")
    n_old = graph.num_edges
    assert torch.equal(out.edge_index[:, :n_old], graph.edge_index)
    assert (mem.edge_index[0] >= B * T).all() and (mem.stage == STAGE_ID["memory"]).all()
    assert torch.isnan(mem.gate_score).all() and torch.equal(mem.edge_weight, mem.similarity)
    sims = torch.nn.functional.normalize(states.reshape(B * T, D), dim=1) @ torch.nn.functional.normalize(data, dim=1).T
    expected = set()
    for token in range(B * T):
        values, ids = sims[token].topk(4)
        expected |= {(int(i), token) for v, i in zip(values, ids) if v >= 0.05}
    node_ids = [m["memory_id"] for m in out.memory_meta]
    got = {(node_ids[s - B * T], t) for s, t in mem.edge_index.T.tolist()}
    assert got == expected
    for (s, t), sim, blocks, dom in zip(mem.edge_index.T.tolist(), mem.similarity, mem.block_similarity, mem.dominant_block):
        mid = node_ids[s - B * T]
        assert torch.allclose(sim, sims[t, mid], atol=1e-5)
        q, m = states.reshape(B * T, D)[t].view(N_BLOCKS, BLOCK_DIM), data[mid].view(N_BLOCKS, BLOCK_DIM)
        assert torch.allclose(blocks, torch.nn.functional.cosine_similarity(q, m, dim=1), atol=1e-5)
        assert dom == blocks.argmax()
    meta = out.memory_meta[0]
    assert meta["document"] == "past" and meta["offset"] == meta["memory_id"] == meta["position"]
    assert torch.equal(memory_node_states(out, memory)[0], data[meta["memory_id"]])


def test_input_graph_is_not_modified():
    graph = _graph()
    before = copy.deepcopy(graph)
    memory, _ = _memory()
    integrate_into_graph(graph, _states(), memory, k=3, threshold=-1.0, positions=100)
    for name in ("edge_index", "edge_type", "edge_weight", "block_similarity", "similarity", "stage"):
        assert torch.equal(getattr(graph, name), getattr(before, name))
    assert graph.memory_meta is None


def test_causal_tokens_only_see_entries_written_before_them():
    memory, _ = _memory(n=30)
    positions = torch.arange(B * T).reshape(B, T) * 3  # token (b, t) sits at stream position 3 * (b*T + t)
    out = integrate_into_graph(_graph(), _states(), memory, k=30, threshold=-1.0, positions=positions)
    mem = out.edges_of_type("memory")
    written = torch.tensor([m["position"] for m in out.memory_meta])
    assert (written[mem.edge_index[0] - B * T] < positions.reshape(-1)[mem.edge_index[1]]).all()
    per_token = torch.bincount(mem.edge_index[1], minlength=B * T)
    assert per_token.tolist() == [min(30, int(p)) for p in positions.reshape(-1)]


def test_later_memory_entries_do_not_change_earlier_edges():
    early, data = _memory(n=20)
    late = HNSWMemory(dim=D)
    late.add(data, positions=torch.arange(20), metadata=[{"document": "past", "offset": i} for i in range(20)])
    # the tokens' own states (perfect matches), written at the last token's position and after:
    # p < i is strict, so not even the last token (at 20 + T - 1) may see them
    late.add(_states().reshape(B * T, D), positions=torch.arange(20 + T - 1, 20 + T - 1 + B * T))
    a = integrate_into_graph(_graph(), _states(), early, k=3, threshold=-1.0, positions=20)
    b = integrate_into_graph(_graph(), _states(), late, k=3, threshold=-1.0, positions=20)
    assert torch.equal(a.edge_index, b.edge_index) and torch.equal(a.similarity, b.similarity)


def test_bidirectional_needs_no_positions_and_padding_gets_no_edges():
    memory, _ = _memory()
    padding = torch.ones(B, T, dtype=torch.bool)
    padding[1, 3:] = False
    out = integrate_into_graph(_graph(causal=False, padding_mask=padding), _states(), memory, k=2, threshold=-1.0)
    targets = out.edges_of_type("memory").edge_index[1]
    assert targets.numel() == 2 * int(padding.sum()) and not set(targets.tolist()) & {T + 3, T + 4, T + 5}


def test_second_integration_reuses_memory_nodes():
    memory, _ = _memory()
    once = integrate_into_graph(_graph(), _states(), memory, k=2, threshold=-1.0, positions=100)
    twice = integrate_into_graph(once, _states(2), memory, k=2, threshold=-1.0, positions=100)
    ids = [m["memory_id"] for m in twice.memory_meta]
    assert len(ids) == len(set(ids)) and ids[:len(once.memory_meta)] == [m["memory_id"] for m in once.memory_meta]
    assert twice.num_edges > once.num_edges


def test_non_semantic_dim_gives_zero_block_similarity():
    memory = HNSWMemory(dim=8)
    memory.add(torch.randn(10, 8), positions=torch.arange(10))
    out = integrate_into_graph(_graph(), torch.randn(B, T, 8), memory, k=2, threshold=-1.0, positions=10)
    mem = out.edges_of_type("memory")
    assert mem.num_edges == 2 * B * T and (mem.block_similarity == 0).all() and (mem.dominant_block == 0).all()


def test_bad_inputs_raise_clear_errors():
    memory, _ = _memory()
    with pytest.raises(ValueError, match="positions is required in causal mode"):
        integrate_into_graph(_graph(), _states(), memory, k=2, threshold=0.0)
    with pytest.raises(ValueError, match=r"states must be a tensor \[B=2, T=6, 64\]"):
        integrate_into_graph(_graph(), torch.randn(B, T + 1, D), memory, k=2, threshold=0.0, positions=0)
    with pytest.raises(ValueError, match="positions must be an int"):
        integrate_into_graph(_graph(), _states(), memory, k=2, threshold=0.0, positions=torch.arange(T + 1))
    with pytest.raises(TypeError, match="positions must be an int or an integer tensor"):
        integrate_into_graph(_graph(), _states(), memory, k=2, threshold=0.0, positions=torch.zeros(T))
    with pytest.raises(ValueError, match="finite"):
        integrate_into_graph(_graph(), torch.full((B, T, D), float("nan")), memory, k=2, threshold=0.0, positions=0)


def test_all_padding_adds_no_edges():
    memory, _ = _memory()
    graph = _graph(padding_mask=torch.zeros(B, T, dtype=torch.bool))
    out = integrate_into_graph(graph, _states(), memory, k=2, threshold=-1.0, positions=100)
    assert out.num_edges == graph.num_edges and out.memory_meta == []


def test_integrating_the_same_states_twice_adds_no_duplicate_edge():
    memory, _ = _memory()
    once = integrate_into_graph(_graph(), _states(), memory, k=2, threshold=-1.0, positions=100)
    twice = integrate_into_graph(once, _states(), memory, k=2, threshold=-1.0, positions=100)
    assert torch.equal(twice.edge_index, once.edge_index) and twice.memory_meta == once.memory_meta
