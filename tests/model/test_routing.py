"""Routing primitives and the MoE feed-forward: invariants, hand computations, the naive per-token reference.

The causal capacity and prefix ranks against sequential loops written here; every routing's
invariants (capacity respected at every prefix, combine weights as specified, dropped pairs
contributing nothing); the Switch load-balancing loss and the z-loss against hand computations;
the batched experts against a per-token loop; Soft MoE refused where causal; the non-causal forms
caught by the same perturbation the causal ones pass; DePass of the layer on its own.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from sosm.model import SOSMConfig, param_count
from sosm.model.mixers import MoEFeedForward
from sosm.model.routing import (auxiliary_loss, clip_to_capacity, expert_choice, load_balancing_loss, prefix_capacity,
                                rank_scores, router_z_loss, routing_stats, soft_routing, token_choice)

E, D = 4, 8


def naive_clip(candidates, capacity, start=None):
    """``kept_e(t) = min(kept_e(t-1) + r_e(t), C_t)``, one position at a time."""
    B, T, n = candidates.shape
    count = torch.zeros(B, n, dtype=torch.long) if start is None else start.clone()
    kept = torch.zeros_like(candidates)
    for t in range(T):
        take = candidates[:, t] & (count < capacity[t])
        kept[:, t] = take
        count = count + take.long()
    return kept, count


def naive_rank(scores, causal):
    B, T = scores.shape
    out = torch.zeros(B, T, dtype=torch.long)
    for b in range(B):
        for t in range(T):
            for s in range(T if not causal else t + 1):
                if scores[b, s] > scores[b, t] or (scores[b, s] == scores[b, t] and s < t):
                    out[b, t] += 1
    return out


def moe(routing="topk", k=2, capacity=1.25, causal=True, seed=0, noise=0.0, **kw):
    torch.manual_seed(seed)
    layer = MoEFeedForward(D, 12, E, k=k, routing=routing, capacity_factor=capacity, causal=causal, **kw)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(noise * torch.randn_like(p))  # biases off zero, so every path of the layer is exercised
    return layer


def test_prefix_capacity_and_schedule():
    assert prefix_capacity(torch.arange(6), 0.3125).tolist() == [1, 1, 1, 2, 2, 2]  # ceil(0.3125 (t+1))
    assert prefix_capacity(torch.arange(4), 0.5).tolist() == [1, 1, 2, 2]


@pytest.mark.parametrize("seed", range(4))
def test_clip_to_capacity_equals_the_sequential_rule(seed):
    g = torch.Generator().manual_seed(seed)
    candidates = torch.rand(3, 23, 5, generator=g) < 0.6
    capacity = torch.cummax(torch.randint(0, 9, (23,), generator=g), 0).values  # non-decreasing
    kept, after = clip_to_capacity(candidates, capacity)
    ref_kept, ref_after = naive_clip(candidates, capacity)
    assert torch.equal(kept, ref_kept) and torch.equal(after, ref_after)
    start = torch.randint(0, 3, (3, 5), generator=g)  # decoding: counts carried from before
    capacity = capacity + 3
    assert torch.equal(clip_to_capacity(candidates, capacity, start)[0], naive_clip(candidates, capacity, start)[0])


@pytest.mark.parametrize("causal", [True, False])
def test_rank_scores_equals_the_definition_ties_to_the_earlier(causal):
    scores = torch.tensor([[0.5, 0.1, 0.5, 0.9, 0.1, 0.5, 0.0]])  # ties on purpose
    assert torch.equal(rank_scores(scores, causal), naive_rank(scores, causal))
    scores = torch.randn(2, 17)
    assert torch.equal(rank_scores(scores, causal), naive_rank(scores, causal))
    if causal:  # the prefix given separately (decoding) ranks the same
        assert torch.equal(rank_scores(scores[:, 9:], True, previous=scores[:, :9]), rank_scores(scores, True)[:, 9:])


def prefix_counts_within_capacity(kept, fraction):
    counts = kept.long().cumsum(1)  # [B, T, E] kept up to and including t
    return bool((counts <= prefix_capacity(torch.arange(kept.shape[1]), fraction).view(1, -1, 1)).all())


@pytest.mark.parametrize("k", [1, 2])
def test_token_choice_invariants(k):
    logits = torch.randn(3, 40, E) * 3
    logits[:, :, 0] += 2.0  # crowd expert 0 so the capacity binds
    r = token_choice(logits, k=k, capacity_factor=1.0, causal=True)
    assert torch.equal(r.candidates.sum(-1), torch.full((3, 40), k))
    assert not (r.kept & ~r.candidates).any()
    assert prefix_counts_within_capacity(r.kept, 1.0 * k / E)  # capacity respected at every prefix
    assert (~r.kept & r.candidates).any(), "the crowded expert must drop something"
    assert torch.all(r.weights[~r.kept] == 0)
    full = token_choice(logits, k=k, capacity_factor=0.0)  # no capacity: the combine weights as specified
    if k == 1:  # Switch: the top probability itself
        torch.testing.assert_close(full.weights.sum(-1), full.probs.max(-1).values)
    else:  # renormalised over the top k
        torch.testing.assert_close(full.weights.sum(-1), torch.ones(3, 40))
    undropped = r.kept.sum(-1) == k
    torch.testing.assert_close(r.weights.sum(-1)[undropped], full.weights.sum(-1)[undropped])


def test_non_causal_token_choice_is_one_capacity_over_the_sequence():
    logits = torch.randn(2, 30, E)
    logits[..., 1] += 4
    r = token_choice(logits, k=1, capacity_factor=1.0, causal=False)
    assert int(r.kept.sum(1).max()) == math.ceil(30 / E)  # the crowded expert is filled to C = ceil(cf k T / E)
    assert torch.equal(r.kept, naive_clip(r.candidates, torch.full((30,), math.ceil(30 / E)))[0])


def test_expert_choice_invariants():
    logits = torch.randn(2, 33, E)
    r = expert_choice(logits, k=2, capacity_factor=1.0, causal=True)
    assert prefix_counts_within_capacity(r.kept, 2 / E)
    assert r.kept[:, 0].all(), "token 0 is every expert's best of its one-token prefix"
    torch.testing.assert_close(r.weights, r.probs * r.kept)
    exact = expert_choice(logits, k=2, capacity_factor=1.0, causal=False)  # the paper's form: exactly C each
    assert torch.equal(exact.kept.sum(1), torch.full((2, E), math.ceil(2 * 33 / E)))
    top = logits.softmax(-1).topk(math.ceil(2 * 33 / E), dim=1).indices  # [B, C, E]
    assert torch.equal(exact.kept, torch.zeros_like(exact.kept).scatter_(1, top, True))


def test_soft_routing_weights_are_convex():
    r = soft_routing(torch.randn(2, 9, E, 3))
    torch.testing.assert_close(r.dispatch.sum(1), torch.ones(2, E, 3))  # each slot: a convex mix of tokens
    torch.testing.assert_close(r.combine.sum((2, 3)), torch.ones(2, 9))  # each token: a convex mix of slots


def test_load_balancing_loss_by_hand():
    probs = torch.tensor([[[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1], [0.5, 0.1, 0.4]]])
    chosen = torch.tensor([[[1, 0, 0], [1, 0, 0], [0, 1, 0], [1, 0, 0]]]).bool()
    # f = (3/4, 1/4, 0); P = (1.9/4, 1.4/4, 0.7/4); loss = 3 * (3/4 * 1.9/4 + 1/4 * 1.4/4) = 3 * 7.1 / 16
    assert float(load_balancing_loss(probs, chosen)) == pytest.approx(3 * 7.1 / 16, rel=1e-6)
    two = torch.tensor([[[1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 1, 0]]]).bool()  # top-2: each choice counts 1/8
    f = torch.tensor([3, 3, 2]) / 8
    assert float(load_balancing_loss(probs, two)) == pytest.approx(float(3 * (f * probs[0].mean(0)).sum()), rel=1e-6)
    uniform = torch.full((1, 6, 3), 1 / 3)
    assert float(load_balancing_loss(uniform, torch.eye(3).bool().repeat(2, 1)[None])) == pytest.approx(1.0)


def test_router_z_loss_by_hand():
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0]]])
    assert float(router_z_loss(logits)) == pytest.approx((math.log(2) ** 2 + math.log(4) ** 2) / 2, rel=1e-6)


def reference_moe(layer, h):
    """``sum_e w_te FFN_e(h_t)``, one token and one expert at a time, from the layer's own routing."""
    _, r = layer.route(h)
    out = torch.zeros_like(h)
    B, T, _ = h.shape
    for b in range(B):
        for t in range(T):
            for e in range(E):
                if r.kept[b, t, e]:
                    hidden = F.gelu(h[b, t] @ layer.w_in[e] + layer.b_in[e])
                    out[b, t] += r.weights[b, t, e] * (hidden @ layer.w_out[e] + layer.b_out[e])
    return out, r


@pytest.mark.parametrize("routing,k,capacity", [("topk", 1, 1.0), ("topk", 2, 1.0), ("topk", 2, 0.0),
                                                ("expert_choice", 2, 1.0)])
def test_batched_experts_equal_a_per_token_loop(routing, k, capacity):
    layer = moe(routing, k, capacity, noise=0.3)
    h = torch.randn(2, 11, D)
    out, r = reference_moe(layer, h)
    torch.testing.assert_close(layer(h), out, rtol=1e-5, atol=1e-6)
    unrouted = ~r.kept.any(-1)
    if routing == "topk" and capacity:
        assert unrouted.any() or (r.candidates & ~r.kept).any()
    assert torch.count_nonzero(layer(h)[unrouted]) == 0, "a token no expert kept adds nothing: only its residual"


def test_a_dropped_token_passes_through_the_residual_of_its_block():
    from sosm.model.context import LayerContext
    from sosm.model.mixers import DenseAttention

    torch.manual_seed(0)
    config = SOSMConfig(model="transformer", d_model=D, n_heads=2, moe_experts=E, moe_k=1, moe_capacity=0.5)
    block = DenseAttention(config).eval()
    with torch.no_grad():
        block.mlp.router.weight.zero_()
        block.mlp.router.weight[0] = 1.0  # every token prefers expert 0 ...
    x = torch.randn(1, 12, D).abs()  # ... (positive inputs: the norm keeps their sign)
    captured = {}
    block.norm_mlp.register_forward_hook(lambda m, args, out: captured.update(x_mid=args[0]))
    out = block(x, LayerContext())
    r = block.mlp._last
    dropped = ~r.kept.any(-1)[0]
    assert dropped.sum() >= 6, "capacity 0.5 * 1 * 12 / 4: expert 0 keeps 2 of 12"
    torch.testing.assert_close(out[0, dropped], captured["x_mid"][0, dropped], rtol=0, atol=0)
    assert not torch.equal(out[0, ~dropped], captured["x_mid"][0, ~dropped])
    assert routing_stats(block)["mlp.dropped"] == pytest.approx(float(dropped.float().mean()))


def test_soft_moe_is_refused_where_causal_and_works_bidirectionally():
    with pytest.raises(ValueError, match="Soft MoE is not causal: each slot is a softmax-weighted mix of every token"):
        SOSMConfig(model="transformer", moe_experts=4, moe_routing="soft")
    with pytest.raises(ValueError, match="routing='soft' cannot be causal"):
        MoEFeedForward(D, 12, E, routing="soft")
    layer = moe("soft", causal=False, slots_per_expert=2, noise=0.2)
    h = torch.randn(2, 7, D)
    _, r = layer.route(h)
    xs = torch.einsum("btes,btd->besd", r.dispatch, h)
    slots = F.gelu(xs @ layer.w_in[None, :, None].squeeze(2) + layer.b_in[None, :, None]) @ layer.w_out[None].squeeze(0)
    expected = torch.einsum("btes,besd->btd", r.combine, slots + layer.b_out[None, :, None])
    torch.testing.assert_close(layer(h), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(NotImplementedError, match="Soft MoE has no causal step"):
        layer.step(h[:, :1], 0, {})


@pytest.mark.parametrize("routing", ["topk", "expert_choice", "soft"])
def test_the_non_causal_forms_are_caught_by_the_checks_the_causal_ones_pass(routing):
    """Control: in the sequence-level forms an earlier output depends on the sequence's length (a capacity over T)
    and, for expert choice and Soft MoE, on later tokens' content; the causal forms depend on neither."""
    torch.manual_seed(1)
    h = torch.randn(1, 24, D)
    changed = h.clone()
    changed[:, 12:] = torch.randn(1, 12, D) * 3
    leaky = moe(routing, capacity=0.5, causal=False, slots_per_expert=1)
    with torch.no_grad():
        leaky.router.weight[0] = 0.0  # an expert nobody prefers early on, wanted by every later token below
        changed[:, 12:] = leaky.router.weight[1] * 50
    assert not torch.equal(leaky(h)[:, :12], leaky(h[:, :12])), "the capacity over T reads the length"
    if routing != "topk":  # position-order top-k with a capacity over T leaks the length only
        assert not torch.equal(leaky(h)[:, :12], leaky(changed)[:, :12]), "later content moves earlier outputs"
    if routing != "soft":
        causal = moe(routing, capacity=0.5, causal=True)
        assert torch.equal(causal(h)[:, :12], causal(changed)[:, :12])
        torch.testing.assert_close(causal(h)[:, :12], causal(h[:, :12]), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("routing", ["topk", "expert_choice", "soft"])
def test_layer_depass_is_exact(routing):
    from sosm.model.mixers.linear import norm_linear  # noqa: F401  (the helper the layer composes)

    layer = moe(routing, capacity=1.0, causal=routing != "soft", slots_per_expert=2, noise=0.3)
    norm = torch.nn.RMSNorm(D, eps=1e-5)
    x = torch.randn(2, 10, D)
    xc = torch.stack([x * 0.3, x * 0.5, x * 0.2, torch.zeros_like(x)])  # the last is the bias component
    parts = layer.linear_mode(norm, x, xc, bias_index=3)
    torch.testing.assert_close(parts.sum(0), layer(norm(x)), rtol=1e-5, atol=1e-6)
    assert parts[3].abs().sum() > 0, "expert biases land in the bias component"


@pytest.mark.parametrize("routing", ["topk", "expert_choice"])
def test_gradients_reach_the_router_and_the_aux_loss_is_reported(routing):
    layer = moe(routing, capacity=1.0)
    out = layer(torch.randn(2, 9, D))
    out.square().sum().backward(retain_graph=True)  # the aux loss shares the router logits
    assert layer.router.weight.grad.abs().sum() > 0, "through the combine weights"
    layer.zero_grad()
    aux = auxiliary_loss(layer)
    assert aux.requires_grad and float(aux.detach()) > 0
    aux.backward()
    assert layer.router.weight.grad.abs().sum() > 0, "through the balance / z-loss"
    stats = routing_stats(layer)
    assert set(stats) == {f"model.{k}" for k in ("load", "dropped", "unrouted", "experts_per_token", "entropy",
                                                  "aux_loss")}
    assert sum(stats["model.load"]) == pytest.approx(1.0, abs=1e-4)
    assert 0 < stats["model.entropy"] <= math.log(E) + 1e-6


def test_same_seed_same_routing_and_output():
    h = torch.randn(2, 13, D)
    a, b = moe("topk", seed=3), moe("topk", seed=3)
    assert torch.equal(a(h), b(h)) and torch.equal(a._last.kept, b._last.kept)
    assert torch.equal(a(h), a(h))


def test_config_knobs_and_errors():
    config = SOSMConfig(model="transformer", d_model=32, n_heads=2, moe_experts=8)
    assert config.moe_expert_hidden * config.moe_k == config.mlp_hidden  # k experts hold the dense MLP's width
    dense = SOSMConfig(model="transformer", d_model=32, n_heads=2)
    per_expert = 2 * 32 * config.moe_expert_hidden + config.moe_expert_hidden + 32
    assert param_count(config) - param_count(dense) == config.n_layers * (
        8 * per_expert + 8 * 32 - (2 * 32 * config.mlp_hidden + config.mlp_hidden + 32))
    with pytest.raises(ValueError, match="moe_experts=4 is invalid; accepted: 0 for layers \\['mamba'\\]"):
        SOSMConfig(model="mamba", moe_experts=4)
    with pytest.raises(ValueError, match="moe_k=5 is invalid"):
        SOSMConfig(model="transformer", moe_experts=4, moe_k=5)
    with pytest.raises(ValueError, match="moe_capacity=0 is invalid"):
        SOSMConfig(model="transformer", moe_experts=4, moe_routing="expert_choice", moe_capacity=0)
    with pytest.raises(ValueError, match="moe_experts=1 is invalid"):
        SOSMConfig(model="transformer", moe_experts=1)
