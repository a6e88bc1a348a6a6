"""Conversions: PyG Data, networkx, dense mask vs neighbour index vs FlexAttention BlockMask."""
import copy

import pytest
import torch
import torch.nn.functional as F

from sosm.graph.convert import to_block_mask, to_dense_mask, to_neighbor_index, to_networkx, to_pyg
from sosm.graph.types import SemanticGraph, empty_edge_columns

from ._graphs import sample_graph


def test_dense_mask_and_neighbor_index_agree():
    for causal in (True, False):
        g = sample_graph(causal=causal, with_memory=True)
        before = copy.deepcopy(g)
        dense = to_dense_mask(g, include_self=False)
        nbr = to_neighbor_index(g)
        assert nbr.shape[:2] == (2, 6)
        rebuilt = torch.zeros_like(dense)
        b, t, k = (nbr >= 0).nonzero(as_tuple=True)
        rebuilt[b, t, nbr[b, t, k]] = True
        assert torch.equal(rebuilt, dense)
        valid = torch.where(nbr >= 0, nbr, torch.iinfo(torch.long).max)
        assert torch.equal(valid, valid.sort(-1).values)  # ascending, -1 last
        assert torch.equal(to_dense_mask(g) & ~torch.eye(6, dtype=torch.bool), dense)
        assert torch.equal(g.edge_index, before.edge_index)
    causal = to_dense_mask(sample_graph(causal=True))
    assert not (causal & ~torch.tril(torch.ones(6, 6, dtype=torch.bool))).any()


def test_neighbor_index_exact():
    g = sample_graph(causal=True)
    assert to_neighbor_index(g)[0].tolist() == [[-1, -1, -1], [0, -1, -1], [1, -1, -1], [0, 2, -1], [1, 3, -1],
                                                [0, 2, 4]]
    empty = SemanticGraph(edge_index=torch.empty(2, 0, dtype=torch.long), **empty_edge_columns(0),
                          batch_size=1, seq_len=3)
    assert to_neighbor_index(empty).shape == (1, 3, 0)


def test_block_mask_matches_dense_attention():
    g = sample_graph(causal=False)
    bm = to_block_mask(g, block_size=128)
    from torch.nn.attention.flex_attention import flex_attention

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 6, 8, generator=gen) for _ in range(3))
    got = flex_attention(q, k, v, block_mask=bm)
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=to_dense_mask(g)[:, None])
    assert torch.allclose(got, want, atol=1e-5)
    assert bm.to_dense().shape == (2, 1, 1, 1)
    with pytest.raises(ValueError, match="block_size"):
        to_block_mask(g, block_size=0)


def test_to_pyg_fields():
    g = sample_graph(causal=True, with_memory=True)
    data = to_pyg(g)
    assert data.num_nodes == 13 and data.edge_index.shape == g.edge_index.shape
    assert torch.equal(data.edge_attr, g.block_similarity) and torch.equal(data.stage, g.stage)
    assert data.batch[:12].tolist() == [0] * 6 + [1] * 6 and data.batch[12] == -1
    assert data.pos_in_sample[7] == 1 and torch.equal(data.landmarks, g.landmarks)
    data.edge_index[0, 0] = 5
    assert g.edge_index[0, 0] == 0  # a copy


def test_to_networkx_attributes():
    g = sample_graph(causal=True, with_memory=True)
    nxg = to_networkx(g)
    assert nxg.number_of_nodes() == 13 and nxg.number_of_edges() == g.num_edges
    assert nxg.nodes[1]["label"] == "cat" and nxg.nodes[8]["position"] == 2 and nxg.nodes[12]["kind"] == "memory"
    edge = nxg.edges[0, 5]
    assert edge["type"] == "semantic" and edge["stage"] == "temporal_gate" and edge["gate"] == 0.75
    assert edge["dominant_block"] in ("I", "D", "R1", "R2", "K", "M", "T", "P", "S", "C", "N", "X", "E", "F", "A", "Z")
    assert nxg.edges[12, 4]["type"] == "memory"


def test_type_errors():
    with pytest.raises(TypeError, match="SemanticGraph"):
        to_dense_mask("graph")


def test_block_mask_multiblock_random_graph():
    from torch.nn.attention.flex_attention import flex_attention

    gen = torch.Generator().manual_seed(3)
    T, E = 150, 600
    dst = torch.randint(1, T, (E,), generator=gen)
    src = (torch.rand(E, generator=gen) * dst).long()
    key = torch.unique(dst * T + src)
    g = SemanticGraph(edge_index=torch.stack([key % T, key // T]), **empty_edge_columns(key.numel()),
                      batch_size=1, seq_len=T).validate()
    q, k, v = (torch.randn(1, 1, T, 16, generator=gen) for _ in range(3))
    got = flex_attention(q, k, v, block_mask=to_block_mask(g, block_size=64))
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=to_dense_mask(g)[:, None])
    assert torch.allclose(got, want, atol=1e-5)
