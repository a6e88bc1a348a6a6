"""selective_scan: every path and every gradient against the sequential float32 loop."""
import importlib

import pytest
import torch

from sosm.kernels import selective_scan, selective_state_update
from sosm.kernels._backend import interpreter_enabled
from sosm.kernels.selective_scan import selective_scan_ref
from tests.conftest import DEVICES
from tests.kernels.tolerance import assert_close

GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def make_inputs(batch=2, dim=8, d_state=4, length=33, groups=0, with_D=True, with_z=True,
                with_bias=True, dtype=torch.float32, device="cpu", seed=0, positive_delta=False):
    """Random scan inputs; groups=0 means ungrouped B, C [B, N, L]. A, D, bias stay float32.

    ``positive_delta`` for runs without softplus: a negative step with A < 0 grows the state.
    """
    g = torch.Generator().manual_seed(seed)
    rand = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    shape_bc = (batch, d_state, length) if groups == 0 else (batch, groups, d_state, length)
    inputs = {
        "u": rand(batch, dim, length).to(dtype),
        "delta": (0.5 * rand(batch, dim, length)).abs().to(dtype) if positive_delta
        else (0.5 * rand(batch, dim, length)).to(dtype),
        "A": -torch.exp(0.5 * rand(dim, d_state)),
        "B": rand(*shape_bc).to(dtype),
        "C": rand(*shape_bc).to(dtype),
        "D": rand(dim) if with_D else None,
        "z": rand(batch, dim, length).to(dtype) if with_z else None,
        "delta_bias": 0.5 * rand(dim) if with_bias else None,
    }
    return {k: (v.to(device).requires_grad_() if v is not None else None) for k, v in inputs.items()}


def run(fn, inputs, delta_softplus, return_last_state, seed=1, **kwargs):
    """Forward plus every gradient of a random projection of the outputs."""
    inputs = {k: (v.detach().clone().requires_grad_() if v is not None else None)
              for k, v in inputs.items()}
    result = fn(**inputs, delta_softplus=delta_softplus, return_last_state=return_last_state, **kwargs)
    out, last = result if return_last_state else (result, None)
    g = torch.Generator().manual_seed(seed)
    loss = (out.float() * torch.randn(out.shape, generator=g).to(out.device)).sum()
    if last is not None:
        loss = loss + (last.float() * torch.randn(last.shape, generator=g).to(out.device)).sum()
    loss.backward()
    grads = {k: v.grad for k, v in inputs.items() if v is not None}
    return out.detach(), (None if last is None else last.detach()), grads


def compare(actual, expected, dtype=torch.float32, baseline=None):
    assert_close(actual[0], expected[0], dtype, None if baseline is None else baseline[0], name="out")
    if expected[1] is not None:
        assert_close(actual[1], expected[1], torch.float32,
                     None if baseline is None else baseline[1], name="last_state")
    for name, grad in expected[2].items():
        assert_close(actual[2][name], grad, grad.dtype if grad.dtype != torch.float32 else dtype,
                     None if baseline is None else baseline[2][name], name=f"grad {name}")


def as_float32(inputs):
    return {k: (v.detach().float() if v is not None else None) for k, v in inputs.items()}


CONFIGS = [  # groups, with_D, with_z, with_bias, softplus, last_state
    (0, True, True, True, True, True),
    (0, False, False, False, False, False),
    (2, True, False, True, True, True),
    (4, False, True, False, False, True),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("length", [1, 63, 77, 200])
@pytest.mark.parametrize("config", CONFIGS)
def test_vectorized_matches_loop(device, length, config):
    groups, with_D, with_z, with_bias, softplus, last = config
    inputs = make_inputs(length=length, groups=groups, with_D=with_D, with_z=with_z,
                         with_bias=with_bias, device=device, positive_delta=not softplus)
    expected = run(selective_scan_ref, inputs, softplus, last)
    actual = run(selective_scan, inputs, softplus, last, backend="vectorized")
    compare(actual, expected)


def test_cpu_dispatch_warns_once_and_matches(monkeypatch):
    """With the native CPU scan switched off, CPU tensors take the vectorised path and say so once
    (the native path's own dispatch and fallback: test_selective_scan_native.py)."""
    monkeypatch.setenv("SOSM_NATIVE_CPU", "0")
    backend = importlib.import_module("sosm.kernels._backend")
    backend._warned.discard(("selective_scan", "device-cpu"))
    inputs = make_inputs(length=20)
    with pytest.warns(RuntimeWarning, match="vectorised PyTorch path"):
        out = selective_scan(**as_float32(inputs))
    compare(run(selective_scan, inputs, False, False), run(selective_scan_ref, inputs, False, False))
    assert out.shape == inputs["u"].shape


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("groups", [0, 2])
def test_state_update_steps_equal_full_scan(device, groups):
    inputs = as_float32(make_inputs(length=29, groups=groups, device=device))
    out, last = selective_scan_ref(**inputs, delta_softplus=True, return_last_state=True)
    state = torch.zeros_like(last)
    steps = []
    for t in range(inputs["u"].shape[2]):
        step = {k: (v[..., t] if k in ("u", "delta", "z", "B", "C") else v) for k, v in inputs.items()}
        y, state = selective_state_update(state, **step, delta_softplus=True)
        steps.append(y)
    assert_close(torch.stack(steps, -1), out, name="stepped out")
    assert_close(state, last, name="stepped state")


def test_state_update_does_not_mutate_state():
    inputs = as_float32(make_inputs(length=1))
    state = torch.randn(2, 8, 4)
    before = state.clone()
    step = {k: (v[..., 0] if k in ("u", "delta", "z", "B", "C") else v) for k, v in inputs.items()}
    selective_state_update(state, **step)
    assert torch.equal(state, before)


@pytest.mark.parametrize("change, message", [
    (dict(u=torch.randn(2, 8)), "u must be"),
    (dict(delta=torch.randn(2, 8, 5)), "delta must"),
    (dict(A=torch.randn(7, 4)), "A must be"),
    (dict(B=torch.randn(2, 3, 33)), "B must be"),
    (dict(B=torch.randn(2, 3, 4, 33), C=torch.randn(2, 3, 4, 33)), "groups"),
    (dict(D=torch.randn(5)), "D must be"),
    (dict(z=torch.randn(2, 8, 32)), "z must"),
    (dict(delta_bias=torch.randn(8, 1)), "delta_bias must"),
    (dict(u=torch.ones(2, 8, 33, dtype=torch.long)), "u must be a floating"),
    (dict(A=-torch.rand(8, 4, dtype=torch.complex64)), r"A must be real: complex A \(complex64\) is not supported"),
    (dict(B=torch.randn(2, 4, 33, dtype=torch.complex64)), r"B must be real: complex B \(complex64\) is not supported"),
])
def test_bad_inputs_name_the_argument(change, message):
    inputs = as_float32(make_inputs())
    inputs.update(change)
    with pytest.raises((ValueError, TypeError), match=message):
        selective_scan(**inputs)


def test_forced_reference_backend_runs_the_loop(monkeypatch):
    backend = importlib.import_module("sosm.kernels._backend")
    calls = []
    scan_pkg = importlib.import_module("sosm.kernels.selective_scan")
    monkeypatch.setattr(scan_pkg, "selective_scan_ref", lambda *a: calls.append(1) or a[0])
    with backend.force_backend("reference"):
        selective_scan(**as_float32(make_inputs()))
    assert calls == [1]


def test_bad_backend():
    with pytest.raises(ValueError, match="backend"):
        selective_scan(**as_float32(make_inputs()), backend="cuda-magic")


@pytest.fixture
def nan_outputs(monkeypatch):
    """Kernel outputs start as NaN: a block the kernel skips shows up as non-finite."""
    triton_scan = pytest.importorskip("sosm.kernels.selective_scan.triton_scan")
    monkeypatch.setattr(triton_scan, "_new_output",
                        lambda shape, dtype, device: torch.full(shape, float("nan"), dtype=dtype,
                                                                device=device))


def needs_interpreter(device):
    if device == "cpu" and not interpreter_enabled():
        pytest.skip("CPU tensors on the Triton path need TRITON_INTERPRET=1 (set when no CUDA)")


def triton_sizes(device):
    """Interpreter sizes on CPU (seconds per call), kernel-sized on CUDA."""
    return dict(batch=2, dim=8, d_state=4) if device == "cpu" else dict(batch=2, dim=64, d_state=16)


TRITON_CASES = [(1, CONFIGS[0]), (77, CONFIGS[3]), (63, CONFIGS[2]),
                pytest.param(200, CONFIGS[1], marks=pytest.mark.slow)]  # ~3 s under the interpreter


@pytest.mark.interpreter
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("length, config", TRITON_CASES)
def test_triton_matches_loop(device, length, config, nan_outputs):
    needs_interpreter(device)
    groups, with_D, with_z, with_bias, softplus, last = config
    inputs = make_inputs(length=length, groups=groups, with_D=with_D, with_z=with_z,
                         with_bias=with_bias, device=device, positive_delta=not softplus,
                         **triton_sizes(device))
    expected = run(selective_scan_ref, inputs, softplus, last)
    actual = run(selective_scan, inputs, softplus, last, backend="triton")
    compare(actual, expected)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("length", [1, 63, 77, 200, 1000])
@pytest.mark.parametrize("config", CONFIGS)
def test_cuda_auto_dispatch_matches_loop(length, config, nan_outputs):
    groups, with_D, with_z, with_bias, softplus, last = config
    inputs = make_inputs(length=length, groups=groups, with_D=with_D, with_z=with_z,
                         with_bias=with_bias, device="cuda", positive_delta=not softplus,
                         **triton_sizes("cuda"))
    compare(run(selective_scan, inputs, softplus, last), run(selective_scan_ref, inputs, softplus, last))


LOW_PRECISION = [("cpu", torch.float16)] if "cuda" not in DEVICES else [
    ("cpu", torch.float16), ("cuda", torch.float16), ("cuda", torch.bfloat16)]


@pytest.mark.interpreter
@pytest.mark.parametrize("device, dtype", LOW_PRECISION)
def test_triton_low_precision(device, dtype, nan_outputs):
    """mamba_ssm's rule: error <= 2x the PyTorch reference's own low-precision error + atol."""
    needs_interpreter(device)
    inputs = make_inputs(length=77, dtype=dtype, device=device, **triton_sizes(device))
    expected = run(selective_scan_ref, {k: (v.detach().float() if v is not None else None)
                                        for k, v in inputs.items()}, True, True)
    baseline = run(selective_scan_ref, inputs, True, True)
    actual = run(selective_scan, inputs, True, True, backend="triton")
    assert actual[0].dtype == dtype and actual[2]["u"].dtype == dtype
    compare(actual, expected, dtype, baseline)


@pytest.mark.parametrize("chunk_steps", [1, 3, 16, 1000])
@pytest.mark.parametrize("length", [63, 77])
@pytest.mark.parametrize("config", CONFIGS[:3])
def test_vectorized_time_chunks_match_loop(monkeypatch, chunk_steps, length, config):
    """The CPU path walks time in chunks (the backward recomputing each chunk's states from the
    previous chunk's end state): every chunk boundary, a last partial chunk and one whole-sequence
    chunk give the loop's numbers."""
    reference = importlib.import_module("sosm.kernels.selective_scan.reference")
    groups, with_D, with_z, with_bias, softplus, last = config
    inputs = make_inputs(length=length, groups=groups, with_D=with_D, with_z=with_z,
                         with_bias=with_bias, positive_delta=not softplus)
    slab = 2 * 8 * 4  # batch x dim x d_state of make_inputs
    monkeypatch.setattr(reference, "CHUNK_ELEMENTS", chunk_steps * slab)
    assert reference._chunk_steps(slab) == chunk_steps
    expected = run(selective_scan_ref, inputs, softplus, last)
    actual = run(selective_scan, inputs, softplus, last, backend="vectorized")
    compare(actual, expected)


def test_vectorized_underflowing_decay_matches_loop():
    """Steps with exp(delta A) below float32's normal range (floored on the CPU path) give the loop's numbers."""
    inputs = make_inputs(length=63, positive_delta=True, with_bias=False)
    with torch.no_grad():
        inputs["delta"].mul_(60.0)  # delta A reaches about -300: exp underflows for many steps
    expected = run(selective_scan_ref, inputs, False, True)
    actual = run(selective_scan, inputs, False, True, backend="vectorized")
    compare(actual, expected)
