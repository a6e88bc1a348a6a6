"""``causal_conv1d``: float32 accumulation for low-precision inputs (issue 12 item 26) and carried state,
``initial_states`` / ``return_final_states`` and the step function ``causal_conv1d_update`` (item 27).

Tolerances are causal-conv1d's own (Dao-AILab/causal-conv1d tests/test_causal_conv1d.py): float16 output
and dx rtol 3e-3 / atol 5e-3, bfloat16 1e-2 / 5e-2, float32 weight and bias gradients 1e-3 / 1e-3, against
a reference that computes in float32 (here: float64, the stricter oracle).
"""
import pytest
import torch
import torch.nn.functional as F

from sosm.kernels import causal_conv1d, causal_conv1d_update
from sosm.kernels.selective_scan import causal_conv1d_ref, native_cpu

BACKENDS = [pytest.param("native", marks=pytest.mark.skipif(not native_cpu.status()[0], reason="no native library")),
            "vectorized", "reference"]
PEER_TOLERANCES = {torch.float16: (3e-3, 5e-3), torch.bfloat16: (1e-2, 5e-2), torch.float32: (3e-4, 1e-3)}


def oracle(x, weight, bias, activation, initial_states=None):
    """float64 causal depthwise convolution over [initial_states, x]; returns (out, final_states) in float64."""
    K = weight.shape[1]
    full = x.double() if initial_states is None else torch.cat([initial_states.double(), x.double()], 1)
    out = F.conv1d(full.transpose(1, 2), weight.double()[:, None, :], None if bias is None else bias.double(),
                   padding=K - 1, groups=x.shape[2])[..., :full.shape[1]].transpose(1, 2)
    out = out[:, full.shape[1] - x.shape[1]:]
    final = F.pad(full, (0, 0, max(0, K - 1 - full.shape[1]), 0))[:, full.shape[1] + max(0, K - 1 - full.shape[1]) - (K - 1):]
    return (F.silu(out) if activation == "silu" else out), final


def make(batch, seq_len, channels, width, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, seq_len, 2 * channels, generator=g).to(dtype)[..., channels:].requires_grad_()
    weight = torch.randn(channels, width, generator=g).requires_grad_()  # float32 parameters, as in the model
    bias = torch.randn(channels, generator=g).requires_grad_()
    return x, weight, bias


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("activation", [None, "silu"])
def test_low_precision_accumulates_in_float32(backend, dtype, activation):
    """Item 26: the taps are never cast down, sums run in float32; errors within the peers' tolerances."""
    x, weight, bias = make(2, 512, 64, 4, dtype)
    grad = torch.randn(2, 512, 64, generator=torch.Generator().manual_seed(1)).to(dtype)
    out = causal_conv1d(x, weight, bias, activation, backend=backend)
    assert out.dtype == dtype
    gx, gw, gb = torch.autograd.grad(out, (x, weight, bias), grad)
    assert gx.dtype == dtype and gw.dtype == gb.dtype == torch.float32
    ref, _ = oracle(x, weight, bias, activation)
    rx, rw, rb = torch.autograd.grad(ref, (x, weight, bias), grad.double())
    rtol, atol = PEER_TOLERANCES[dtype]
    torch.testing.assert_close(out.double(), ref.to(dtype).double(), rtol=rtol, atol=atol)
    torch.testing.assert_close(gx.double(), rx.to(dtype).double(), rtol=rtol, atol=atol)
    torch.testing.assert_close(gw.double(), rw.double(), rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(gb.double(), rb.double(), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("seq_len,width", [(1, 4), (2, 4), (3, 4), (17, 4), (9, 1), (33, 3)])
def test_initial_and_final_states_forward_and_backward(backend, dtype, seq_len, width):
    x, weight, bias = make(3, seq_len, 20, width, dtype, seed=seq_len)
    g = torch.Generator().manual_seed(5)
    initial = torch.randn(3, width - 1, 20, generator=g).to(dtype).requires_grad_()
    out, final = causal_conv1d(x, weight, bias, "silu", initial_states=initial, return_final_states=True,
                               backend=backend)
    assert out.shape == x.shape and final.shape == (3, width - 1, 20) and final.dtype == dtype
    ref, ref_final = oracle(x, weight, bias, "silu", initial)
    rtol, atol = PEER_TOLERANCES[dtype]
    torch.testing.assert_close(out.double(), ref.to(dtype).double(), rtol=rtol, atol=atol)
    assert torch.equal(final.double(), ref_final)  # the last K - 1 inputs, copied
    gy = torch.randn(out.shape, generator=g).to(dtype)
    gf = torch.randn(final.shape, generator=g).to(dtype)
    got = torch.autograd.grad((out, final), (x, weight, bias, initial), (gy, gf))
    want = torch.autograd.grad((ref, ref_final), (x, weight, bias, initial), (gy.double(), gf.double()))
    for name, a, b in zip(("x", "weight", "bias", "initial_states"), got, want):
        tol = (1e-3, 1e-3) if name in ("weight", "bias") else (rtol, atol)
        torch.testing.assert_close(a.double(), b.to(a.dtype).double(), rtol=tol[0], atol=tol[1],
                                   msg=lambda m: f"grad {name}: {m}")
    ref_path, ref_path_final = causal_conv1d_ref(x, weight, bias, "silu", initial_states=initial,
                                                 return_final_states=True)
    torch.testing.assert_close(out, ref_path, rtol=rtol, atol=atol)
    assert torch.equal(final, ref_path_final)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seq_len", [1, 2, 7])
def test_final_states_without_initial_states_pad_with_zeros(backend, seq_len):
    x, weight, bias = make(2, seq_len, 6, 4, torch.float32)
    _, final = causal_conv1d(x, weight, bias, return_final_states=True, backend=backend)
    assert torch.equal(final, oracle(x, weight, bias, None)[1].float())


@pytest.mark.parametrize("backend", BACKENDS)
def test_chunked_streaming_equals_the_whole_sequence(backend):
    """Prefill in chunks, carrying the final states: the outputs of the whole sequence, bit for bit."""
    x, weight, bias = make(2, 40, 12, 4, torch.float32, seed=3)
    x = x.detach()
    whole = causal_conv1d(x, weight, bias, "silu", backend=backend)
    state, parts = None, []
    for a, b in ((0, 1), (1, 3), (3, 19), (19, 40)):
        out, state = causal_conv1d(x[:, a:b], weight, bias, "silu", initial_states=state, return_final_states=True,
                                   backend=backend)
        parts.append(out)
    torch.testing.assert_close(torch.cat(parts, 1), whole, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("width", [1, 2, 4])
def test_update_steps_equal_the_forward_and_do_not_mutate_the_state(dtype, width):
    x, weight, bias = make(3, 11, 10, width, dtype, seed=width)
    x = x.detach()
    full, full_final = causal_conv1d(x, weight, bias, "silu", return_final_states=True)
    state = torch.zeros(3, width - 1, 10, dtype=dtype)
    steps = []
    for t in range(11):
        before = state.clone()
        out, new_state = causal_conv1d_update(x[:, t], state, weight, bias, "silu")
        assert torch.equal(state, before) and out.shape == (3, 10) and out.dtype == dtype
        steps.append(out)
        state = new_state
    rtol, atol = PEER_TOLERANCES[dtype]
    torch.testing.assert_close(torch.stack(steps, 1), full, rtol=rtol, atol=atol)
    assert torch.equal(state, full_final)
    two, state2 = causal_conv1d_update(x[:, 9:11], causal_conv1d_update(x[:, :9], torch.zeros_like(state), weight,
                                                                        bias, "silu")[1], weight, bias, "silu")
    torch.testing.assert_close(two, full[:, 9:11], rtol=rtol, atol=atol)
    assert torch.equal(state2, full_final)


def test_bad_state_arguments_name_themselves():
    x, weight, bias = make(2, 5, 6, 4, torch.float32)
    with pytest.raises(ValueError, match=r"initial_states must be \[B=2, K-1=3, E=6\]"):
        causal_conv1d(x, weight, bias, initial_states=torch.zeros(2, 4, 6))
    with pytest.raises(TypeError, match="initial_states must be a floating-point tensor"):
        causal_conv1d(x, weight, bias, initial_states=torch.zeros(2, 3, 6, dtype=torch.long))
    with pytest.raises(ValueError, match=r"conv_state must be \[B=2, K-1=3, E=6\]"):
        causal_conv1d_update(x[:, 0], torch.zeros(2, 6, 3), weight, bias)
    with pytest.raises(ValueError, match=r"x must be \[B, E\] or \[B, L, E\]"):
        causal_conv1d_update(x[0, 0], torch.zeros(2, 3, 6), weight, bias)
