"""The one tolerance helper for kernel tests (STYLE.md, "In this project" 2).

``assert_close(actual, expected, dtype)`` fails on any NaN/Inf, on a relative RMS error
above the dtype's budget, or on a max-abs error above ``atol + rtol * max|expected|``.
For low precision, pass ``baseline`` (the same computation run by the PyTorch reference
in that dtype): the kernel may err up to 2x the baseline's error plus atol (mamba_ssm's rule).
"""
from __future__ import annotations

import torch

TOLERANCES = {  # dtype: (relative RMS, atol, rtol on max-abs)
    torch.float32: (1e-5, 1e-5, 1e-4),
    torch.float16: (2e-3, 1e-3, 1e-2),
    torch.bfloat16: (1.6e-2, 1e-2, 5e-2),
}


def rel_rms(actual: torch.Tensor, expected: torch.Tensor) -> float:
    diff = (actual.double() - expected.double()).pow(2).mean().sqrt()
    scale = expected.double().pow(2).mean().sqrt().clamp_min(1e-12)
    return float(diff / scale)


def assert_close(actual, expected, dtype=torch.float32, baseline=None, name="output"):
    if actual.shape != expected.shape:
        raise AssertionError(f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}")
    if not torch.isfinite(actual).all():
        bad = (~torch.isfinite(actual)).sum().item()
        raise AssertionError(f"{name}: {bad} non-finite values (skipped blocks leaking NaN?)")
    rms_tol, atol, rtol = TOLERANCES[dtype]
    err = rel_rms(actual, expected)
    max_abs = float((actual.double() - expected.double()).abs().max()) if actual.numel() else 0.0
    max_tol = atol + rtol * float(expected.double().abs().max()) if expected.numel() else atol
    if baseline is not None:
        base_err = rel_rms(baseline, expected)
        base_abs = float((baseline.double() - expected.double()).abs().max()) if baseline.numel() else 0.0
        rms_tol = max(rms_tol, 2 * base_err)
        max_tol = max(max_tol, 2 * base_abs + atol)
    if err > rms_tol or max_abs > max_tol:
        raise AssertionError(f"{name} ({dtype}): rel RMS {err:.3e} (tol {rms_tol:.1e}), "
                             f"max abs {max_abs:.3e} (tol {max_tol:.1e})")
