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


def _corrupt(data, change):
    data = json.loads(json.dumps(data))
    change(data)
    return data


def _set_edge(index, key, value):
    def change(data):
        data["edges"][index][key] = value
    return change


def _set_meta(key, value):
    def change(data):
        data["meta"][key] = value
    return change


def _duplicate_first_edge(data):
    data["edges"].append(dict(data["edges"][0]))
    data["meta"]["num_edges"] += 1


@pytest.mark.parametrize("change, message", [
    (_set_edge(0, "source", 99_999), r"edge 0: source 99999 .*token nodes \[0, 12\)"),
    (_set_edge(3, "target", 99_999), r"edge 3: target 99999 .*\[0, 12\)"),
    (_set_edge(2, "source", -4), r"edge 2: source -4"),
    (_set_edge(18, "source", 13), r"edge 18: memory source 13 .*memory_meta lists 1"),
    (_set_edge(18, "type", "semantic"), r"edge 18: source 12 .*token nodes"),
    (_set_edge(4, "type", "memory"), r"edge 4: memory source 4 .*>= B\*T = 12"),
    (_set_edge(1, "similarity", None), r"edge 1: similarity is NaN"),
    (_set_edge(1, "weight", None), r"edge 1: weight is NaN"),
    (_duplicate_first_edge, r"edges 0 and 19 .*same \(source, target\) pair"),
    (_set_meta("num_edges", 7), r"num_edges 7 .*19 edges"),
    (_set_meta("num_nodes", 99), r"num_nodes 99 .*B\*T = 12"),
    (_set_meta("batch_size", 0), r"batch_size 0"),
    (_set_meta("seq_len", -6), r"seq_len -6"),
    (_set_meta("landmarks", [[0, 3], [0, 99]]), r"landmarks .*\[0, T=6\).*99"),
    (_set_meta("landmarks", [[0, 3]]), r"landmarks must have shape \(2, L\)"),
    (_set_meta("landmark_distances", [[[0, 1]] * 6]), r"landmark_distances must have shape \(2, 6, 2\)"),
    (_set_meta("landmark_distances", [[[0, -3]] * 6] * 2), r"landmark_distances .*\[0, 32767\].*-3"),
    (_set_meta("padding_mask", [[True] * 5] * 2), r"padding_mask must have shape \(2, 6\)"),
    (_set_meta("padding_mask", [[True] * 6, [True, False] + [True] * 4]), r"edge .* padded token"),
    (_set_meta("tokens", [["a"] * 6]), r"tokens must be 2 lists of 6 strings"),
])
def test_loaded_graphs_are_validated_like_built_ones(tmp_path, change, message):
    """Issue 12 item 7: a loaded graph is checked as strictly as a built one, and the error names the file."""
    data = _corrupt(to_json(sample_graph(causal=True, with_memory=True)), change)
    path = tmp_path / "g.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message) as caught:
        load_json(path)
    assert "g.json" in str(caught.value)


def test_validate_names_bad_columns_of_a_built_graph():
    graph = sample_graph()
    graph.dominant_block[2] = 16
    with pytest.raises(ValueError, match=r"edge 2: dominant_block 16 .*\[0, 16\)"):
        graph.validate()
    graph = sample_graph()
    graph.stage[5] = 42
    with pytest.raises(ValueError, match=r"edge 5: stage 42"):
        graph.validate()
