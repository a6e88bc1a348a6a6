"""S4, OSSM and CfC: every form against the others and against naive sequential loops written here.

The generic contract (causality, decoding, carried windows, DePass, state size, matching) is in
test_mixers.py; this file checks what is particular to each: S4's chunked convolution == FFT ==
recurrent step == a textbook loop, for every state matrix and discretisation, with gradients;
OSSM's scan == its sequential recurrence == step, stable for every parameter value; CfC's loop
and LTC scan == loops written from the equations; the special initialisations, the config knobs.
Tolerances: tests/kernels/tolerance.py (fp32: relative RMS 1e-5).
"""
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from sosm.model import SOSMConfig, SOSMModel, matched_config, param_count
from sosm.model.context import LayerContext
from sosm.model.mixers import build_mixer
from sosm.model.mixers import s4 as s4_module
from sosm.model.mixers.cfc import LECUN_SCALE, LECUN_SLOPE, MIN_LEAK
from sosm.model.mixers.diagonal_scan import diagonal_scan, sequential_scan
from sosm.model.mixers.ossm import MIN_DECAY, oscillator_transition
from sosm.model.mixers.s4 import hippo_legs, s4d_legs, s4d_lin

from ..kernels.tolerance import assert_close
from .conftest import VOCAB, random_ids

D_MODEL, T_ODD = 16, 37


def layer_of(name, seed=0, **overrides):
    settings_ = dict(model=name, d_model=D_MODEL, n_heads=2, d_state=8, vocab_size=VOCAB)
    settings_.update(overrides)
    torch.manual_seed(seed)
    return build_mixer(name, SOSMConfig(**settings_)).eval()


def decode(layer, x):
    """``layer.step`` token by token from a fresh cache: ``[B, T, d]``."""
    cache = layer.allocate_cache(x.shape[0], x.device, x.dtype)
    return torch.cat([layer.step(x[:, t:t + 1], LayerContext(position=t), cache) for t in range(x.shape[1])], 1)


def grads(output, inputs, weight):
    return torch.autograd.grad((output * weight).sum(), inputs)


def naive_s4(layer, u, dtype=torch.float64):
    """The S4 recurrence written from the textbook, float64: ``u [B, T, d]`` -> ``y [B, T, d]``.

    ``x_t = Ā x_{t-1} + B̄ u_t``, ``y_t = C x_t + D u_t`` (diagonal: ``2 Re(C x_t)``), with
    ``Ā, B̄`` from the continuous parameters by ZOH ``(exp(ΔA), A^{-1}(Ā - I)B)``, bilinear
    ``((I - ΔA/2)^{-1}(I + ΔA/2), (I - ΔA/2)^{-1}ΔB)`` or forward Euler ``(I + ΔA, ΔB)``.
    ``dtype``: float64 (the ground truth) or float32 (the baseline of the gradient tests).
    """
    cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    u = u.to(dtype)
    dt = layer.log_dt.to(dtype).exp()  # [d]
    method = layer.method
    if layer.matrix == "hippo":
        A = torch.tril(layer.A_lower.to(dtype), -1) - torch.diag(layer.A_log_diag.to(dtype).exp())
        eye = torch.eye(A.shape[0], dtype=dtype)
        Abar, Bbar = [], []
        for h in range(u.shape[-1]):
            B = layer.B.to(dtype)[h]
            if method == "zoh":
                Ad = torch.linalg.matrix_exp(dt[h] * A)
                Bd = torch.linalg.solve(A, (Ad - eye) @ B)
            elif method == "bilinear":
                Ad = torch.linalg.solve(eye - dt[h] / 2 * A, eye + dt[h] / 2 * A)
                Bd = torch.linalg.solve(eye - dt[h] / 2 * A, dt[h] * B)
            else:
                Ad, Bd = eye + dt[h] * A, dt[h] * B
            Abar.append(Ad)
            Bbar.append(Bd)
        Abar, Bbar, C = torch.stack(Abar), torch.stack(Bbar), layer.C.to(dtype)
        x = torch.zeros(u.shape[0], u.shape[-1], A.shape[0], dtype=dtype)
        ys = []
        for t in range(u.shape[1]):
            x = torch.einsum("hnk,bhk->bhn", Abar, x) + Bbar * u[:, t, :, None]
            ys.append((C * x).sum(-1))
    else:
        A = torch.complex(-layer.A_log_real.to(dtype).exp(), layer.A_imag.to(dtype))  # [d, M]
        B, C = torch.view_as_complex(layer.B.to(dtype)), torch.view_as_complex(layer.C.to(dtype))
        dtA = dt[:, None] * A
        if method == "zoh":
            Abar, Bbar = torch.exp(dtA), (torch.exp(dtA) - 1) / A * B
        elif method == "bilinear":
            Abar, Bbar = (1 + dtA / 2) / (1 - dtA / 2), dt[:, None] / (1 - dtA / 2) * B
        else:
            Abar, Bbar = 1 + dtA, dt[:, None] * B
        x = torch.zeros(u.shape[0], *A.shape, dtype=cdtype)
        ys = []
        for t in range(u.shape[1]):
            x = Abar * x + Bbar * u[:, t, :, None]
            ys.append(2 * (C * x).sum(-1).real)
    return torch.stack(ys, 1) + layer.D.to(dtype) * u


S4_CASES = [(m, d) for m in ("legs", "lin", "hippo") for d in ("zoh", "bilinear", "euler")]


def s4_layer(matrix, method, seed=0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # euler's instability warning (tested below)
        layer = layer_of("s4", seed, s4_matrix=matrix, s4_discretization=method)
    if method == "euler":  # inside Euler's stability region: small steps
        with torch.no_grad():
            layer.log_dt.fill_(math.log(1e-3))
    return layer


@pytest.mark.parametrize("matrix,method", S4_CASES)
@pytest.mark.parametrize("chunk", [8, 64])
def test_s4_chunked_fft_and_recurrent_forms_equal_the_naive_loop(matrix, method, chunk, monkeypatch):
    """At odd lengths over several chunks: chunked convolution == FFT == step by step == the textbook loop."""
    monkeypatch.setattr(s4_module, "CHUNK", chunk)
    layer = s4_layer(matrix, method)
    x = torch.randn(2, T_ODD if chunk == 8 else 131, D_MODEL)
    with torch.no_grad():
        u = layer.norm(x)
        expected = naive_s4(layer, u)
        chunked, last = layer.ssm(u)
        assert_close(chunked, expected, name="chunked")
        assert_close(layer.ssm_fft(u), expected, name="fft")
        cache = layer.allocate_cache(2, x.device, x.dtype)
        stepped = torch.cat([layer.step(x[:, t:t + 1], LayerContext(position=t), cache) for t in range(x.shape[1])], 1)
        assert_close(stepped, layer._output(x, expected.float()), name="step")
        view = torch.view_as_real if last.is_complex() else (lambda t: t)
        assert_close(view(last), view(cache["h"]), name="final state")


@pytest.mark.parametrize("matrix,method", [("legs", "zoh"), ("lin", "bilinear"), ("hippo", "zoh"),
                                           ("hippo", "bilinear"), ("legs", "euler")])
def test_s4_gradients_match_the_naive_loop(matrix, method, monkeypatch):
    monkeypatch.setattr(s4_module, "CHUNK", 8)
    layer = s4_layer(matrix, method, seed=1)
    u = torch.randn(2, T_ODD, D_MODEL, requires_grad=True)
    weight = torch.randn(2, T_ODD, D_MODEL)
    ssm_params = [u] + [p for n, p in layer.named_parameters() if not n.startswith(("out_proj", "mlp", "norm"))]
    got = grads(layer.ssm(u)[0], ssm_params, weight)
    want = grads(naive_s4(layer, u), ssm_params, weight.double())
    baseline = grads(naive_s4(layer, u, torch.float32), ssm_params, weight)  # the same loop in float32
    for index, (a, b, c) in enumerate(zip(got, want, baseline)):
        assert_close(a, b.float(), baseline=c, name=f"grad {index}")


def test_s4_whole_layer_step_and_carried_windows_equal_the_forward():
    for matrix, method in S4_CASES:
        layer = s4_layer(matrix, method, seed=2)
        x = torch.randn(2, T_ODD, D_MODEL)
        with torch.no_grad():
            full = layer(x, LayerContext())
            assert_close(decode(layer, x), full, name=f"{matrix}/{method} step")
            cache = {}
            windows = [layer.forward_carry(x[:, a:b], LayerContext(), cache) for a, b in ((0, 5), (5, 6), (6, T_ODD))]
            assert_close(torch.cat(windows, 1), full, name=f"{matrix}/{method} windows")


def test_s4d_initialisations_come_from_hippo_legs():
    N = 16
    A, B = hippo_legs(N)
    assert torch.equal(A, torch.tril(A)) and torch.equal(A.diagonal(), -torch.arange(1, N + 1, dtype=torch.float64))
    w, b = s4d_legs(N)
    p = (torch.arange(N, dtype=torch.float64) + 0.5).sqrt()
    normal = A + p[:, None] * p[None, :]
    torch.testing.assert_close(w.real, torch.full((N // 2,), -0.5, dtype=torch.float64))
    assert (w.imag > 0).all()
    full = torch.linalg.eigvals(normal)
    for value in w:  # each kept eigenvalue and its conjugate are eigenvalues of the normal part
        assert (full - value).abs().min() < 1e-8 and (full - value.conj()).abs().min() < 1e-8
    values, vectors = torch.linalg.eig(normal)
    keep = torch.argsort(values.imag)[N // 2:]
    torch.testing.assert_close(b, vectors[:, keep].conj().T @ B.to(vectors.dtype))
    w_lin, b_lin = s4d_lin(N)
    torch.testing.assert_close(w_lin, torch.complex(torch.full((N // 2,), -0.5, dtype=torch.float64),
                                                    math.pi * torch.arange(N // 2, dtype=torch.float64)))
    assert torch.equal(b_lin, torch.ones(N // 2, dtype=torch.complex128))


@pytest.mark.parametrize("matrix", ["legs", "lin", "hippo"])
def test_s4_special_init_survives_the_models_generic_init(matrix):
    model = SOSMModel(SOSMConfig(model="s4", d_model=D_MODEL, n_heads=2, n_layers=2, d_state=8, vocab_size=VOCAB,
                                 s4_matrix=matrix))
    layer = model.stack.layers[1]
    A, B, _ = layer.continuous()
    if matrix == "hippo":
        torch.testing.assert_close(A.double(), hippo_legs(8)[0])
        torch.testing.assert_close(B[3].double(), hippo_legs(8)[1])
    else:
        want_A, want_B = (s4d_legs if matrix == "legs" else s4d_lin)(8)
        torch.testing.assert_close(A[5], want_A.to(torch.complex64))
        torch.testing.assert_close(B[5], want_B.to(torch.complex64))
    dt = layer.log_dt.exp()
    assert (dt >= 1e-3 - 1e-9).all() and (dt <= 1e-1 + 1e-9).all() and dt.std() > 0
    assert layer.out_proj.bias.abs().max() == 0  # the generic init reaches the GLU projection


@settings(max_examples=60, deadline=None)
@given(log_rate=st.floats(-8, 6), frequency=st.floats(-2000, 2000), log_dt=st.floats(-9, 3),
       method=st.sampled_from(["zoh", "bilinear"]))
def test_s4_zoh_and_bilinear_keep_every_stable_mode_inside_the_unit_circle(log_rate, frequency, log_dt, method):
    """Re λ < 0 and Δ > 0 give |Ā| < 1 (float64), whatever the frequency and the step."""
    A = torch.tensor([complex(-math.exp(log_rate), frequency)], dtype=torch.complex128)
    dt = torch.tensor([[math.exp(log_dt)]], dtype=torch.float64)
    Abar, _ = s4_module.discretize_diagonal(A, torch.ones_like(A), dt, method)
    assert Abar.abs().item() < 1


@settings(max_examples=40, deadline=None)
@given(log_rate=st.floats(-8, 6), frequency=st.floats(-2000, 2000), log_dt=st.floats(-9, 3))
def test_s4_euler_is_stable_exactly_inside_its_disc(log_rate, frequency, log_dt):
    """Forward Euler: |Ā| = |1 + Δλ| — inside the unit circle iff Δλ lies in the disc |z + 1| < 1."""
    lam = complex(-math.exp(log_rate), frequency)
    dt = math.exp(log_dt)
    Abar, _ = s4_module.discretize_diagonal(torch.tensor([lam], dtype=torch.complex128), torch.ones(1),
                                            torch.tensor([[dt]], dtype=torch.float64), "euler")
    assert (Abar.abs().item() < 1) == (abs(1 + dt * lam) < 1)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.01, 100), log_dt=st.floats(-7, 2),
       method=st.sampled_from(["zoh", "bilinear"]))
def test_s4_dense_hippo_stays_stable_for_any_lower_part(seed, scale, log_dt, method):
    """Any strictly lower part and diagonal ``-exp(.)``: every eigenvalue of Ā inside the unit circle."""
    g = torch.Generator().manual_seed(seed)
    N = 6
    A = torch.tril(torch.randn(N, N, generator=g, dtype=torch.float64) * scale, -1) - torch.diag(
        torch.exp(torch.randn(N, generator=g, dtype=torch.float64) * 2))
    Abar, _ = s4_module.discretize_dense(A, torch.ones(1, N, dtype=torch.float64),
                                         torch.tensor([math.exp(log_dt)], dtype=torch.float64), method)
    assert torch.linalg.eigvals(Abar[0]).abs().max() < 1


def test_s4_euler_warns_when_modes_start_outside_the_unit_circle():
    with pytest.warns(UserWarning, match=r"s4_discretization='euler': \d+ of \d+ discrete modes start outside"):
        layer_of("s4", s4_discretization="euler", d_state=64)


def test_s4_knobs_are_validated():
    with pytest.raises(ValueError, match=r"SOSMConfig.s4_discretization='rk4' is invalid; accepted: one of"):
        SOSMConfig(model="s4", s4_discretization="rk4")
    with pytest.raises(ValueError, match=r"SOSMConfig.s4_matrix='dplr' is invalid"):
        SOSMConfig(model="s4", s4_matrix="dplr")
    with pytest.raises(ValueError, match=r"SOSMConfig.d_state=7 is invalid; accepted: an even int"):
        SOSMConfig(model="s4", d_state=7)
    assert SOSMConfig(model="s4", d_state=7, s4_matrix="hippo").d_state == 7  # dense: any N
    assert SOSMConfig(model="mamba", d_state=7).d_state == 7  # only S4's diagonal needs pairs


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), length=st.integers(1, 70), complex_=st.booleans(), with_h0=st.booleans())
def test_diagonal_scan_equals_the_sequential_loop(seed, length, complex_, with_h0):
    g = torch.Generator().manual_seed(seed)
    shape = (2, length, 3)
    a, b = torch.rand(shape, generator=g), torch.randn(shape, generator=g)
    h0 = torch.randn(2, 3, generator=g) if with_h0 else None
    if complex_:
        a = torch.polar(a, torch.randn(shape, generator=g))
        b = torch.complex(b, torch.randn(shape, generator=g))
        h0 = None if h0 is None else torch.complex(h0, h0.flip(0))
    view = torch.view_as_real if complex_ else (lambda t: t)
    assert_close(view(diagonal_scan(a, b, h0)), view(sequential_scan(a, b, h0)), name="states")


def test_diagonal_scan_gradients_equal_the_loops():
    torch.manual_seed(0)
    a = torch.polar(torch.rand(2, T_ODD, 4), torch.randn(2, T_ODD, 4)).requires_grad_()
    b = torch.randn(2, T_ODD, 4, dtype=torch.complex64, requires_grad=True)
    h0 = torch.randn(2, 4, dtype=torch.complex64, requires_grad=True)
    weight = torch.randn(2, T_ODD, 4, dtype=torch.complex64)

    def loss(h):
        return (h * weight).real.sum()

    got = torch.autograd.grad(loss(diagonal_scan(a, b, h0)), (a, b, h0))
    want = torch.autograd.grad(loss(sequential_scan(a, b, h0)), (a, b, h0))
    for name, x, y in zip("a b h0".split(), got, want):
        assert_close(torch.view_as_real(x), torch.view_as_real(y), name=f"grad {name}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_diagonal_scan_adjoint_passes_gradcheck(dtype):
    g = torch.Generator().manual_seed(1)
    a = (0.9 * torch.rand(2, 9, 3, generator=g, dtype=torch.float64)).to(dtype).requires_grad_()
    b = torch.randn(2, 9, 3, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    h0 = torch.randn(2, 3, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b, h0: diagonal_scan(a, b, h0), (a, b, h0))
    assert torch.autograd.gradcheck(lambda a, b: diagonal_scan(a, b), (a, b))


def naive_ossm(layer, x):
    """OSSM written from its equations with a plain loop over time (float64): ``x [B, T, d]`` -> output."""
    u = layer.norm(x).double()
    omega = F.softplus(layer.omega_raw.double())
    zeta = torch.sigmoid(layer.damping_logit.double())
    lam = omega * torch.complex(-zeta, torch.sqrt(1 - zeta ** 2))  # continuous eigenvalues
    B = torch.view_as_complex(layer.B.double())  # [P, d]
    C = torch.view_as_complex(layer.C.double())  # [d, P]
    h = torch.zeros(x.shape[0], B.shape[0], dtype=torch.complex128)
    ys = []
    for t in range(x.shape[1]):
        dt = F.softplus(u[:, t] @ layer.dt_proj.weight.double().T + layer.dt_proj.bias.double())  # [B, P]
        a = torch.exp(dt * lam - MIN_DECAY)
        h = a * h + dt * (u[:, t].to(B.dtype) @ B.T)
        ys.append((h @ C.T).real + layer.D.double() * u[:, t])
    y = torch.stack(ys, 1)
    return x.double() + F.glu(F.linear(F.gelu(y), layer.out_proj.weight.double(), layer.out_proj.bias.double()))


def test_ossm_scan_equals_the_sequential_loop_and_step():
    layer = layer_of("ossm", seed=4, d_state=12)
    x = torch.randn(2, T_ODD, D_MODEL)
    with torch.no_grad():
        full = layer(x, LayerContext())
        assert_close(full, naive_ossm(layer, x).float(), name="scan vs loop")
        assert_close(decode(layer, x), full, name="step")
        cache = {}
        windows = [layer.forward_carry(x[:, a:b], LayerContext(), cache) for a, b in ((0, 11), (11, T_ODD))]
        assert_close(torch.cat(windows, 1), full, name="windows")


def test_ossm_gradients_match_the_naive_loop():
    layer = layer_of("ossm", seed=5, d_state=12)
    x = torch.randn(2, T_ODD, D_MODEL, requires_grad=True)
    weight = torch.randn(2, T_ODD, D_MODEL)
    inputs = [x, *layer.parameters()]
    got = grads(layer(x, LayerContext()), inputs, weight)
    want = grads(naive_ossm(layer, x), inputs, weight.double())
    for index, (a, b) in enumerate(zip(got, want)):
        assert_close(a, b.float(), name=f"grad {index}")


EXTREME = st.one_of(st.floats(-1e6, 1e6), st.sampled_from([-1e6, -1e3, -100.0, -20.0, 0.0, 20.0, 100.0, 1e3, 1e6]))


@settings(max_examples=200, deadline=None)
@given(omega=EXTREME, damping=EXTREME, dt_raw=EXTREME)
def test_ossm_eigenvalues_are_strictly_inside_the_unit_circle_for_every_parameter(omega, damping, dt_raw):
    a = oscillator_transition(torch.tensor([omega]), torch.tensor([damping]), F.softplus(torch.tensor([dt_raw])))
    assert torch.isfinite(torch.view_as_real(a)).all()
    radius = a.abs().item()
    assert radius < 1 and radius <= math.exp(-MIN_DECAY) + 3 * 2 ** -24  # ~17 ulps below 1, up to 3 of rounding


def test_ossm_layer_with_random_and_extreme_parameters_stays_stable():
    layer = layer_of("ossm", seed=6, d_state=64)
    g = torch.Generator().manual_seed(0)
    u = torch.randn(3, 9, D_MODEL, generator=g)
    with torch.no_grad():
        for scale in (1.0, 30.0, 1e4):
            layer.omega_raw.copy_(torch.randn(64, generator=g) * scale)
            layer.damping_logit.copy_(torch.randn(64, generator=g) * scale)
            layer.dt_proj.bias.copy_(torch.randn(64, generator=g) * scale)
            a, _, _ = layer.recurrence(u)
            assert torch.isfinite(torch.view_as_real(a)).all()
            assert a.abs().max() < 1


def test_ossm_special_init_survives_the_models_generic_init():
    model = SOSMModel(SOSMConfig(model="ossm", d_model=D_MODEL, n_heads=2, n_layers=2, d_state=8, vocab_size=VOCAB))
    layer = model.stack.layers[0]
    omega, zeta = F.softplus(layer.omega_raw), torch.sigmoid(layer.damping_logit)
    lam = omega * torch.complex(-zeta, torch.sqrt(1 - zeta ** 2))
    n = torch.arange(1, 8, dtype=torch.float32)
    torch.testing.assert_close(lam[1:], torch.complex(torch.full_like(n, -0.5), math.pi * n), rtol=1e-4, atol=1e-4)
    assert abs(zeta[0].item() - 0.999) < 1e-5 and abs(omega[0].item() - 0.5) < 1e-5
    dt = F.softplus(layer.dt_proj.bias)
    assert (dt >= 1e-3 - 1e-7).all() and (dt <= 1e-1 + 1e-7).all() and dt.std() > 0  # not the generic zeros


def naive_cfc(layer, x):
    """The CfC cell from Hasani et al.'s equations, a plain loop (float64): ``x [B, T, d]`` -> output."""
    u = layer.norm(x).double()

    def linear(module, z):
        out = z @ module.weight.double().T
        return out if module.bias is None else out + module.bias.double()

    h = torch.zeros(x.shape[0], layer.hidden, dtype=torch.float64)
    states = []
    for t in range(x.shape[1]):
        backbone = LECUN_SCALE * torch.tanh(LECUN_SLOPE * (linear(layer.backbone_in, u[:, t])
                                                           + linear(layer.backbone_rec, h)))
        ff1, ff2, time = linear(layer.heads, backbone).chunk(3, dim=-1)
        sigma = torch.sigmoid(time)  # time_a * (Δt = 1) + time_b, one head
        h = torch.tanh(ff1) * (1 - sigma) + sigma * torch.tanh(ff2)
        states.append(h)
    return x.double() + torch.stack(states, 1) @ layer.out_proj.weight.double().T


def naive_ltc(layer, x):
    """The LTC closed form with an input-only conductance, a plain loop (float64)."""
    u = layer.norm(x).double()
    f_raw, v = (u @ layer.in_proj.weight.double().T + layer.in_proj.bias.double()).chunk(2, dim=-1)
    f = F.softplus(f_raw)
    leak = F.softplus(layer.leak_raw.double()) + MIN_LEAK
    h = torch.zeros(x.shape[0], layer.hidden, dtype=torch.float64)
    states = []
    for t in range(x.shape[1]):
        a = torch.exp(-(leak + f[:, t]))  # exact decay over the unit step, input held
        h = a * h + (1 - a) * f[:, t] / (leak + f[:, t]) * v[:, t]
        states.append(h)
    return x.double() + torch.stack(states, 1) @ layer.out_proj.weight.double().T


@pytest.mark.parametrize("variant,naive", [("cfc", naive_cfc), ("ltc", naive_ltc)])
def test_cfc_forward_step_and_windows_equal_the_naive_loop(variant, naive):
    layer = layer_of("cfc", seed=7, cfc_variant=variant)
    x = torch.randn(2, T_ODD, D_MODEL)
    with torch.no_grad():
        full = layer(x, LayerContext())
        assert_close(full, naive(layer, x).float(), name="forward vs loop")
        assert_close(decode(layer, x), full, name="step")
        cache = {}
        windows = [layer.forward_carry(x[:, a:b], LayerContext(), cache) for a, b in ((0, 14), (14, T_ODD))]
        assert_close(torch.cat(windows, 1), full, name="windows")


@pytest.mark.parametrize("variant,naive", [("cfc", naive_cfc), ("ltc", naive_ltc)])
def test_cfc_gradients_match_the_naive_loop(variant, naive):
    layer = layer_of("cfc", seed=8, cfc_variant=variant)
    x = torch.randn(2, T_ODD, D_MODEL, requires_grad=True)
    weight = torch.randn(2, T_ODD, D_MODEL)
    inputs = [x, *layer.parameters()]
    got = grads(layer(x, LayerContext()), inputs, weight)
    want = grads(naive(layer, x), inputs, weight.double())
    for index, (a, b) in enumerate(zip(got, want)):
        assert_close(a, b.float(), name=f"grad {index}")


def test_cfc_special_init_survives_the_models_generic_init():
    model = SOSMModel(SOSMConfig(model="cfc", d_model=D_MODEL, n_heads=2, n_layers=2, vocab_size=VOCAB))
    heads = model.stack.layers[0].heads
    bound = math.sqrt(6 / (D_MODEL + 3 * D_MODEL))  # Xavier-uniform, not the generic normal(0, 0.02)
    assert heads.weight.abs().max() <= bound and heads.weight.std() > 0.5 * bound / math.sqrt(3)
    ltc = SOSMModel(SOSMConfig(model="cfc", cfc_variant="ltc", d_model=D_MODEL, n_heads=2, n_layers=2,
                               vocab_size=VOCAB)).stack.layers[0]
    rate = F.softplus(ltc.in_proj.bias[:D_MODEL])
    assert (rate >= 1e-3 - 1e-7).all() and (rate <= 1e-1 + 1e-7).all()
    with pytest.raises(ValueError, match=r"SOSMConfig.cfc_variant='lstm' is invalid; accepted: one of \('cfc', 'lt"):
        SOSMConfig(model="cfc", cfc_variant="lstm")


VARIANTS = [("s4", {"s4_matrix": "lin"}), ("s4", {"s4_matrix": "hippo", "d_state": 4}),
            ("s4", {"s4_discretization": "bilinear"}), ("cfc", {"cfc_variant": "ltc"})]
VARIANT_IDS = [f"{name}-{'-'.join(map(str, o.values()))}" for name, o in VARIANTS]


@pytest.mark.parametrize("name,overrides", VARIANTS, ids=VARIANT_IDS)
def test_non_default_variants_meet_the_contract(name, overrides):
    """Decoding == forward, DePass completeness and parameter matching for the variants the generic test skips."""
    from sosm.analysis import DePass

    config = SOSMConfig(**{**dict(model=name, d_model=32, n_heads=2, n_layers=2, d_state=8, vocab_size=VOCAB,
                                  max_seq_len=32), **overrides})
    torch.manual_seed(3)
    model = SOSMModel(config).eval()
    ids = random_ids()
    full, _ = model(ids)
    decoder = model.decoder(batch_size=2)
    stepped = torch.stack([decoder.step(ids[:, t]) for t in range(ids.shape[1])], dim=1)
    torch.testing.assert_close(stepped, full, rtol=1e-5, atol=1e-5)
    assert DePass(model).run(ids[:1], by="token").completeness_error() < 1e-4
    reference = SOSMConfig(model="hybrid", d_model=64, n_heads=4, n_layers=4, vocab_size=65, **overrides)
    matched = matched_config(reference, name)
    assert abs(param_count(matched) - param_count(reference)) <= 0.05 * param_count(reference)
    assert all(getattr(matched, key) == value for key, value in overrides.items())
