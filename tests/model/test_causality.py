"""Whole-model causality (perturbation, Jacobian), batch independence and determinism."""
import pytest
import torch

from .conftest import CASE_IDS, CASES, MIXER_KNOBS, RECALL_GRAPH, RWPE, SEQ, VOCAB, random_ids, tiny_model


#: the attention family (tests/model/test_mixers_attention_family.py), with windows and buckets that bind at SEQ=16
ATTENTION_FAMILY = [(name, MIXER_KNOBS.get(name, {}))
                    for name in ("performer", "cosformer", "sw_attention", "diff_attention", "lsh_attention")]
FAMILY_IDS = [name for name, _ in ATTENTION_FAMILY]


def _edges_of_queries_up_to(graph, t):
    src, dst = graph.edge_index
    T = graph.seq_len
    keep = (dst % T) <= t
    return sorted(zip((src[keep] // T).tolist(), (src[keep] % T).tolist(), (dst[keep] % T).tolist()))


@pytest.mark.parametrize("model_name, positional", CASES, ids=CASE_IDS)
def test_perturbing_the_future_leaves_the_past_unchanged(model_name, positional):
    _check_perturbation(tiny_model(model_name, positional))


@pytest.mark.parametrize("model_name, positional", [("hybrid", "graph_alibi"), ("graph_attention", "graph_rope")])
def test_the_recall_graph_setting_is_causal(model_name, positional):
    """Successor edges with k = 1 (the MQAR setting): the successor of a neighbour is never after the query."""
    model = tiny_model(model_name, positional, **RECALL_GRAPH)
    assert model.config.graph.successor_edges and model.config.graph.k == 1
    _check_perturbation(model)


def _check_perturbation(model):
    ids = random_ids()
    logits, state = model(ids)
    for t in (0, 6, SEQ - 2):
        changed = ids.clone()
        changed[:, t + 1:] = torch.randint(0, VOCAB, (2, SEQ - t - 1), generator=torch.Generator().manual_seed(t))
        other_logits, other = model(changed)
        assert torch.equal(logits[:, :t + 1], other_logits[:, :t + 1]), f"logits <= {t} moved"
        if state.graph is not None:
            assert _edges_of_queries_up_to(state.graph, t) == _edges_of_queries_up_to(other.graph, t)
        if state.landmark_coords is not None:  # causal landmark rule: coords of i depend only on <= i
            assert torch.equal(state.landmark_coords[:, :t + 1], other.landmark_coords[:, :t + 1])
            assert torch.equal(state.landmark_encoding[:, :t + 1], other.landmark_encoding[:, :t + 1])


@pytest.mark.parametrize("model_name, positional, overrides",
                         [("transformer", "rope", {}), ("mamba", "rope", {}), ("graph_attention", "graph_alibi", {}),
                          ("hybrid", "graph_rope", {}), ("hybrid", "graph_alibi", RWPE),
                          ("hybrid", "graph_alibi", RECALL_GRAPH), ("graph_attention", "rope", RECALL_GRAPH)])
def test_jacobian_of_logits_wrt_future_embeddings_is_zero(model_name, positional, overrides):
    model = tiny_model(model_name, positional, **overrides)
    captured = {}

    def keep(module, inputs, output):
        output.retain_grad()
        captured["embedding"] = output

    handle = model.token_embedding.register_forward_hook(keep)
    ids = random_ids(batch=1, seq=12)
    for t in (0, 9):
        logits, _ = model(ids)
        logits[:, t].sum().backward()
        grad = captured["embedding"].grad  # [1, T, E]
        assert grad[:, :t + 1].abs().sum() > 0
        assert torch.count_nonzero(grad[:, t + 1:]) == 0, f"logits[{t}] depend on embeddings after {t}"
        model.zero_grad()
    handle.remove()


@pytest.mark.parametrize("model_name, positional", [("transformer", "rope"), ("mamba", "rope"),
                                                    ("graph_attention", "graph_rope"), ("hybrid", "graph_alibi")])
def test_batch_independence(model_name, positional):
    model = tiny_model(model_name, positional)
    ids = random_ids(batch=4)
    batched, _ = model(ids)
    permutation = torch.tensor([2, 0, 3, 1])
    permuted, _ = model(ids[permutation])
    torch.testing.assert_close(permuted, batched[permutation], rtol=0, atol=1e-6)
    for b in range(4):
        alone, _ = model(ids[b:b + 1])
        torch.testing.assert_close(alone, batched[b:b + 1], rtol=0, atol=1e-6)


def test_same_seed_same_model_and_outputs():
    first, second = tiny_model("hybrid", "graph_rope", seed=3), tiny_model("hybrid", "graph_rope", seed=3)
    ids = random_ids()
    assert torch.equal(first(ids)[0], second(ids)[0])
    assert not torch.equal(first(ids)[0], tiny_model("hybrid", "graph_rope", seed=4)(ids)[0])


def test_state_record_shapes():
    model = tiny_model("hybrid", "graph_rope")
    ids = random_ids()
    logits, state = model(ids, return_hidden=True)
    assert logits.shape == (2, SEQ, VOCAB) and logits.dtype == torch.float32
    assert state.semantic.shape == (2, SEQ, 64) and state.temporal.shape == (2, SEQ, 32)
    assert state.landmark_coords.shape == (2, SEQ, 4) and state.landmark_encoding.shape == (2, SEQ, 8)
    assert len(state.hidden_states) == model.config.n_layers + 1
    assert state.graph.batch_size == 2


def test_semantic_state_is_position_invariant():
    model = tiny_model("hybrid")
    ids = random_ids(batch=1)
    _, state = model(ids)
    _, shifted = model(torch.roll(ids, 3, dims=1))
    torch.testing.assert_close(torch.roll(state.semantic, 3, dims=1), shifted.semantic, rtol=0, atol=0)
    assert not torch.equal(torch.roll(state.temporal, 3, dims=1), shifted.temporal)


@pytest.mark.parametrize("model_name", ["transformer", "mamba", "hybrid"])
def test_bf16_autocast_forward_and_backward(model_name):
    model = tiny_model(model_name, "graph_rope" if model_name == "hybrid" else "rope").train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, _ = model(random_ids())
    logits.float().logsumexp(-1).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_leaky_non_causal_graph_is_caught_by_the_perturbation_check():
    model = tiny_model("graph_attention", "rope", graph={"k": 4, "causal": False}, num_landmarks=0)
    ids = random_ids()
    changed = ids.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % VOCAB
    assert not torch.equal(model(ids)[0][:, :8], model(changed)[0][:, :8])


@pytest.mark.parametrize("model_name, knobs", ATTENTION_FAMILY, ids=FAMILY_IDS)
@pytest.mark.parametrize("positional", ["rope", "none"])
def test_attention_family_perturbation_jacobian_and_batch_independence(model_name, knobs, positional):
    """Whole models of each attention-family mixer: the future never moves past logits, d logits[t] / d
    embeddings[> t] is exactly zero, and a sample's logits are the same alone, in a batch, permuted."""
    model = tiny_model(model_name, positional, **knobs)
    ids = random_ids(batch=4)
    logits, _ = model(ids)
    for t in (0, 6, SEQ - 2):
        changed = ids.clone()
        changed[:, t + 1:] = torch.randint(0, VOCAB, (4, SEQ - t - 1), generator=torch.Generator().manual_seed(t))
        assert torch.equal(logits[:, :t + 1], model(changed)[0][:, :t + 1]), f"logits <= {t} moved"
    permutation = torch.tensor([2, 0, 3, 1])
    torch.testing.assert_close(model(ids[permutation])[0], logits[permutation], rtol=0, atol=1e-6)
    for b in range(4):
        torch.testing.assert_close(model(ids[b:b + 1])[0], logits[b:b + 1], rtol=0, atol=1e-6)
    captured = {}

    def keep(module, inputs, output):
        output.retain_grad()
        captured["embedding"] = output

    handle = model.token_embedding.register_forward_hook(keep)
    for t in (0, 9):
        out, _ = model(ids[:1, :12])
        out[:, t].sum().backward()
        grad = captured["embedding"].grad
        assert grad[:, :t + 1].abs().sum() > 0
        assert torch.count_nonzero(grad[:, t + 1:]) == 0, f"logits[{t}] depend on embeddings after {t}"
        model.zero_grad()
    handle.remove()
