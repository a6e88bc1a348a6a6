"""JSON round trip, GraphML read back with networkx, clear errors (atomic writes: tests/common)."""
import json
import math

import networkx as nx
import pytest
import torch

from sosm.graph.io import from_json, load_json, save_graphml, save_json, to_json

from ._graphs import sample_graph


def assert_same_graph(a, b):
    for name in ("edge_index", "edge_type", "edge_weight", "block_similarity", "dominant_block", "similarity",
                 "stage", "padding_mask", "landmarks", "landmark_distances"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert torch.equal(a.gate_score.isnan(), b.gate_score.isnan())
    assert torch.equal(a.gate_score.nan_to_num(-1), b.gate_score.nan_to_num(-1))
    assert (a.batch_size, a.seq_len, a.causal, a.tokens, a.memory_meta) == \
        (b.batch_size, b.seq_len, b.causal, b.tokens, b.memory_meta)


@pytest.mark.parametrize("causal", [True, False])
def test_json_round_trip(tmp_path, causal):
    g = sample_graph(causal=causal, with_memory=True)
    path = save_json(g, tmp_path / "sub" / "g.json")
    data = json.loads(path.read_text())
    assert len(data["nodes"]) == 12 and len(data["edges"]) == g.num_edges
    assert data["meta"]["landmarks"] == [[0, 3], [0, 3]] and data["meta"]["causal"] is causal
    edge = next(e for e in data["edges"] if e["stage"] == "temporal_gate")
    assert edge["type"] == "semantic" and edge["gate_score"] == 0.75 and set(edge["block_similarity"]) >= {"I", "K"}
    assert data["nodes"][1] == {"id": 1, "sample": 0, "position": 1, "label": "cat", "padded": False}
    assert_same_graph(g, load_json(path))
    assert_same_graph(g, from_json(to_json(g)))
    assert not list(tmp_path.glob("sub/.*.tmp"))


def test_graphml_reads_back(tmp_path):
    g = sample_graph(causal=True, with_memory=True)
    path = save_graphml(g, tmp_path / "g.graphml")
    back = nx.read_graphml(path)
    assert back.number_of_nodes() == 13 and back.number_of_edges() == g.num_edges
    assert back.nodes["2"]["label"] == "sat"
    edge = back.edges["0", "5"]
    assert edge["type"] == "semantic" and edge["stage"] == "temporal_gate" and edge["gate"] == 0.75
    assert math.isnan(back.edges["0", "1"]["gate"])


def test_bad_documents(tmp_path):
    with pytest.raises(ValueError, match="format"):
        from_json({"nodes": []})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        load_json(bad)
    data = to_json(sample_graph())
    data["edges"][0]["type"] = "telepathy"
    with pytest.raises(ValueError, match="malformed"):
        from_json(data)
    with pytest.raises(TypeError, match="SemanticGraph"):
        to_json({"edges": []})
