"""Successor edges: j + 1 -> i for each semantic edge j -> i, with the semantic edge's similarity as weight."""
import pytest
import torch

from sosm.graph import GraphBuilder, GraphConfig
from sosm.graph.successor import successor_edges
from sosm.graph.types import EDGE_TYPE_ID, STAGES


def test_hand_checked_edges_causal_and_bidirectional():
    # one sample of T = 6: semantic 0 -> 4, 2 -> 3 (successor 3 == target: dropped), 4 -> 5 (5 == target)
    semantic = torch.tensor([[0, 2, 4], [4, 3, 5]])
    edges, weight = successor_edges(semantic, torch.tensor([0.9, 0.8, 0.7]), 6, causal=True)
    assert edges.tolist() == [[1], [4]] and weight.tolist() == pytest.approx([0.9])
    # bidirectional: 5 -> 1 has no successor (end of the sample), 3 -> 2 gives 4 -> 2, 1 -> 2 gives none (self)
    semantic = torch.tensor([[5, 3, 1], [1, 2, 2]])
    edges, _ = successor_edges(semantic, torch.ones(3), 6, causal=False)
    assert edges.tolist() == [[4], [2]]
    # two samples of T = 4: the successor of the last position of sample 0 would be sample 1's first: dropped
    semantic = torch.tensor([[3, 4], [1, 6]])  # bidirectional 3 -> 1 (sample 0), 4 -> 6 (sample 1)
    edges, _ = successor_edges(semantic, torch.ones(2), 4, causal=False)
    assert edges.tolist() == [[5], [6]]
    mask = torch.tensor([[True, False, True, True, True, True]])
    edges, _ = successor_edges(torch.tensor([[0], [4]]), torch.ones(1), 6, causal=True, padding_mask=mask)
    assert edges.numel() == 0  # position 1 is padding


def test_builder_adds_them_with_provenance_and_lower_priority():
    x = torch.randn(2, 24, 64, generator=torch.Generator().manual_seed(0))
    plain = GraphBuilder(GraphConfig(k=3)).build(x)
    graph = GraphBuilder(GraphConfig(k=3, successor_edges=True)).build(x)
    sem = plain.edges_of_type("semantic")
    succ = graph.edges_of_type("successor")
    T = graph.seq_len
    expected = {(int(s) + 1, int(d)) for s, d in sem.edge_index.T if (int(s) + 1) % T < int(d) % T}
    have_other = {(int(s), int(d)) for s, d in graph.edge_index.T[graph.edge_type != EDGE_TYPE_ID["successor"]]}
    assert {(int(s), int(d)) for s, d in succ.edge_index.T} == expected - have_other  # merged below the others
    assert all(STAGES[int(k)] == "successor" for k in succ.stage)
    weight_of = {(int(s), int(d)): float(w) for (s, d), w in zip(sem.edge_index.T, sem.edge_weight)}
    for (s, d), w in zip(succ.edge_index.T.tolist(), succ.edge_weight.tolist()):
        assert w == pytest.approx(weight_of[(s - 1, d)])  # the similarity of the semantic edge it follows
    # the plain part of the graph is unchanged
    same = graph.select(graph.edge_type != EDGE_TYPE_ID["successor"])
    assert torch.equal(same.edge_index, plain.edge_index) and torch.equal(same.similarity, plain.similarity)


def test_a_repeated_token_links_the_query_to_what_followed_it():
    """The recall pattern: ... k v ... k -> the second k reaches v through a successor edge."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 20, 64, generator=gen)
    x[0, 15] = x[0, 4]  # position 15 repeats position 4's state; 5 is what followed it
    graph = GraphBuilder(GraphConfig(k=2, successor_edges=True)).build(x)
    into_15 = {(int(s), int(t)) for s, t, d in zip(graph.edge_type, graph.edge_index[0], graph.edge_index[1])
               if int(d) == 15}
    assert (EDGE_TYPE_ID["semantic"], 4) in into_15 and (EDGE_TYPE_ID["successor"], 5) in into_15
