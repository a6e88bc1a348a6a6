"""DePass completeness for every layer type and partition, and exact attribution of a hand-built layer."""
import pytest
import torch
import torch.nn as nn

from sosm.analysis import DePass
from sosm.common.blocks import BLOCK_NAMES
from sosm.model import SOSMConfig
from sosm.model.mixers import GraphAttention
from sosm.model.context import LayerContext

from .conftest import CASES, tiny_ids, tiny_model

TOL = 1e-4


def _partitions(model):
    parts = ["token", "edge_type", torch.tensor([[0, 0, 1, 1, 2, 2, 0, 1, 2, 0, 1, 2]] * 2)]
    if model.config.uses_graph:
        parts += ["block", "landmark_group"]
    return parts


@pytest.mark.parametrize("name,positional", CASES)
def test_components_sum_to_logits_and_hidden_states(name, positional):
    model = tiny_model(name, positional)
    ids = tiny_ids()
    reference, state = model(ids, return_hidden=True)
    for by in _partitions(model):
        result = DePass(model).run(ids, by=by)
        assert result.names[-1] == "bias" and len(set(result.names)) == len(result.names)
        total = result.logits.sum(0)
        assert ((total - reference).abs().max() / reference.abs().max()) <= TOL, by
        for layer, hidden in zip(state.hidden_states, result.hidden):
            assert ((hidden.sum(0) - layer).abs().max() / layer.abs().max()) <= TOL, by
        parts = DePass(model).decompose(ids, by=by)
        assert set(parts) == set(result.names)


def test_partition_names_and_causal_token_components():
    model = tiny_model("hybrid")
    ids = tiny_ids(batch=1)
    result = DePass(model).run(ids, by="block")
    assert result.names == list(BLOCK_NAMES) + ["temporal", "bias"]
    tokens = DePass(model).run(ids, by="token")
    # causal: token t contributes nothing to positions before t
    for t in range(1, ids.shape[1]):
        assert tokens.logits[t, :, :t].abs().max() == 0
    edges = DePass(model).run(ids, by="edge_type")
    assert edges.names == ["self", "sequential", "semantic", "shortcut", "memory", "successor", "bias"]
    assert edges.logits[edges.names.index("semantic")].abs().max() > 0  # semantic edges carried something
    assert edges.logits[edges.names.index("memory")].abs().max() == 0  # no memory edges in this graph


def test_bad_partition_arguments():
    transformer = tiny_model("transformer")
    ids = tiny_ids()
    with pytest.raises(ValueError, match="block"):
        DePass(transformer).decompose(ids, by="block")
    with pytest.raises(ValueError, match="landmark"):
        DePass(transformer).decompose(ids, by="landmark_group")
    with pytest.raises(ValueError, match="accepted"):
        DePass(transformer).decompose(ids, by="heads")
    with pytest.raises(ValueError, match="group ids"):
        DePass(transformer).decompose(ids, by=torch.zeros(3, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="SOSMModel"):
        DePass(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="eval"):
        DePass(transformer.train())


def test_hand_built_layer_is_attributed_exactly():
    """Uniform attention (q = k = 0), identity value/output maps, MLP = constant bias b.

    Input x_t = sqrt(d) e_t has RMS 1, so the frozen norm scale is s = 1/sqrt(1 + eps); the
    layer computes out_i = x_i + s/|A(i)| sum_{j in A(i)} x_j + b with A(i) = {i} ∪ neighbours(i).
    Token j's component at query i is therefore [i == j] x_i + [j in A(i)] s/|A(i)| x_j, and b is "bias".
    """
    d, T = 8, 5
    config = SOSMConfig(model="graph_attention", d_model=d, n_heads=2, vocab_size=10, mlp_ratio=1.0, graph={"num_landmarks": 0})
    layer = GraphAttention(config).eval()
    b = torch.arange(d, dtype=torch.float32) / 10
    with torch.no_grad():
        layer.qkv.weight.zero_()
        layer.qkv.weight[2 * d:] = torch.eye(d)
        layer.out_proj.weight.copy_(torch.eye(d))
        layer.mlp.fc_in.weight.zero_(); layer.mlp.fc_in.bias.zero_()
        layer.mlp.fc_out.weight.zero_(); layer.mlp.fc_out.bias.copy_(b)
    neighbors = torch.tensor([[[-1, -1], [0, -1], [0, 1], [1, -1], [0, 2]]])
    ctx = LayerContext(neighbors=neighbors)
    x = torch.zeros(1, T, d)
    x[0, torch.arange(T), torch.arange(T)] = d ** 0.5
    xc = torch.stack([x * (torch.arange(T) == t)[None, :, None] for t in range(T)] + [torch.zeros_like(x)])
    real, comps, _ = layer.linear_mode(x, xc, ctx, bias_index=T)
    s = 1 / (1 + 1e-5) ** 0.5
    expected = torch.zeros(T + 1, 1, T, d)
    for i in range(T):
        keys = [i] + [j for j in neighbors[0, i].tolist() if j >= 0]
        expected[i, 0, i] += x[0, i]
        for j in keys:
            expected[j, 0, i] += s / len(keys) * x[0, j]
        expected[T, 0, i] = b
    torch.testing.assert_close(comps, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(real, expected.sum(0), rtol=1e-5, atol=1e-6)


def test_a_bidirectional_transformer_routes_dense_mass_both_ways():
    """by="edge_type" on a causal=False model: keys after the query are "dense" edges too; components still sum."""
    from sosm.model import SOSMModel

    torch.manual_seed(0)
    model = SOSMModel(SOSMConfig(model="transformer", causal=False, d_model=32, n_heads=2, n_layers=2,
                                 vocab_size=20, max_seq_len=16)).eval()
    result = DePass(model).run(torch.randint(0, 20, (1, 9), generator=torch.Generator().manual_seed(1)),
                               by="edge_type")
    assert result.completeness_error() < 1e-4 and "dense" in result.names
