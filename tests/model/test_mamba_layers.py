"""TopologicalMamba's CPU pieces against their plain PyTorch definitions (forward and backward)."""
import pytest
import torch
import torch.nn as nn

from sosm.model.mixers.mamba import causal_depthwise_conv


@pytest.mark.parametrize("seq_len", [1, 3, 4, 17])
@pytest.mark.parametrize("width", [1, 4])
def test_causal_depthwise_conv_matches_conv1d(seq_len, width):
    """Shifted multiply-adds in [B, T, E] equal the left-padded depthwise Conv1d (T below and above K)."""
    torch.manual_seed(0)
    channels = 6
    conv = nn.Conv1d(channels, channels, width, groups=channels, padding=width - 1)
    x = torch.randn(2, seq_len, 2 * channels)[..., :channels].requires_grad_()  # strided, like in_proj's half
    grad = torch.randn(2, seq_len, channels)

    out = causal_depthwise_conv(x, conv)
    got = torch.autograd.grad(out, (x, conv.weight, conv.bias), grad)
    ref = conv(x.transpose(1, 2))[..., :seq_len].transpose(1, 2)
    want = torch.autograd.grad(ref, (x, conv.weight, conv.bias), grad)

    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    for name, a, b in zip(("x", "weight", "bias"), got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=lambda m: f"grad {name}: {m}")
