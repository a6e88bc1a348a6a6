"""``causal_conv1d`` (Mamba's causal depthwise convolution, optional SiLU): every path against ``F.conv1d``."""
import pytest
import torch
import torch.nn.functional as F

from sosm.kernels import causal_conv1d
from sosm.kernels.selective_scan import causal_conv1d_ref, native_cpu
from sosm.kernels.selective_scan.causal_conv import conv_path

native_ok = pytest.mark.skipif(not native_cpu.status()[0], reason="native CPU library unavailable here")


def oracle(x, weight, bias, activation):
    T, K = x.shape[1], weight.shape[1]
    out = F.conv1d(x.transpose(1, 2), weight[:, None, :], bias, padding=K - 1, groups=x.shape[2])
    out = out[..., :T].transpose(1, 2)
    return F.silu(out) if activation == "silu" else out


def inputs(seq_len, width, channels=20, strided=True, bias=True, dtype=torch.float32):
    g = torch.Generator().manual_seed(seq_len * 31 + width)
    x = torch.randn(3, seq_len, 2 * channels, generator=g, dtype=dtype)
    x = (x[..., channels:] if strided else x[..., :channels].contiguous()).requires_grad_()  # like in_proj's half
    weight = torch.randn(channels, width, generator=g, dtype=dtype).requires_grad_()
    b = torch.randn(channels, generator=g, dtype=dtype).requires_grad_() if bias else None
    return x, weight, b


@pytest.mark.parametrize("backend", [pytest.param("native", marks=native_ok), "vectorized", "reference"])
@pytest.mark.parametrize("activation", [None, "silu"])
@pytest.mark.parametrize("seq_len,width", [(1, 4), (3, 4), (4, 4), (17, 4), (9, 1), (33, 3)])
def test_paths_match_conv1d_forward_and_backward(backend, activation, seq_len, width):
    x, weight, bias = inputs(seq_len, width)
    grad = torch.randn(3, seq_len, x.shape[2], generator=torch.Generator().manual_seed(7))
    out = causal_conv1d(x, weight, bias, activation, backend=backend)
    got = torch.autograd.grad(out, (x, weight, bias), grad)
    ref = oracle(x, weight, bias, activation)
    want = torch.autograd.grad(ref, (x, weight, bias), grad)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for name, a, b in zip(("x", "weight", "bias"), got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=lambda m: f"grad {name}: {m}")


@native_ok
def test_native_is_the_cpu_float32_default_and_matches_without_bias_or_stride():
    x, weight, _ = inputs(12, 4, strided=False, bias=False)
    assert conv_path(x) == "native"
    torch.testing.assert_close(causal_conv1d(x, weight, None, "silu"), oracle(x, weight, None, "silu"),
                               rtol=1e-5, atol=1e-5)
    out = causal_conv1d(x, weight)
    gx, gw = torch.autograd.grad(out.square().sum(), (x, weight))
    rx, rw = torch.autograd.grad(oracle(x, weight, None, None).square().sum(), (x, weight))
    torch.testing.assert_close(gx, rx, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gw, rw, rtol=1e-5, atol=1e-4)


def test_float64_and_switch_off_take_the_vectorized_path(monkeypatch):
    x, weight, bias = inputs(6, 4, dtype=torch.float64)
    assert conv_path(x) == "vectorized"
    torch.testing.assert_close(causal_conv1d(x, weight, bias, "silu"), causal_conv1d_ref(x, weight, bias, "silu"))
    monkeypatch.setenv(native_cpu.ENV_SWITCH, "0")
    assert conv_path(x.float()) == "vectorized"


def test_causal_output_ignores_later_inputs():
    x, weight, bias = inputs(16, 4, strided=False)
    x = x.detach()
    later = x.clone()
    later[:, 9:] = torch.randn_like(later[:, 9:])
    for backend in ("native", "vectorized") if native_cpu.status()[0] else ("vectorized",):
        a = causal_conv1d(x, weight, bias, "silu", backend=backend)
        b = causal_conv1d(later, weight, bias, "silu", backend=backend)
        assert torch.equal(a[:, :9], b[:, :9]), backend
        assert not torch.equal(a[:, 9:], b[:, 9:]), backend


@pytest.mark.parametrize("bad,match", [
    (lambda x, w, b: (x[0], w, b), "x must be"),
    (lambda x, w, b: (x, w.t(), b), "weight must be"),
    (lambda x, w, b: (x, w, b[:3]), "bias must be"),
    (lambda x, w, b: (x.long(), w, b), "floating-point"),
])
def test_bad_arguments_name_the_argument(bad, match):
    x, weight, bias = inputs(5, 4)
    with pytest.raises((TypeError, ValueError), match=match):
        causal_conv1d(*bad(x.detach(), weight.detach(), bias.detach()))
    with pytest.raises(ValueError, match="activation"):
        causal_conv1d(x, weight, bias, "relu")
