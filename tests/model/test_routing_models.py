"""Models with routed layers: the causality suite on every causal routing mode, decoding, DePass, Mixture-of-Depths.

Every causal mode (top-k with k = 1 and 2 under a prefix capacity that drops tokens, expert
choice by prefix rank, Mixture-of-Depths around attention, graph attention and Mamba, and MoE
inside a Mixture-of-Depths block) as a model: the future never reaches the past (perturbation,
and a zero Jacobian of the stack's output w.r.t. later stack inputs), a sample is the same alone
and in a batch, step-by-step decoding equals the forward, DePass components sum to the logits,
gradients reach every router, same seed same output. Soft MoE's refusal is in test_routing.py.
"""
import pytest
import torch

from sosm.model import SOSMConfig, SOSMModel
from sosm.model.context import LayerContext
from sosm.model.mixers import MixtureOfDepths, MoEFeedForward, build_mixer, get_mixer, resolve_mixer_name
from sosm.model.routing import auxiliary_loss, routing_stats, token_routes

from .conftest import SEQ, VOCAB, random_ids, tiny_model

MOE = dict(moe_experts=4, moe_capacity=0.5)
CASES = {
    "transformer-switch": dict(model="transformer", moe_k=1, **MOE),
    "transformer-top2": dict(model="transformer", moe_k=2, **MOE),
    "transformer-expert_choice": dict(model="transformer", moe_routing="expert_choice", **MOE),
    "graph_attention-top2-alibi": dict(model="graph_attention", positional="graph_alibi", **MOE),
    "hybrid-expert_choice": dict(model="hybrid", **{**MOE, "moe_routing": "expert_choice"}),
    "transformer-mod": dict(model="transformer", n_layers=2, mod_every=2),
    "hybrid-mod-mamba": dict(model="hybrid", layer_pattern="A,mod:M", n_layers=3),
    "hybrid-mod-graph_attention-rope": dict(model="hybrid", layer_pattern="mod:A,M", n_layers=2, positional="graph_rope"),
    "hybrid-mod-graph_attention-alibi-moe": dict(model="hybrid", layer_pattern="M,mod:A", n_layers=2,
                                                  positional="graph_alibi", **MOE),
    "rwkv-mod": dict(model="rwkv", n_layers=2, mod_every=1, mod_capacity=0.3),
}


def model_for(case: str, seed: int = 3) -> SOSMModel:
    settings = dict(CASES[case])
    return tiny_model(settings.pop("model"), settings.pop("positional", "rope"), seed=seed, **settings)


@pytest.mark.parametrize("case", CASES)
def test_future_tokens_never_reach_the_past(case):
    model = model_for(case)
    ids = random_ids()
    logits, _ = model(ids)
    for t in (0, 4, 9, SEQ - 2):
        changed = ids.clone()
        changed[:, t + 1:] = torch.randint(0, VOCAB, (2, SEQ - t - 1), generator=torch.Generator().manual_seed(t))
        assert torch.equal(logits[:, :t + 1], model(changed)[0][:, :t + 1]), f"{case}: logits <= {t} moved"


@pytest.mark.parametrize("case", CASES)
def test_jacobian_wrt_later_stack_inputs_is_zero(case):
    model = model_for(case)
    captured = {}
    handle = model.stack.register_forward_pre_hook(lambda module, args: captured.update(x=args[0], ctx=args[1]))
    model(random_ids(batch=1, seq=13))
    handle.remove()
    x = captured["x"].detach().requires_grad_(True)
    out, _ = model.stack(x, captured["ctx"])
    for t in (0, 5, 12):
        (grad,) = torch.autograd.grad(out[:, t].sum(), x, retain_graph=True)
        assert grad[:, :t + 1].abs().sum() > 0
        assert torch.count_nonzero(grad[:, t + 1:]) == 0, f"{case}: out[{t}] depends on inputs after {t}"


@pytest.mark.parametrize("case", CASES)
def test_a_sample_is_the_same_alone_and_in_a_batch(case):
    model = model_for(case)
    ids = random_ids(batch=3)
    batched, _ = model(ids)
    for b in range(3):
        torch.testing.assert_close(model(ids[b:b + 1])[0][0], batched[b], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", CASES)
def test_step_by_step_decoding_equals_the_full_forward(case):
    model = model_for(case)
    ids = random_ids(batch=3)
    full, _ = model(ids)
    decoder = model.decoder(batch_size=3)
    stepped = torch.stack([decoder.step(ids[:, t]) for t in range(SEQ)], dim=1)
    torch.testing.assert_close(stepped, full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", CASES)
def test_depass_components_sum_to_the_logits(case):
    from sosm.analysis import DePass

    model = model_for(case)
    ids = random_ids(batch=1)
    for by in ("token", "edge_type") + (("block",) if model.config.uses_graph else ()):
        assert DePass(model).run(ids, by=by).completeness_error() < 1e-4, (case, by)


@pytest.mark.parametrize("case", CASES)
def test_routing_is_exercised_reported_and_trains_every_router(case):
    model = model_for(case).train()
    ids = random_ids()
    logits, _ = model(ids)
    layers = [m for m in model.modules() if isinstance(m, (MoEFeedForward, MixtureOfDepths))]
    assert layers
    stats = routing_stats(model)
    if any(isinstance(m, MoEFeedForward) for m in layers):
        assert any(k.endswith(".dropped") and v > 0 or k.endswith(".unrouted") and v > 0 for k, v in stats.items()), \
            f"{case}: capacity 0.5 should leave some token to its residual: {stats}"
    if any(isinstance(m, MixtureOfDepths) for m in layers):
        through = [v for k, v in stats.items() if k.endswith(".through")]
        assert through and all(0 < v < 1 for v in through), stats
    (logits.logsumexp(-1).mean() + auxiliary_loss(model)).backward()
    for m in layers:
        assert m.router.weight.grad is not None and m.router.weight.grad.abs().sum() > 0, f"{case}: {type(m).__name__}"
    routes = token_routes(model)
    assert len(routes) == len(layers) and all(len(r.get("experts", r.get("through"))) == 2 for r in routes)


@pytest.mark.parametrize("case", ["transformer-top2", "hybrid-mod-graph_attention-alibi-moe"])
def test_same_seed_same_output_and_routes(case):
    ids = random_ids()
    a, b = model_for(case, seed=5), model_for(case, seed=5)
    assert torch.equal(a(ids)[0], b(ids)[0])
    assert token_routes(a) == token_routes(b)


def test_gradient_checkpointing_keeps_the_gradients_and_the_aux_loss():
    grads = []
    for checkpointing in (False, True):
        model = model_for("transformer-top2")
        model.stack.gradient_checkpointing = checkpointing
        model.train()
        logits, _ = model(random_ids())
        (logits.logsumexp(-1).mean() + auxiliary_loss(model)).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-7)


# ---- Mixture-of-Depths ---------------------------------------------------------------------------------------
def test_mod_names_placement_and_errors():
    assert resolve_mixer_name("mod:M") == "mod:mamba" and get_mixer("mod:A").inner_class.name == "graph_attention"
    assert get_mixer("mod:A").needs_graph and get_mixer("mod:A") is get_mixer("mod:graph_attention")
    assert SOSMConfig(layer_pattern="mod:mamba", n_layers=2).layer_types == ("mod:mamba", "mod:mamba")
    assert SOSMConfig(n_layers=4, layer_pattern="AMMM", mod_every=2).layer_types == (
        "graph_attention", "mod:mamba", "mamba", "mod:mamba")
    with pytest.raises(ValueError, match="wraps a wrapper"):
        resolve_mixer_name("mod:mod:mamba")
    with pytest.raises(ValueError, match="unknown mixer wrapper 'deep'"):
        SOSMConfig(layer_pattern="deep:mamba")
    with pytest.raises(ValueError, match="mod_capacity=0 is invalid"):
        SOSMConfig(mod_every=2, mod_capacity=0)
    with pytest.raises(ValueError, match="memory=True is invalid"):
        SOSMConfig(layer_pattern="A,mod:M", memory=True)


def test_mod_choice_is_a_causal_capped_prefix_top_k():
    torch.manual_seed(0)
    layer = build_mixer("mod:attention", SOSMConfig(model="transformer", d_model=16, n_heads=2, mod_capacity=0.5))
    scores = torch.randn(3, 40)
    scores[0] = torch.arange(40.0)  # rising scores: every token ranks first in its prefix, the cap decides
    chosen = layer.choose(scores)
    assert chosen[:, 0].all()
    cap = torch.ceil(0.5 * torch.arange(1, 41)).long()
    assert (chosen.long().cumsum(1) <= cap).all()
    assert int(chosen[0].sum()) == 20
    assert torch.equal(layer.choose(scores[:, 25:], scores[:, :25], chosen[:, :25].sum(1)), chosen[:, 25:])


def test_mod_sends_the_chosen_tokens_through_the_block_and_the_rest_around():
    torch.manual_seed(0)
    config = SOSMConfig(model="graph_attention", d_model=16, n_heads=2, mod_capacity=0.5, graph={"num_landmarks": 0})
    layer = build_mixer("mod:graph_attention", config).eval()
    x = torch.randn(1, 8, 16)
    nbrs = torch.full((1, 8, 1), -1)
    nbrs[0, 1:, 0] = torch.arange(7)  # each token's predecessor
    from sosm.kernels import GraphLayout
    ctx = LayerContext(neighbors=nbrs, layout=GraphLayout.build(nbrs))
    with torch.no_grad():
        out = layer(x, ctx)
        chosen = layer.choose(layer.scores(x))[0]
        where = chosen.nonzero().flatten()
        compact = {int(p): i for i, p in enumerate(where)}
        sub_nbrs = torch.tensor([[[compact.get(int(nbrs[0, p, 0]), -1)] for p in where]])  # renumbered by hand
        inner = layer.inner(x[:, where], LayerContext(neighbors=sub_nbrs, layout=GraphLayout.build(sub_nbrs)))
        gate = torch.sigmoid(layer.scores(x))[0, where][:, None]
    assert torch.equal(out[0, ~chosen], x[0, ~chosen]), "tokens around the block are untouched"
    torch.testing.assert_close(out[0, where], x[0, where] + gate * (inner[0] - x[0, where]), rtol=1e-6, atol=1e-6)


def test_mod_refuses_the_carried_window_form():
    model = model_for("hybrid-mod-mamba")
    with pytest.raises(NotImplementedError, match="has no carried-window form"):
        model(random_ids(), mamba_state=[{} for _ in model.stack.layers])
