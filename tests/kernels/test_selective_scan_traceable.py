"""The traceable selective scan (one ``higher_order.scan``, used under torch.export) against the reference."""
import pytest
import torch

from sosm.kernels.selective_scan import selective_scan_ref
from sosm.kernels.selective_scan.traceable import selective_scan_traceable


@pytest.mark.parametrize("length", [1, 7, 63])
@pytest.mark.parametrize("grouped", [False, True])
def test_traceable_scan_equals_the_reference(length, grouped):
    g = torch.Generator().manual_seed(length)
    batch, dim, n = 2, 6, 4
    shape_bc = (batch, 2, n, length) if grouped else (batch, n, length)
    args = (torch.randn(batch, dim, length, generator=g), torch.randn(batch, dim, length, generator=g),
            -torch.rand(dim, n, generator=g), torch.randn(*shape_bc, generator=g), torch.randn(*shape_bc, generator=g))
    kwargs = dict(D=torch.randn(dim, generator=g), z=torch.randn(batch, dim, length, generator=g),
                  delta_bias=torch.randn(dim, generator=g), delta_softplus=True, return_last_state=True)
    out, last = selective_scan_traceable(*args, **kwargs)
    want, want_last = selective_scan_ref(*args, **kwargs)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(last, want_last, rtol=1e-5, atol=1e-6)


def test_traceable_scan_checks_its_arguments():
    with pytest.raises(ValueError, match="u must be"):
        selective_scan_traceable(torch.randn(2, 3), torch.randn(2, 3), -torch.rand(3, 2), torch.randn(2, 2, 3),
                                 torch.randn(2, 2, 3))
