"""Performer, cosFormer, sigmoid sliding-window, differential and LSH attention against references written here.

The generic contract (causality, decoding, carried windows, DePass completeness, state size, matching) is in
test_mixers.py; this file checks what is particular to each mixer at odd lengths (T = 7, 13): its fast form
against a dense or naive form written from the equations, its decoding form against its forward, its knobs
and their errors. Performer: the estimate approaches softmax attention as the number of features grows.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from sosm.model import SOSMConfig, SOSMModel
from sosm.model.context import LayerContext
from sosm.model.mixers import build_mixer
from sosm.model.mixers.performer import orthogonal_random_features, positive_features
from sosm.model.positional import apply_rotary, rope_angles

from .conftest import VOCAB

D_MODEL, HEADS = 32, 2
HD = D_MODEL // HEADS
LENGTHS = (7, 13)


def config_of(name, **knobs):
    settings = dict(model=name, d_model=D_MODEL, n_heads=HEADS, vocab_size=VOCAB, max_seq_len=32,
                    graph={"num_landmarks": 0})
    settings.update(knobs)
    return SOSMConfig(**settings)


def layer_of(name, seed=0, **knobs):
    torch.manual_seed(seed)
    return build_mixer(name, config_of(name, **knobs)).eval()


def angles_of(T):
    return rope_angles(torch.arange(T), HD, 10000.0)[None]  # [1, T, hd/2]


def random_qkv(T, seed, scale=1.0, batch=2):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, T, HEADS, HD, generator=g) * scale for _ in range(3))  # [B, T, H, hd]


def decode(layer, x, rotary=True):
    """``layer.step`` token by token from a fresh cache (rotary angles of each position): ``[B, T, d]``."""
    cache = layer.allocate_cache(x.shape[0], x.device, x.dtype)
    out = []
    for t in range(x.shape[1]):
        ctx = LayerContext(position=t, angles=angles_of(t + 1)[:, t:t + 1] if rotary else None)
        out.append(layer.step(x[:, t:t + 1], ctx, cache))
    return torch.cat(out, 1)


def causal_mask(T):
    return torch.ones(T, T, dtype=torch.bool).tril()


@pytest.mark.parametrize("name,knobs", [("performer", {"performer_features": 24}), ("cosformer", {}),
                                        ("sw_attention", {"attention_window": 4}), ("diff_attention", {}),
                                        ("lsh_attention", {"lsh_buckets": 4, "lsh_window": 2})])
@pytest.mark.parametrize("T", LENGTHS)
def test_incremental_decoding_equals_the_full_forward(name, knobs, T):
    layer = layer_of(name, seed=T, **knobs)
    x = torch.randn(2, T, D_MODEL, generator=torch.Generator().manual_seed(T))
    with torch.no_grad():
        full = layer(x, LayerContext(angles=angles_of(T)))
        torch.testing.assert_close(decode(layer, x), full, rtol=1e-5, atol=1e-5)


# ---- Performer ---------------------------------------------------------------------------------------------

def favor_reference(q, k, v, omega, causal=True):
    """FAVOR+ from the paper's formula, float64: ``φ(x) = exp(ω·x − |x|²/2) / sqrt(m)`` at ``x / hd^(1/4)``."""
    hd = q.shape[-1]
    q, k, v, omega = (t.double() for t in (q, k, v, omega))

    def phi(x):
        x = x / hd ** 0.25
        return torch.exp(torch.einsum("bthd,hmd->bthm", x, omega) - x.pow(2).sum(-1, keepdim=True) / 2) \
            / math.sqrt(omega.shape[1])

    weights = torch.einsum("bihm,bjhm->bhij", phi(q), phi(k))  # [B, H, T, T]
    if causal:
        weights = weights * causal_mask(q.shape[1])
    weights = weights / weights.sum(-1, keepdim=True)
    return torch.einsum("bhij,bjhd->bihd", weights, v)


@pytest.mark.parametrize("T", LENGTHS)
@pytest.mark.parametrize("chunk_size", [1, 4, 64])
def test_performer_equals_favor_plus_written_from_the_formula(T, chunk_size):
    layer = layer_of("performer", performer_features=40, chunk_size=chunk_size)
    q, k, v = random_qkv(T, seed=T, scale=0.5)
    expected = favor_reference(q, k, v, layer.omega)
    torch.testing.assert_close(layer.attend(q, k, v, LayerContext()).double(), expected, rtol=1e-4, atol=1e-5)


def test_performer_features_are_orthogonal_in_blocks_with_gaussian_norms():
    torch.manual_seed(0)
    omega = orthogonal_random_features(2, 40, 16)  # [H, m, hd]: blocks of 16, 16, 8 rows
    assert omega.shape == (2, 40, 16)
    unit = F.normalize(omega, dim=-1)
    for start in (0, 16, 32):
        block = unit[:, start:start + 16]
        gram = block @ block.transpose(-1, -2)
        torch.testing.assert_close(gram, torch.eye(gram.shape[-1]).expand_as(gram), rtol=0, atol=1e-5)
    assert not torch.allclose(omega.norm(dim=-1), omega.norm(dim=-1)[..., :1].expand(-1, 40))  # norms vary


def test_performer_estimate_approaches_softmax_attention_as_features_grow():
    """Mean error of the estimate against exact causal softmax attention falls roughly like 1/sqrt(m)."""
    T = 9
    q, k, v = random_qkv(T, seed=1, scale=0.3, batch=1)  # small logits: past the heavy-tailed regime
    scores = torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(HD)
    exact = torch.einsum("bhij,bjhd->bihd", torch.softmax(scores.masked_fill(~causal_mask(T), float("-inf")), -1), v)
    features = (16, 64, 256, 1024)
    errors = []
    for m in features:
        trials = []
        for seed in range(12):
            torch.manual_seed(seed)
            omega = orthogonal_random_features(HEADS, m, HD)
            scale = HD ** -0.25
            phi_q, phi_k = positive_features(q * scale, omega, True), positive_features(k * scale, omega, False)
            weights = torch.einsum("bihm,bjhm->bhij", phi_q, phi_k) * causal_mask(T)
            estimate = torch.einsum("bhij,bjhd->bihd", weights / weights.sum(-1, keepdim=True), v)
            trials.append((estimate - exact).pow(2).mean().sqrt())
        errors.append(torch.stack(trials).mean())
    errors = torch.stack(errors)
    assert (errors[1:] < errors[:-1]).all(), errors
    log_m, log_e = torch.log(torch.tensor(features, dtype=torch.float64)), torch.log(errors.double())
    slope = ((log_m - log_m.mean()) * (log_e - log_e.mean())).sum() / (log_m - log_m.mean()).pow(2).sum()
    assert -0.9 < slope < -0.3, f"error slope {slope:.2f} in log-log (expected about -0.5): {errors.tolist()}"


def test_performer_redraws_every_n_training_forwards_and_resumes_whatever_the_global_rng():
    """Redraws come from the layer's own seed buffer: a resumed layer (or another rank, whose global RNG differs)
    draws the same features."""
    layer = layer_of("performer", performer_features=8, performer_redraw=2).train()
    x = torch.randn(1, 5, D_MODEL)
    first = layer.omega.clone()
    layer(x, LayerContext())
    layer(x, LayerContext())
    assert torch.equal(layer.omega, first) and int(layer.forwards_since_draw) == 2
    saved = {key: value.clone() for key, value in layer.state_dict().items()}
    torch.manual_seed(1)
    layer(x, LayerContext())  # the third forward draws new features before it runs
    redrawn = layer.omega.clone()
    assert not torch.equal(redrawn, first) and int(layer.forwards_since_draw) == 1
    resumed = layer_of("performer", seed=5, performer_features=8, performer_redraw=2).train()
    resumed.load_state_dict(saved)
    torch.manual_seed(2)  # another global RNG state, as on another rank
    resumed(x, LayerContext())
    assert torch.equal(resumed.omega, redrawn)
    layer.eval()
    layer(x, LayerContext())
    layer(x, LayerContext())
    assert torch.equal(layer.omega, redrawn)  # evaluation never redraws
    assert {"omega", "forwards_since_draw", "draw_seed"} <= set(layer.state_dict())


def test_performer_bidirectional_form_when_the_model_is_not_causal():
    config = config_of("performer", performer_features=32)
    config.causal = False  # the knob another change adds to SOSMConfig; the mixer reads getattr(config, "causal", True)
    torch.manual_seed(0)
    layer = build_mixer("performer", config).eval()
    q, k, v = random_qkv(7, seed=2, scale=0.5)
    expected = favor_reference(q, k, v, layer.omega, causal=False)
    torch.testing.assert_close(layer.attend(q, k, v, LayerContext()).double(), expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(NotImplementedError, match="bidirectional model has no recurrent step"):
        layer.step(torch.randn(1, 1, D_MODEL), LayerContext(), {})


def test_performer_redraw_with_gradient_checkpointing_is_refused():
    with pytest.raises(ValueError, match="SOSMConfig.performer_redraw=3 is invalid; accepted: 0 with gradient_chec"):
        config_of("performer", performer_redraw=3, gradient_checkpointing=True)


# ---- cosFormer ---------------------------------------------------------------------------------------------

def cosformer_reference(q, k, v, horizon):
    """Quadratic cosFormer, float64: ``relu(q_i)·relu(k_j) cos(π/2 (i − j)/M)`` over ``j <= i``, row-normalised."""
    T = q.shape[1]
    i = torch.arange(T, dtype=torch.float64)
    reweight = torch.cos(math.pi / 2 * (i[:, None] - i[None, :]) / horizon) * causal_mask(T)
    weights = torch.einsum("bihd,bjhd->bhij", F.relu(q.double()), F.relu(k.double())) * reweight
    weights = weights / weights.sum(-1, keepdim=True).clamp_min(1e-6)
    return torch.einsum("bhij,bjhd->bihd", weights, v.double())


@pytest.mark.parametrize("T", LENGTHS)
@pytest.mark.parametrize("chunk_size", [1, 3, 64])
def test_cosformer_prefix_sum_equals_its_quadratic_form(T, chunk_size):
    layer = layer_of("cosformer", chunk_size=chunk_size, max_seq_len=20)
    q, k, v = random_qkv(T, seed=T)
    expected = cosformer_reference(q, k, v, horizon=20)
    torch.testing.assert_close(layer.attend(q, k, v, LayerContext()).double(), expected, rtol=1e-5, atol=1e-5)


def test_cosformer_refuses_positions_beyond_max_seq_len():
    layer = layer_of("cosformer", max_seq_len=8)
    q, k, v = random_qkv(9, seed=0)
    with pytest.raises(ValueError, match="position 8 is beyond max_seq_len=8"):
        layer.attend(q, k, v, LayerContext())


# ---- sigmoid sliding-window attention ----------------------------------------------------------------------

def sliding_sigmoid_reference(q, k, v, window, temperature):
    """Dense masked form: ``σ(q·k / sqrt(hd) / τ)`` inside ``i − W < j <= i``, divided by the row sum."""
    T = q.shape[1]
    gap = torch.arange(T)[:, None] - torch.arange(T)[None, :]
    band = (gap >= 0) & (gap < window)
    weights = torch.sigmoid(torch.einsum("bihd,bjhd->bhij", q.double(), k.double()) / math.sqrt(q.shape[-1])
                            / temperature) * band
    return torch.einsum("bhij,bjhd->bihd", weights / weights.sum(-1, keepdim=True), v.double())


@pytest.mark.parametrize("T", LENGTHS)
@pytest.mark.parametrize("window,temperature", [(1, 1.0), (3, 0.5), (5, 2.0), (20, 1.0)])
def test_sliding_window_equals_the_dense_masked_reference(T, window, temperature):
    layer = layer_of("sw_attention", attention_window=window, sigmoid_temperature=temperature)
    q, k, v = random_qkv(T, seed=T)
    expected = sliding_sigmoid_reference(q, k, v, window, temperature)
    torch.testing.assert_close(layer.attend(q, k, v, LayerContext()).double(), expected, rtol=1e-5, atol=1e-6)
    if window == 1:  # a window of one: each query reads its own value
        torch.testing.assert_close(layer.attend(q, k, v, LayerContext()), v)


def test_sliding_window_decoding_keeps_w_entries():
    layer = layer_of("sw_attention", attention_window=4)
    x = torch.randn(1, 11, D_MODEL)
    cache = layer.allocate_cache(1, x.device, x.dtype)
    for t in range(11):
        layer.step(x[:, t:t + 1], LayerContext(position=t), cache)
    assert cache["k"].shape == (1, 4, HEADS, HD) and cache["v"].shape == (1, 4, HEADS, HD)
    assert layer.state_size(16) == layer.state_size(4096) == 2 * 4 * D_MODEL  # bounded by the window
    assert layer.state_size(3) == 2 * 3 * D_MODEL  # shorter than the window: what it holds


# ---- differential attention --------------------------------------------------------------------------------

def differential_reference(layer, q, k, v):
    """The paper's head, float64, written from the equations (the maps' halves as the layer splits them)."""
    T, hd = q.shape[1], q.shape[-1]

    def halves(x):  # channels {r, hd/2 + r}, r < hd/4 (rotary pairs whole), then the others
        first = torch.cat([x[..., : hd // 4], x[..., hd // 2: 3 * hd // 4]], -1)
        second = torch.cat([x[..., hd // 4: hd // 2], x[..., 3 * hd // 4:]], -1)
        return first.double(), second.double()

    (q1, q2), (k1, k2) = halves(q), halves(k)

    def softmax_map(a, b):
        scores = torch.einsum("bihd,bjhd->bhij", a, b) / math.sqrt(hd // 2)
        return torch.softmax(scores.masked_fill(~causal_mask(T), float("-inf")), -1)

    lambda_init = 0.8 - 0.6 * math.exp(-0.3 * layer.layer_index)
    lam = (torch.exp(torch.dot(layer.lambda_q1.double(), layer.lambda_k1.double()))
           - torch.exp(torch.dot(layer.lambda_q2.double(), layer.lambda_k2.double())) + lambda_init)
    combined = torch.einsum("bhij,bjhd->bihd", softmax_map(q1, k1) - lam * softmax_map(q2, k2), v.double())
    normed = combined / torch.sqrt(combined.pow(2).mean(-1, keepdim=True) + 1e-5) * layer.head_norm.weight.double()
    return normed * (1 - lambda_init)


@pytest.mark.parametrize("T", LENGTHS)
@pytest.mark.parametrize("layer_index", [0, 3])
def test_differential_attention_equals_the_paper_written_out(T, layer_index):
    layer = layer_of("diff_attention", seed=T)
    layer.layer_index = layer_index
    with torch.no_grad():
        layer.head_norm.weight.uniform_(0.5, 1.5)
    q, k, v = random_qkv(T, seed=T)
    torch.testing.assert_close(layer.attend(q, k, v, LayerContext()).double(), differential_reference(layer, q, k, v),
                               rtol=1e-5, atol=1e-5)
    assert layer.lambda_init == pytest.approx(0.8 - 0.6 * math.exp(-0.3 * layer_index))


def test_differential_maps_keep_relative_positions_under_rotary():
    """Both maps see only relative positions: shifting every position leaves the output unchanged."""
    layer = layer_of("diff_attention")
    q, k, v = random_qkv(7, seed=4)
    outputs = []
    for start in (0, 5):
        angles = rope_angles(torch.arange(start, start + 7), HD, 10000.0)[None]
        outputs.append(layer.attend(apply_rotary(q, angles), apply_rotary(k, angles), v, LayerContext()))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-4, atol=1e-5)


def test_the_stack_tells_each_layer_its_depth():
    model = SOSMModel(config_of("diff_attention", n_layers=3))
    assert [layer.layer_index for layer in model.stack.layers] == [0, 1, 2]
    assert [round(layer.lambda_init, 6) for layer in model.stack.layers] == [
        round(0.8 - 0.6 * math.exp(-0.3 * i), 6) for i in range(3)]


def test_differential_attention_refuses_a_head_dim_not_divisible_by_4():
    with pytest.raises(ValueError, match=r"SOSMConfig.d_model=12 is invalid; accepted: .* divisible by 4 for diff_att"):
        SOSMConfig(model="diff_attention", d_model=12, n_heads=2)


# ---- LSH attention -----------------------------------------------------------------------------------------

def lsh_reference_mask(shared, rotations, window):
    """The pattern built with loops: per round the last ``window`` earlier same-bucket keys, union, self if alone."""
    B, T, H, _ = shared.shape
    projected = torch.einsum("bthd,rhdn->bhrtn", shared.double(), rotations.double())
    buckets = torch.cat([projected, -projected], -1).argmax(-1)  # [B, H, R, T]
    mask = torch.zeros(B, H, T, T, dtype=torch.bool)
    for b in range(B):
        for h in range(H):
            for i in range(T):
                for r in range(rotations.shape[0]):
                    same = [j for j in range(i) if buckets[b, h, r, j] == buckets[b, h, r, i]]
                    for j in same[-window:]:
                        mask[b, h, i, j] = True
                if not mask[b, h, i].any():
                    mask[b, h, i, i] = True
    return mask


def lsh_reference(layer, shared, v, angles):
    mask = lsh_reference_mask(shared, layer.rotations, layer.window)
    q = apply_rotary(shared, angles).double()
    keys = F.normalize(q, dim=-1)
    scores = torch.einsum("bihd,bjhd->bhij", q, keys) / math.sqrt(q.shape[-1])
    probs = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1)
    return torch.einsum("bhij,bjhd->bihd", probs, v.double()), mask


@pytest.mark.parametrize("T", LENGTHS)
@pytest.mark.parametrize("buckets,rounds,window", [(2, 1, 1), (4, 2, 2), (4, 3, 3), (6, 2, 20)])
def test_lsh_fast_path_equals_the_dense_masked_reference(T, buckets, rounds, window):
    layer = layer_of("lsh_attention", seed=T, lsh_buckets=buckets, lsh_rounds=rounds, lsh_window=window)
    shared, _, v = random_qkv(T, seed=T + buckets)
    angles = angles_of(T)
    expected, mask = lsh_reference(layer, shared, v, angles)
    ctx = LayerContext(angles=angles)
    torch.testing.assert_close(layer.attend(shared, shared, v, ctx).double(), expected, rtol=1e-5, atol=1e-6)
    dense = torch.softmax(layer.attention_scores(shared, shared, ctx), -1)  # what DePass freezes
    torch.testing.assert_close(dense.double(), torch.softmax(
        torch.einsum("bihd,bjhd->bhij", apply_rotary(shared, angles).double(),
                     F.normalize(apply_rotary(shared, angles).double(), dim=-1)).div(math.sqrt(HD))
        .masked_fill(~mask, float("-inf")), -1), rtol=1e-5, atol=1e-6)
    assert mask.any(-1).all()  # every query attends somewhere
    if T == 13 and window < T:
        assert not mask.tril().all()  # and the pattern is sparse


def test_lsh_self_only_when_alone_and_duplicates_across_rounds_counted_once():
    layer = layer_of("lsh_attention", lsh_buckets=2, lsh_rounds=3, lsh_window=4)
    shared = torch.randn(1, 1, HEADS, HD).expand(1, 5, HEADS, HD).contiguous()  # one content: one bucket per round
    v = torch.randn(1, 5, HEADS, HD)
    out = layer.attend(shared, shared, v, LayerContext())
    torch.testing.assert_close(out[:, 0], v[:, 0])  # position 0: alone, itself
    torch.testing.assert_close(out[:, 3], v[:, :3].mean(1))  # keys 0..2 found in all 3 rounds, weighed once each


def test_lsh_buckets_read_content_before_rotary_positions():
    layer = layer_of("lsh_attention", lsh_buckets=8)
    shared = torch.randn(1, 1, HEADS, HD).expand(1, 6, HEADS, HD)
    assert (layer.buckets(shared) == layer.buckets(shared)[..., :1]).all()


def test_recall_cells_build_lsh_attention():
    from sosm.train.recall import RecallCell, state_floats

    cell = RecallCell(model="lsh_attention", seq_len=16, vocab_size=64, d_model=32, n_layers=2,
                      model_overrides={"lsh_buckets": 4, "lsh_window": 4})
    model = SOSMModel(cell.model_config())
    assert model.config.layer_types == ("lsh_attention", "lsh_attention")
    assert state_floats(model, None) == 2 * (2 * 16 * 32 + 2 * 4 * 16)  # 4 heads (the default), 2 rounds


@pytest.mark.parametrize("knob,value,accepted", [
    ("performer_features", 0, "an int >= 1"),
    ("performer_redraw", -1, "an int >= 0"),
    ("attention_window", 0, "an int >= 1"),
    ("sigmoid_temperature", 0.0, "a float > 0"),
    ("lsh_buckets", 3, "an even int >= 2"),
    ("lsh_buckets", 0, "an even int >= 2"),
    ("lsh_rounds", 0, "an int >= 1"),
    ("lsh_window", 0, "an int >= 1"),
])
def test_invalid_knobs_are_refused_at_construction(knob, value, accepted):
    with pytest.raises(ValueError, match=rf"SOSMConfig.{knob}={value!r} is invalid; accepted: {accepted}"):
        config_of("transformer", **{knob: value})
