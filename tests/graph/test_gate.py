"""TemporalGate: range, seeded determinism, shapes, gradients."""
import pytest
import torch

from sosm.graph.gate import TemporalGate


def test_range_and_shape():
    gate = TemporalGate(seed=0)
    s = gate(torch.randn(3, 7, 32), torch.randn(3, 7, 32))
    assert s.shape == (3, 7) and bool(((s > 0) & (s < 1)).all())


def test_seeded_initialisation_is_deterministic():
    a, b, c = TemporalGate(seed=1), TemporalGate(seed=1), TemporalGate(seed=2)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


def test_pairwise_only_and_differentiable():
    gate = TemporalGate(seed=0)
    src, dst = torch.randn(4, 32, requires_grad=True), torch.randn(4, 32)
    s = gate(src, dst)
    torch.testing.assert_close(s[1:], gate(src[1:], dst[1:]), rtol=1e-6, atol=1e-7)  # one score per pair
    s.sum().backward()
    assert src.grad is not None and torch.isfinite(src.grad).all()


def test_wrong_width_names_the_shape():
    with pytest.raises(ValueError, match=r"\[\.\.\., 32\]"):
        TemporalGate()(torch.randn(2, 16), torch.randn(2, 16))
    with pytest.raises(ValueError, match="hidden"):
        TemporalGate(hidden=0)
