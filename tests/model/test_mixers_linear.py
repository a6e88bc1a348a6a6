"""Mamba-2, RWKV-6 and RetNet: every form against the others and against naive sequential forms written here.

The generic contract (causality, decoding == forward, carried windows, DePass through the model,
state size, matched stacks) is checked for every registered mixer in ``test_mixers.py``; here:
the chunked/parallel forms against a loop over time (outputs, final states, every gradient) at odd
lengths with chunks that do not divide them, each whole layer against a sequential reference of
its paper's equations, the layer-level DePass completeness with every data-dependent path active,
the paper's constants, and the Tiny Shakespeare configs' parameter counts.
"""

import pytest
import torch
import torch.nn.functional as F

from sosm.model import SOSMConfig
from sosm.model.context import LayerContext
from sosm.model.mixers import build_mixer
from sosm.model.mixers.chunked import scalar_decay_chunked, segment_sums
from sosm.model.mixers.retnet import retention_decays, retention_parallel
from sosm.model.mixers.rwkv import wkv6_chunked

NAMES = ("mamba2", "rwkv", "retnet")
T_ODD = 13
CHUNKS = (1, 4, 5, T_ODD, 64)  # 4 and 5 do not divide 13; 64 covers it in one chunk (the parallel form)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def assert_rel(a, b, tol=1e-5, what=""):
    assert torch.isfinite(a).all(), f"{what}: not finite"
    assert rel(a, b) <= tol, f"{what}: relative error {rel(a, b):.2e} > {tol:.0e}"


def layer(name: str, chunk_size: int = 64, seed: int = 0, noise: float = 0.2, **overrides):
    """A layer whose every parameter is moved off its init, so data-dependent paths are active (RWKV's LoRAs)."""
    settings = dict(model=name, d_model=32, n_heads=4, d_state=8, mlp_ratio=2.0, chunk_size=chunk_size)
    settings.update(overrides)
    torch.manual_seed(seed)
    module = build_mixer(name, SOSMConfig(**settings))
    with torch.no_grad():
        for p in module.parameters():
            p.add_(noise * torch.randn_like(p))
    return module.eval()


def with_chunk(module, name: str, chunk_size: int, **overrides):
    twin = layer(name, chunk_size, **overrides)
    twin.load_state_dict(module.state_dict())
    return twin


def stepped(module, x: torch.Tensor) -> torch.Tensor:
    cache = module.allocate_cache(x.shape[0], x.device, x.dtype)
    return torch.cat([module.step(x[:, t:t + 1], LayerContext(position=t), cache) for t in range(x.shape[1])], 1)


def naive_scalar_decay(x, log_decay, keys, queries, state=None):
    """``S_t = exp(a_t) S_{t-1} + x_t k_t^T``, ``y_t = S_t q_t``, one step at a time."""
    b, T, H, P = x.shape
    S = x.new_zeros(b, H, P, keys.shape[-1]) if state is None else state
    ys = []
    for t in range(T):
        S = torch.exp(log_decay[:, t])[..., None, None] * S + x[:, t, :, :, None] * keys[:, t, :, None, :]
        ys.append((S * queries[:, t, :, None, :]).sum(-1))
    return torch.stack(ys, 1), S


def naive_wkv6(r, k, v, log_w, u, state=None):
    """``o_t = r_t (S_{t-1} + diag(u) k_t^T v_t)``, ``S_t = diag(w_t) S_{t-1} + k_t^T v_t``, one step at a time."""
    b, T, H, N = r.shape
    S = r.new_zeros(b, H, N, v.shape[-1]) if state is None else state
    outs = []
    for t in range(T):
        kv = k[:, t, :, :, None] * v[:, t, :, None, :]
        outs.append((r[:, t, :, :, None] * (S + u[..., None] * kv)).sum(-2))
        S = torch.exp(log_w[:, t])[..., None] * S + kv
    return torch.stack(outs, 1), S


def grads(out, inputs, seed=1):
    weights = [torch.randn(o.shape, generator=torch.Generator().manual_seed(seed + i)) for i, o in enumerate(out)]
    loss = sum((o * w).sum() for o, w in zip(out, weights))
    return torch.autograd.grad(loss, inputs)


def test_segment_sums_are_sums_along_each_segment():
    a = torch.tensor([1.0, 2.0, 4.0, 8.0])
    s = segment_sums(a)
    assert s[3, 0] == 14.0 and s[3, 3] == 0.0 and s[2, 1] == 4.0 and s[1, 0] == 2.0
    assert torch.isneginf(s[0, 1]) and torch.isneginf(s[1, 3])


@pytest.mark.parametrize("groups", (1, 2, 4))
@pytest.mark.parametrize("chunk", CHUNKS)
def test_scalar_decay_chunked_equals_the_loop_with_gradients(chunk, groups):
    """Heads read key/query group h // (H / G) (Mamba-2's shared B and C; G = H: one per head)."""
    g = torch.Generator().manual_seed(chunk)
    b, H, P, N = 2, 4, 3, 5
    x = torch.randn(b, T_ODD, H, P, generator=g)
    keys, queries = (torch.randn(b, T_ODD, groups, N, generator=g) for _ in range(2))
    log_decay = -2.0 * torch.rand(b, T_ODD, H, generator=g)
    state = torch.randn(b, H, P, N, generator=g)
    inputs = [t.clone().requires_grad_(True) for t in (x, log_decay, keys, queries, state)]
    y, last = scalar_decay_chunked(*inputs[:4], chunk, inputs[4])
    ref_inputs = [t.clone().requires_grad_(True) for t in (x, log_decay, keys, queries, state)]
    per_head = [t.repeat_interleave(H // groups, dim=2) for t in ref_inputs[2:4]]
    y_ref, last_ref = naive_scalar_decay(ref_inputs[0], ref_inputs[1], *per_head, ref_inputs[4])
    assert_rel(y, y_ref, what="y")
    assert_rel(last, last_ref, what="final state")
    for got, want, label in zip(grads((y, last), inputs), grads((y_ref, last_ref), ref_inputs),
                                ("x", "log_decay", "keys", "queries", "state")):
        assert_rel(got, want, what=f"grad {label}")


@pytest.mark.parametrize("chunk", CHUNKS)
def test_wkv6_chunked_equals_the_loop_with_gradients(chunk):
    g = torch.Generator().manual_seed(chunk)
    b, H, N = 2, 3, 4
    r, k, v = (torch.randn(b, T_ODD, H, N, generator=g) for _ in range(3))
    log_w = -torch.exp(torch.randn(b, T_ODD, H, N, generator=g) * 1.5)  # decays from ~1 to ~e^-90 per step
    u, state = torch.randn(H, N, generator=g), torch.randn(b, H, N, N, generator=g)
    inputs = [t.clone().requires_grad_(True) for t in (r, k, v, log_w, u, state)]
    o, last = wkv6_chunked(*inputs[:5], chunk, inputs[5])
    ref_inputs = [t.clone().requires_grad_(True) for t in (r, k, v, log_w, u, state)]
    o_ref, last_ref = naive_wkv6(*ref_inputs)
    assert_rel(o, o_ref, what="o")
    assert_rel(last, last_ref, what="final state")
    for got, want, label in zip(grads((o, last), inputs), grads((o_ref, last_ref), ref_inputs),
                                ("r", "k", "v", "log_w", "u", "state")):
        assert_rel(got, want, what=f"grad {label}")


def test_wkv6_keeps_precision_under_strong_decay():
    """Segment sums, not differences of prefix sums: a weak decay after strong ones is still exact."""
    b, H, N, T = 1, 1, 2, 9
    log_w = torch.full((b, T, H, N), -0.01)
    log_w[:, :4] = -40.0  # prefix sums reach -160; the later steps' own decays are 0.99
    r, k, v = torch.ones(b, T, H, N), torch.ones(b, T, H, N), torch.randn(b, T, H, N)
    o, _ = wkv6_chunked(r, k, v, log_w, torch.zeros(H, N), chunk_size=T)
    o_ref, _ = naive_wkv6(r.double(), k.double(), v.double(), log_w.double(), torch.zeros(H, N).double())
    assert_rel(o.double(), o_ref, tol=1e-6, what="strong decays")


def test_retention_parallel_equals_the_loop_with_gradients():
    g = torch.Generator().manual_seed(0)
    b, H, dk, dv = 2, 4, 6, 5
    q, k = (torch.randn(b, T_ODD, H, dk, generator=g) for _ in range(2))
    v = torch.randn(b, T_ODD, H, dv, generator=g)
    log_decay = retention_decays(H)
    inputs = [t.clone().requires_grad_(True) for t in (q, k, v)]
    o = retention_parallel(*inputs, log_decay)
    ref_inputs = [t.clone().requires_grad_(True) for t in (q, k, v)]
    o_ref, _ = naive_scalar_decay(ref_inputs[2], log_decay.expand(b, T_ODD, H), ref_inputs[1], ref_inputs[0])
    assert_rel(o, o_ref, what="retention")
    for got, want in zip(grads((o,), inputs), grads((o_ref,), ref_inputs)):
        assert_rel(got, want, what="retention grad")


def test_retention_decays_are_the_papers():
    gamma = torch.exp(retention_decays(4).double())
    torch.testing.assert_close(gamma, 1 - 2.0 ** -torch.tensor([5.0, 6.0, 7.0, 8.0], dtype=torch.float64))


@pytest.mark.parametrize("name", NAMES)
def test_forms_of_a_layer_are_equal(name):
    x = torch.randn(2, T_ODD, 32, generator=torch.Generator().manual_seed(5))
    parallel = layer(name, chunk_size=64)
    with torch.no_grad():
        reference = parallel(x, LayerContext())
        for chunk in (1, 4, 5):
            assert_rel(with_chunk(parallel, name, chunk)(x, LayerContext()), reference, what=f"{name} chunk {chunk}")
        assert_rel(stepped(parallel, x), reference, what=f"{name} recurrent")
        carried, cache = with_chunk(parallel, name, 4), {}
        windows = [carried.forward_carry(x[:, s:e], LayerContext(), cache) for s, e in ((0, 5), (5, 6), (6, T_ODD))]
        assert_rel(torch.cat(windows, 1), reference, what=f"{name} carried windows")


@pytest.mark.parametrize("name", NAMES)
def test_chunked_gradients_equal_the_parallel_forms(name):
    x = torch.randn(2, T_ODD, 32, generator=torch.Generator().manual_seed(6))
    parallel = layer(name, chunk_size=64)
    chunked = with_chunk(parallel, name, 4)
    results = []
    for module in (parallel, chunked):
        xi = x.clone().requires_grad_(True)
        out = module(xi, LayerContext())
        params = [p for _, p in sorted(module.named_parameters())]
        results.append(grads((out,), [xi, *params]))
    names = ["x"] + [n for n, _ in sorted(parallel.named_parameters())]
    for label, got, want in zip(names, results[1], results[0]):
        assert_rel(got, want, what=f"{name} grad {label}")


@pytest.mark.parametrize("name", NAMES)
def test_layer_depass_is_complete_and_linear(name):
    """linear_mode on a random split of the input: the output components sum to the real output."""
    module = layer(name, chunk_size=4)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, T_ODD, 32, generator=g)
    parts = torch.randn(3, 2, T_ODD, 32, generator=g)
    xc = torch.cat([parts, (x - parts.sum(0))[None], torch.zeros_like(x)[None]])  # last: the bias component
    with torch.no_grad():
        out, out_c, probs = module.linear_mode(x, xc, LayerContext(), bias_index=4)
        assert probs is None
        assert_rel(out, module(x, LayerContext()), tol=1e-6, what=f"{name} real output")
        assert_rel(out_c.sum(0), out, what=f"{name} completeness")
        # linear in the components: splitting one component in two halves splits its output in two
        halves = torch.cat([xc[:1] / 2, xc[:1] / 2, xc[1:]])
        _, half_c, _ = module.linear_mode(x, halves, LayerContext(), bias_index=5)
        torch.testing.assert_close(half_c[0], half_c[1])
        torch.testing.assert_close(half_c[0] + half_c[1], out_c[0], rtol=1e-4, atol=1e-5)


def test_mamba2_layer_equals_its_sequential_definition():
    """Groups (heads 0-1 read B/C group 0, heads 2-3 group 1), conv over x/B/C, gated group RMSNorm, D skip."""
    m = layer("mamba2", chunk_size=5, mamba2_groups=2)
    E, H, P, N, G = m.inner, m.n_heads, m.head_dim, m.d_state, m.n_groups
    x = torch.randn(2, T_ODD, 32, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        z, xBC, dt = m.in_proj(m.norm(x)).split([E, E + 2 * G * N, H], -1)
        width = m.conv.weight.shape[-1]
        padded = F.pad(xBC, (0, 0, width - 1, 0))
        conv = sum(padded[:, i:i + T_ODD] * m.conv.weight[:, 0, i] for i in range(width)) + m.conv.bias
        xs, Bm, Cm = F.silu(conv).split([E, G * N, G * N], -1)
        delta = F.softplus(dt + m.dt_bias)
        A = -torch.exp(m.A_log)
        S = torch.zeros(2, H, P, N)
        ys = []
        for t in range(T_ODD):
            y_t = []
            for h in range(H):
                g_ = h // (H // G)
                u = xs[:, t, h * P:(h + 1) * P]
                B_t, C_t = Bm[:, t, g_ * N:(g_ + 1) * N], Cm[:, t, g_ * N:(g_ + 1) * N]
                S[:, h] = torch.exp(delta[:, t, h] * A[h])[:, None, None] * S[:, h] \
                    + delta[:, t, h, None, None] * u[:, :, None] * B_t[:, None, :]
                y_t.append(S[:, h] @ C_t[..., None] + m.D[h] * u[..., None])
            ys.append(torch.cat(y_t, 1)[..., 0])
        y = torch.stack(ys, 1) * F.silu(z)  # [B, T, E]
        groups = y.view(2, T_ODD, G, E // G)
        y = (groups * torch.rsqrt(groups.pow(2).mean(-1, keepdim=True) + 1e-5)).view(2, T_ODD, E) * m.gate_norm_weight
        reference = x + m.out_proj(y)
        assert_rel(m(x, LayerContext()), reference, what="mamba2 layer")


def test_rwkv6_layer_equals_its_sequential_definition():
    """Token shift with data-dependent lerp, decay w = exp(-exp(.)), bonus u, GroupNorm, gate; channel mix."""
    m = layer("rwkv", chunk_size=4)
    d, H, N = 32, m.n_heads, m.head_dim
    x = torch.randn(2, T_ODD, 32, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        hidden, S, prev_t, prev_c = x.clone(), torch.zeros(2, H, N, N), torch.zeros(2, d), torch.zeros(2, d)
        outs = []
        for t in range(T_ODD):
            h = hidden[:, t]
            a = m.norm_time(h)
            xx = prev_t - a
            lora = torch.tanh((a + xx * m.time_maa_x) @ m.time_maa_w1).view(2, 5, -1)
            mw, mk, mv, mr, mg = (a[:, None] + xx[:, None] * (torch.stack(m._time_mixes()) + torch.einsum(
                "bfr,frd->bfd", lora, m.time_maa_w2))).unbind(1)
            r, k, v = (f(z).view(2, H, N) for f, z in ((m.receptance, mr), (m.key, mk), (m.value, mv)))
            w = torch.exp(-torch.exp(m.time_decay + torch.tanh(mw @ m.time_decay_w1) @ m.time_decay_w2)).view(2, H, N)
            kv = k[..., :, None] * v[..., None, :]
            o = (r[..., :, None] * (S + m.time_bonus.view(H, N)[..., None] * kv)).sum(-2)  # [2, H, N]
            S = w[..., None] * S + kv
            prev_t = a
            att = m.out_proj(m.ln_x(o.reshape(2, d)) * F.silu(m.gate(mg)))
            h = h + att
            c = m.norm_channel(h)
            xx = prev_c - c
            ffn = torch.sigmoid(m.ffn_receptance(c + xx * m.channel_maa_r)) * m.fc_out(
                torch.relu(m.ffn_key(c + xx * m.channel_maa_k)) ** 2)
            prev_c = c
            outs.append(h + ffn)
        assert_rel(m(x, LayerContext()), torch.stack(outs, 1), what="rwkv layer")


def test_retnet_retention_equals_the_papers_parallel_formula():
    """(Q K^T / sqrt(d) ⊙ D̃) with D̃ rows normalised by sqrt(Σ D), then R / max(|Σ R|, 1), times V."""
    m = layer("retnet", chunk_size=5)
    x = torch.randn(2, T_ODD, 32, generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        h = m.norm_retention(x)
        q, k, v = m._qkv(h, 0)  # rotated; k scaled by 1/sqrt(d_k)
        n = torch.arange(T_ODD)
        gamma = torch.exp(retention_decays(m.n_heads))
        D = gamma[:, None, None] ** (n[:, None] - n[None, :]).clamp_min(0) * (n[:, None] >= n[None, :])
        D = D / D.sum(-1, keepdim=True).sqrt()
        R = torch.einsum("bihd,bjhd->bhij", q, k) * D
        R = R / R.sum(-1, keepdim=True).abs().clamp_min(1.0)
        paper = torch.einsum("bhij,bjhd->bihd", R, v)
        for form in ("parallel", "chunkwise", "recurrent"):
            assert_rel(m.retention(h, form=form)[0], paper, what=f"retention {form}")
        rotation_only = m._qkv(h, 0)[0].norm(dim=-1)  # the rotation keeps norms
        torch.testing.assert_close(rotation_only, m.q_proj(h).view(2, T_ODD, m.n_heads, -1).norm(dim=-1))


def test_retnet_rejects_bad_forms():
    m = layer("retnet")
    h = torch.randn(1, 3, 32)
    with pytest.raises(ValueError, match="form='fast' is invalid"):
        m.retention(h, form="fast")
    with pytest.raises(ValueError, match="parallel form starts from an empty state"):
        m.retention(h, state=torch.zeros(1, 4, 17, 8), form="parallel")


def test_mamba2_init_survives_the_model_init():
    from sosm.model import SOSMModel

    m2 = SOSMModel(SOSMConfig(model="mamba2", d_model=32, n_heads=4, vocab_size=40)).stack.layers[0]
    assert torch.all((-torch.exp(m2.A_log) <= -1) & (-torch.exp(m2.A_log) >= -16))
    assert torch.all(m2.D == 1) and torch.all(m2.gate_norm_weight == 1)
    dt = F.softplus(m2.dt_bias)
    assert torch.all((dt >= 1e-3 * 0.999) & (dt <= 1e-1 * 1.001))


def test_rwkv6_init_survives_the_model_init():
    from sosm.model import SOSMModel

    rw = SOSMModel(SOSMConfig(model="rwkv", d_model=32, n_heads=2, vocab_size=40)).stack.layers[0]
    torch.testing.assert_close(rw.time_decay, -6 + 5 * (torch.arange(32) / 31.0) ** 1.35)
    assert torch.all(rw.time_maa_w1 == 0) and torch.all(rw.time_decay_w1 == 0)
    assert rw.time_maa_w2.abs().max() <= 0.01 and rw.time_maa_w2.abs().max() > 0
    decay = torch.exp(-torch.exp(rw.time_decay))
    assert torch.all((decay > 0) & (decay < 1))


def test_new_knobs_are_validated():
    with pytest.raises(ValueError, match=r"mamba2_groups=3 is invalid; accepted: an int >= 1 dividing n_heads=4"):
        SOSMConfig(model="mamba2", n_heads=4, mamba2_groups=3)
    with pytest.raises(ValueError, match=r"SOSMConfig.chunk_size=-1 is invalid; accepted: an int >= 1, or 0"):
        SOSMConfig(chunk_size=-1)
    assert SOSMConfig.from_json(SOSMConfig(model="rwkv", chunk_size=16).to_json()).chunk_size == 16
