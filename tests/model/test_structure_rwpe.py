"""Random-walk graph coordinates (``structure="rwpe"``): causal and equal to their definition.

The RWPE path is a new way for the future to reach position i (a walk over the whole graph would
return through later positions), so it gets the same perturbation check as the landmark path, plus
a control showing that a bidirectional walk fails it. The Jacobian check and decoding equality run
with RWPE cases in tests/model/test_causality.py and test_generation.py.
"""
import pytest
import torch

from sosm.graph.landmarks import random_walk_encoding
from sosm.model import SOSMConfig

from .conftest import RWPE, SEQ, VOCAB, random_ids, tiny_model

RWPE_CASES = [("hybrid", "rope"), ("hybrid", "graph_rope"), ("hybrid", "graph_alibi"),
              ("graph_attention", "graph_rope"), ("graph_attention", "graph_alibi")]
IDS = [f"{m}-{p}" for m, p in RWPE_CASES]


def rwpe_model(model_name="hybrid", positional="graph_rope", **overrides):
    return tiny_model(model_name, positional, **RWPE, **overrides)


@pytest.mark.parametrize("model_name, positional", RWPE_CASES, ids=IDS)
def test_perturbing_the_future_leaves_past_logits_and_coordinates_unchanged(model_name, positional):
    model = rwpe_model(model_name, positional)
    ids = random_ids()
    logits, state = model(ids)
    assert state.landmark_coords.shape == (2, SEQ, 5) and state.landmark_coords.abs().sum() > 0
    for t in (0, 6, SEQ - 2):
        changed = ids.clone()
        changed[:, t + 1:] = torch.randint(0, VOCAB, (2, SEQ - t - 1), generator=torch.Generator().manual_seed(t))
        other_logits, other = model(changed)
        assert torch.equal(logits[:, :t + 1], other_logits[:, :t + 1]), f"logits <= {t} moved"
        assert torch.equal(state.landmark_coords[:, :t + 1], other.landmark_coords[:, :t + 1])
        assert torch.equal(state.landmark_encoding[:, :t + 1], other.landmark_encoding[:, :t + 1])


def test_coordinates_are_the_walk_on_each_prefix_of_the_model_graph():
    model = rwpe_model()
    ids = random_ids(batch=1)
    _, state = model(ids)
    graph, scale = state.graph, model.config.graph.max_distance + 1
    assert graph.landmark_distances is None  # no landmarks are built for RWPE coordinates
    src, dst = graph.edge_index
    for t in (0, 5, SEQ - 1):
        keep = (src <= t) & (dst <= t)
        want = random_walk_encoding(torch.stack([src[keep], dst[keep]]), t + 1, 5)[t] * scale
        torch.testing.assert_close(state.landmark_coords[0, t], want, rtol=0, atol=1e-5)


def test_a_walk_over_the_whole_graph_would_leak_and_the_check_sees_it(monkeypatch):
    import sosm.graph.landmarks as landmarks

    honest = landmarks.random_walk_encoding

    def whole_graph(edge_index, num_nodes, walk_length, causal=False, seq_len=None):
        return honest(edge_index, num_nodes, walk_length)  # returns through later positions

    monkeypatch.setattr(landmarks, "random_walk_encoding", whole_graph)
    model = rwpe_model("hybrid", "graph_rope")  # rope would not do: at init the structure moves Δ by ~1e-6, lost in the logits
    ids = random_ids()
    changed = ids.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % VOCAB
    (logits, state), (other_logits, other) = model(ids), model(changed)
    assert not torch.equal(state.landmark_coords[:, :8], other.landmark_coords[:, :8])
    assert not torch.equal(logits[:, :8], other_logits[:, :8])


def test_bidirectional_model_walks_the_whole_graph():
    model = tiny_model("graph_attention", "graph_rope", structure="rwpe", rwpe_steps=3, causal=False,
                       graph={"k": 4, "window": 1, "causal": False})
    _, state = model(random_ids(batch=1))
    graph = state.graph
    want = random_walk_encoding(graph.edge_index, SEQ, 3) * (model.config.graph.max_distance + 1)
    torch.testing.assert_close(state.landmark_coords[0], want, rtol=0, atol=1e-5)


def test_config_checks():
    with pytest.raises(ValueError, match="structure"):
        SOSMConfig(model="hybrid", structure="spectral")
    with pytest.raises(ValueError, match="rwpe_steps"):
        SOSMConfig(model="hybrid", structure="rwpe", rwpe_steps=0)
    with pytest.raises(ValueError, match="rwpe_steps=12"):  # head_dim 16: 8 rotation pairs
        SOSMConfig(model="hybrid", d_model=32, n_heads=2, structure="rwpe", rwpe_steps=12, positional="graph_rope")
    ok = SOSMConfig(model="hybrid", structure="rwpe", positional="graph_alibi", graph={"num_landmarks": 0})
    assert ok.structure_dims == ok.rwpe_steps == 8
    assert SOSMConfig(model="transformer", structure="rwpe").structure_dims == 0
