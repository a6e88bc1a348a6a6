"""Native CPU selective scan (compiled C): forward, last state and every gradient against the
sequential float32 loop; dispatch, the switch and the fallback when no compiler or build works."""
import importlib
import os
import stat
import threading
import warnings

import pytest
import torch

from sosm.kernels import selective_scan
from sosm.kernels._backend import force_backend
from sosm.kernels.selective_scan import native_cpu, scan_path, selective_scan_ref
from tests.kernels.test_selective_scan import compare, make_inputs, run

backend_mod = importlib.import_module("sosm.kernels._backend")
scan_pkg = importlib.import_module("sosm.kernels.selective_scan")

needs_compiler = pytest.mark.skipif(native_cpu.find_compiler() is None, reason="no C compiler on this machine")


@pytest.fixture
def native():
    """The library, built (or loaded from the cache); a machine with a compiler must build it."""
    ok, reason = native_cpu.status()
    assert ok, reason
    return native_cpu.selective_scan_native


@pytest.fixture
def fresh_native(monkeypatch):
    """Forget the loaded library and the fallback warnings around a test; reload afterwards."""
    monkeypatch.delenv(native_cpu.ENV_SWITCH, raising=False)
    native_cpu._reset()
    for key in ("native-unavailable", "native-disabled", "device-cpu"):
        backend_mod._warned.discard(("selective_scan", key))
    yield
    native_cpu._reset()
    for key in ("native-unavailable", "native-disabled", "device-cpu"):
        backend_mod._warned.discard(("selective_scan", key))


CONFIGS = [  # groups, with_D, with_z, with_bias, softplus, last_state, d_state, dim
    (0, True, True, True, True, True, 16, 8),
    (0, False, False, False, False, False, 4, 8),
    (0, True, False, False, True, True, 4, 72),  # two channel blocks, the second partial (64 + 8)
    (2, True, True, True, True, True, 16, 136),  # groups of 68 channels: blocks 64 + 4 in each group
    (4, False, True, False, False, True, 4, 8),
]


@needs_compiler
@pytest.mark.parametrize("length", [1, 7, 63, 77])
@pytest.mark.parametrize("config", CONFIGS)
def test_native_matches_loop(native, length, config):
    groups, with_D, with_z, with_bias, softplus, last, d_state, dim = config
    inputs = make_inputs(dim=dim, d_state=d_state, length=length, groups=groups, with_D=with_D, with_z=with_z,
                         with_bias=with_bias, positive_delta=not softplus)
    expected = run(selective_scan_ref, inputs, softplus, last)
    compare(run(native, inputs, softplus, last), expected)
    compare(run(selective_scan, inputs, softplus, last, backend="native"), expected)


@needs_compiler
@pytest.mark.parametrize("chunk_steps", [1, 3, 16])
@pytest.mark.parametrize("length", [7, 77])
def test_native_time_chunks_match_loop(native, monkeypatch, chunk_steps, length):
    """The backward recomputes states chunk by chunk from the forward's chunk-end states: every
    chunk boundary and a last partial chunk give the loop's numbers."""
    monkeypatch.setattr(native_cpu, "CHUNK_FLOATS", chunk_steps * 2 * 16 * 64)
    assert native_cpu.chunk_steps(1000, 16) == chunk_steps
    inputs = make_inputs(dim=72, d_state=16, length=length, groups=0)
    compare(run(native, inputs, True, True), run(selective_scan_ref, inputs, True, True))


@needs_compiler
def test_native_reads_strided_model_layout(native):
    """The model's layout: u, delta, z are [B, D, L] views of [B, L, *] memory (z a column slice),
    B and C transposed column slices of one projection; no input is contiguous."""
    g = torch.Generator().manual_seed(3)
    batch, length, dim, n = 3, 29, 72, 16
    xz = torch.randn(batch, length, 2 * dim, generator=g)
    proj = torch.randn(batch, length, 5 + 2 * n, generator=g)
    inputs = {"u": xz[..., :dim].transpose(1, 2), "z": xz[..., dim:].transpose(1, 2),
              "delta": (0.5 * torch.randn(batch, length, dim, generator=g)).transpose(1, 2),
              "A": -torch.exp(0.5 * torch.randn(dim, n, generator=g)),
              "B": proj[..., 5:5 + n].transpose(1, 2), "C": proj[..., 5 + n:].transpose(1, 2),
              "D": torch.randn(dim, generator=g), "delta_bias": 0.5 * torch.randn(dim, generator=g)}
    assert not any(t.is_contiguous() for k, t in inputs.items() if k in ("u", "z", "delta", "B", "C"))
    inputs = {k: v.requires_grad_() for k, v in inputs.items()}
    compare(run(native, inputs, True, True), run(selective_scan_ref, inputs, True, True))


@needs_compiler
def test_native_underflowing_decay_matches_loop(native):
    """Steps with exp(delta A) below float32's normal range (floored at exp(-87)) give the loop's numbers."""
    inputs = make_inputs(length=63, positive_delta=True, with_bias=False)
    with torch.no_grad():
        inputs["delta"].mul_(60.0)  # delta A reaches about -300
    compare(run(native, inputs, False, True), run(selective_scan_ref, inputs, False, True))


@needs_compiler
def test_native_softplus_extremes(native):
    """softplus on very negative (tiny step) and above-threshold (identity) inputs, as PyTorch's."""
    inputs = make_inputs(length=40)
    with torch.no_grad():
        inputs["delta"][:, :3].mul_(80.0)  # +-40: both softplus branches and tiny steps
    compare(run(native, inputs, True, True), run(selective_scan_ref, inputs, True, True))


@needs_compiler
def test_native_partial_gradients_and_last_state_only(native):
    inputs = make_inputs(length=21)
    ref_out, ref_last = selective_scan_ref(**{k: v.detach() if v is not None else None for k, v in inputs.items()},
                                           delta_softplus=True, return_last_state=True)
    u = inputs["u"].detach().clone().requires_grad_()
    rest = {k: v.detach() for k, v in inputs.items() if k != "u"}
    out, last = native(u, **rest, delta_softplus=True, return_last_state=True)
    last.sum().backward()  # no gradient reaches ``out``: the backward gets grad_out None
    u_ref = inputs["u"].detach().clone().requires_grad_()
    selective_scan_ref(u_ref, **rest, delta_softplus=True, return_last_state=True)[1].sum().backward()
    compare((out.detach(), last.detach(), {"u": u.grad}), (ref_out, ref_last, {"u": u_ref.grad}))
    with torch.no_grad():  # no gradient at all: no chunk states kept
        out2 = native(**{k: v.detach() for k, v in inputs.items()}, delta_softplus=True)
    assert torch.equal(out2, out.detach())


@needs_compiler
@pytest.mark.parametrize("where", ["u", "A"])
def test_native_propagates_nan_like_the_loop(native, where):
    inputs = {k: (v.detach().clone() if v is not None else None) for k, v in make_inputs(length=20).items()}
    if where == "u":
        inputs["u"][1, 3, 7] = float("nan")
    else:
        inputs["A"][5, 2] = float("nan")
    expected = selective_scan_ref(**inputs, delta_softplus=True)
    actual = native(**inputs, delta_softplus=True)
    assert torch.isnan(expected).any()
    assert torch.equal(torch.isnan(actual), torch.isnan(expected))


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_native_other_dtypes(native, dtype):
    """Other dtypes run the same float32 computation; out and gradients come back in each input's
    dtype. Half precision: mamba_ssm's rule (error <= 2x the reference's own error + atol)."""
    inputs = make_inputs(length=33, dtype=dtype)
    actual = run(native, inputs, True, True)
    assert actual[0].dtype == dtype and actual[2]["u"].dtype == dtype and actual[2]["A"].dtype == torch.float32
    if dtype == torch.float64:  # computed in float32 like every CPU path: float32 tolerances
        as32 = lambda r: (r[0].float(), r[1], {k: v.float() for k, v in r[2].items()})  # noqa: E731
        compare(as32(actual), as32(run(selective_scan_ref, inputs, True, True)))
    else:
        expected = run(selective_scan_ref, {k: (v.detach().float() if v is not None else None)
                                            for k, v in inputs.items()}, True, True)
        compare(actual, expected, dtype, run(selective_scan_ref, inputs, True, True))


@needs_compiler
def test_auto_dispatch_on_cpu_is_native_without_warning(native, monkeypatch):
    calls = []
    real = scan_pkg.selective_scan_native
    monkeypatch.setattr(scan_pkg, "selective_scan_native", lambda *a: calls.append(1) or real(*a))
    inputs = make_inputs(length=9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        actual = run(selective_scan, inputs, True, True)
    assert calls == [1] and scan_path("cpu") == "native"
    compare(actual, run(selective_scan_ref, inputs, True, True))
    with force_backend("native"):
        assert scan_path("cpu") == "native"
    monkeypatch.setenv(backend_mod.ENV_VAR, "native")
    assert scan_path("cpu") == "native"
    monkeypatch.setenv(backend_mod.ENV_VAR, "vectorized")
    assert scan_path("cpu") == "vectorized" and scan_path("cpu", "native") == "native"


def test_switch_off_runs_vectorized(fresh_native, monkeypatch):
    monkeypatch.setenv(native_cpu.ENV_SWITCH, "0")
    monkeypatch.setattr(scan_pkg, "selective_scan_native", lambda *a: pytest.fail("native path ran"))
    monkeypatch.setattr(native_cpu, "_build", lambda: pytest.fail("switched off, yet the library was built"))
    inputs = make_inputs(length=12)
    with pytest.warns(RuntimeWarning, match="vectorised PyTorch path"):
        actual = run(selective_scan, inputs, True, True)
    compare(actual, run(selective_scan_ref, inputs, True, True))
    assert scan_path("cpu") == "vectorized"
    with pytest.warns(RuntimeWarning, match="SOSM_NATIVE_CPU=0"):
        assert scan_path("cpu", "native") == "vectorized"


def _assert_falls_back_once(match):
    inputs = make_inputs(length=15, groups=2)
    with pytest.warns(RuntimeWarning, match=match) as record:
        actual = run(selective_scan, inputs, True, True)
    assert len([w for w in record if issubclass(w.category, RuntimeWarning)]) == 1
    compare(actual, run(selective_scan_ref, inputs, True, True))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second call is silent
        compare(run(selective_scan, inputs, True, True), run(selective_scan_ref, inputs, True, True))
    assert scan_path("cpu") == "vectorized"


def test_missing_compiler_warns_once_and_falls_back(fresh_native, monkeypatch, tmp_path):
    monkeypatch.setenv("SOSM_CACHE_DIR", str(tmp_path))  # no library built earlier is found
    monkeypatch.setattr(native_cpu, "find_compiler", lambda: None)
    _assert_falls_back_once("no C compiler")
    ok, reason = native_cpu.status()
    assert not ok and "no C compiler" in reason
    with pytest.raises(RuntimeError, match="unavailable"):
        native_cpu.selective_scan_native(**make_inputs(length=3))


@pytest.mark.skipif(os.name != "posix", reason="fake compiler is a shell script")
def test_failing_build_warns_once_and_falls_back(fresh_native, monkeypatch, tmp_path):
    fake = tmp_path / "broken-cc"
    fake.write_text("#!/bin/sh\necho 'broken-cc: internal error' >&2\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("CC", str(fake))
    monkeypatch.setenv("SOSM_CACHE_DIR", str(tmp_path / "cache"))
    _assert_falls_back_once("build failed")
    assert "internal error" in native_cpu.status()[1]
    assert not any(p.suffix == ".so" for p in (tmp_path / "cache").rglob("*"))  # no partial library left


@needs_compiler
def test_portable_build_matches_loop(fresh_native, monkeypatch, tmp_path):
    """The library built without -march=native (the generic vector code, no AVX-512 intrinsics)
    gives the loop's numbers too."""
    monkeypatch.setenv("SOSM_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(native_cpu, "flag_attempts", lambda: [native_cpu.BASE_FLAGS])
    ok, reason = native_cpu.status()
    assert ok and "-march=native" not in reason, reason
    for length, config in ((77, CONFIGS[0]), (7, CONFIGS[3]), (63, CONFIGS[1])):
        groups, with_D, with_z, with_bias, softplus, last, d_state, dim = config
        inputs = make_inputs(dim=dim, d_state=d_state, length=length, groups=groups, with_D=with_D,
                             with_z=with_z, with_bias=with_bias, positive_delta=not softplus)
        compare(run(native_cpu.selective_scan_native, inputs, softplus, last),
                run(selective_scan_ref, inputs, softplus, last))


@needs_compiler
def test_concurrent_builds_replace_atomically(tmp_path, monkeypatch):
    """Builders racing on one target each compile to their own temporary file and os.replace it:
    the target is a complete library and no temporary file is left."""
    monkeypatch.setenv("SOSM_CACHE_DIR", str(tmp_path))
    cc = native_cpu.find_compiler()
    flags = ("-O1", "-fPIC", "-shared")
    target = native_cpu._library_path(cc, flags)
    assert target.parent == tmp_path / "kernels"
    errors = []

    def build():
        try:
            native_cpu._compile(cc, flags, target)
        except Exception as err:  # noqa: BLE001  (reported below)
            errors.append(err)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert [p.name for p in target.parent.iterdir()] == [target.name]
    lib = native_cpu._bind(__import__("ctypes").CDLL(str(target)))
    assert lib.sosm_scan_abi() == native_cpu.ABI
    assert native_cpu._library_path(cc, flags + ("-g",)) != target  # flags are part of the key
