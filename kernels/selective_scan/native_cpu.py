"""Native CPU selective scan: a C loop compiled on first use, loaded with ctypes.

:func:`selective_scan_native` has :func:`~.reference.selective_scan_ref`'s signature and
numbers (float32 state and accumulation whatever the inputs' dtype; the output and the
gradients cast back to each input's dtype) and is what ``selective_scan`` runs on CPU tensors
by default. The C source, ``selective_scan_cpu.c`` beside this file (shipped as package data),
runs per batch item and block of 64 channels a plain sequential loop over time whose state
``[N, 64]`` stays in L1 and whose inner loops run along contiguous channels, so the compiler
vectorises them (``exp``/``log`` are branch-free polynomials for that reason; on AVX-512 builds
the recurrence step uses intrinsics). The forward keeps the state at the end of every chunk of
:func:`chunk_steps` steps and, per (batch, step, channel), delta, softplus' derivative and
sigmoid(z); the backward recomputes one chunk's decays and states from the previous chunk's end
state into a cache-sized buffer (the same operations in the same order, so the same numbers)
and walks it back in time, accumulating every gradient (u, delta, A, B, C, D, z, delta_bias) in
float32. The exponent of each decay is floored at -87 as in the vectorised path (below it
exp() lands on subnormals). Inputs are read in the model's ``[B, L, D]`` memory (``u``,
``delta``, ``z`` are ``[B, D, L]`` transposed views of it) without copies. B12 D256 N16 L64
(the CPU benchmark's Mamba layer), one thread: fwd+bwd about 4x less CPU time than the
vectorised PyTorch path (``experiments/bench/bench_cpu_train_step.py``).

Build: the system C compiler (``$CC``, else ``cc``, ``gcc`` or ``clang``) with ``-O3
-fopenmp-simd`` (no OpenMP runtime) and ``-march=native`` (on x86 also 512-bit vectors) when
it compiles, into
``$SOSM_CACHE_DIR/kernels`` (default ``~/.cache/sosm/kernels``), keyed by a hash of the
source, the compiler's identity, the flags and (with ``-march=native``) the CPU's flags.
Each process compiles to a temporary name and ``os.replace``-s it into place, so processes
that build at once are safe. With no compiler, a failed build or an unloadable library,
``status()`` says why and ``selective_scan`` warns once and runs the vectorised PyTorch path.
``SOSM_NATIVE_CPU=0`` switches the native path off (read at every call);
``backend="native"`` (or ``force_backend("native")``) asks for it explicitly.

Example:
    >>> from sosm.kernels.selective_scan import native_cpu
    >>> ok, reason = native_cpu.status()  # compiles on the first call (about a second)
    >>> u = torch.randn(2, 8, 33); A = -torch.rand(8, 4)
    >>> out = native_cpu.selective_scan_native(u, torch.randn(2, 8, 33), A, torch.randn(2, 4, 33),
    ...                                        torch.randn(2, 4, 33), delta_softplus=True)
"""
from __future__ import annotations

import ctypes
import platform
from pathlib import Path

import torch

from ...common import native as _native  # the leaf's compile/cache/load helper (shared with sosm.graph)
from .reference import check_scan_args

SOURCE = Path(__file__).with_name("selective_scan_cpu.c")
ABI = 3
ENV_SWITCH = _native.ENV_SWITCH
BASE_FLAGS = ("-O3", "-fPIC", "-shared", "-ffp-contract=fast", "-fno-trapping-math", "-fopenmp-simd")
CHUNK_FLOATS = 1 << 15  # backward chunk buffers (states + decays, [steps, N, 64] each): 128 KiB in all
# (B12 D256 N16 L64: 16 steps per chunk gave C bwd 2.43 ms vs 2.57 at 64 and 2.72 at 8, same process)

enabled = _native.enabled
find_compiler = _native.find_compiler
cache_dir = _native.cache_dir


def _library_path(cc: str, flags: tuple[str, ...]) -> Path:
    return _native.library_path(SOURCE, cc, flags)


def _compile(cc: str, flags: tuple[str, ...], target: Path) -> None:
    """Compile SOURCE into ``target`` atomically (temp file in the same folder, then os.replace)."""
    _native.compile_library(SOURCE, cc, flags, target)


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    i64, ptr, c_int = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
    strided = [ptr, i64, i64]
    lib.sosm_scan_abi.restype = c_int
    lib.sosm_scan_abi.argtypes = []
    lib.sosm_scan_block.restype = c_int
    lib.sosm_scan_block.argtypes = []
    dims = [i64] * 6  # batch, length, dim, d_state, groups, chunk steps
    lib.sosm_scan_fwd_f32.restype = c_int
    lib.sosm_scan_fwd_f32.argtypes = dims + strided * 3 + [ptr] * 5 + [c_int] + [ptr] * 6
    lib.sosm_scan_bwd_f32.restype = c_int
    lib.sosm_scan_bwd_f32.argtypes = dims + strided * 2 + [ptr] * 8 + strided + [ptr] + [ptr] * 8
    conv = [i64] * 4 + strided + [ptr, ptr, c_int]  # batch, length, dim, width; x; taps, bias, act
    lib.sosm_conv_fwd_f32.restype = c_int
    lib.sosm_conv_fwd_f32.argtypes = conv + [ptr]
    lib.sosm_conv_bwd_f32.restype = c_int
    lib.sosm_conv_bwd_f32.argtypes = conv + [ptr] * 4
    return lib


def flag_attempts() -> list[tuple[str, ...]]:
    """Compiler flags to try in order: tuned for this CPU first, then portable."""
    attempts = [BASE_FLAGS + ("-march=native",), BASE_FLAGS]
    if platform.machine().lower() in ("x86_64", "amd64"):  # AVX-512 machines: 16-wide loops (B12 D256
        attempts.insert(0, attempts[0] + ("-mprefer-vector-width=512",))  # N16 L64 fwd 3.0 -> 2.1 ms)
    return attempts


def _checked_bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    lib = _bind(lib)
    if lib.sosm_scan_abi() != ABI:
        raise RuntimeError(f"library has ABI {lib.sosm_scan_abi()}, expected {ABI}")
    return lib


def _build() -> tuple[ctypes.CDLL | None, str]:
    return _native.build(SOURCE, flag_attempts(), _checked_bind, find_compiler(), BASE_FLAGS)


_library = _native.LazyLibrary(lambda: _build(), "native CPU selective scan")
status = _library.status  # (available, detail): builds and loads the library on the first call
_reset = _library.reset  # forget the loaded library (tests)
_lib = _library.lib


def chunk_steps(length: int, d_state: int, block: int = 64) -> int:
    """Time steps per backward chunk: the chunk's states and decays fill ``CHUNK_FLOATS``."""
    return max(1, min(length, CHUNK_FLOATS // (2 * d_state * block)))


def _p(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _channels_unit(x: torch.Tensor) -> torch.Tensor:
    """float32 ``[B, T, E]`` (detached) with unit stride along E and non-negative strides (a copy only if needed)."""
    x = x.detach()
    if x.dtype != torch.float32:
        x = x.float()
    if x.stride(2) != 1 or min(x.stride()) < 0:
        x = x.contiguous()
    return x


def _bld(t: torch.Tensor) -> torch.Tensor:
    """``[B, D, L]`` -> float32 ``[B, L, D]`` view with unit stride along D (a copy only if needed)."""
    return _channels_unit(t.transpose(1, 2))


class _NativeScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, need_grad):
        ctx.set_materialize_grads(False)
        nb, dim, L = u.shape
        N = A.shape[1]
        G = 1 if B.dim() == 3 else B.shape[1]
        u_, dt_ = _bld(u), _bld(delta)
        z_ = None if z is None else _bld(z)
        At = A.detach().float().t().contiguous()  # [N, D]
        Bm = B.detach().float().reshape(nb, G, N, L).permute(0, 3, 1, 2).contiguous()  # [B, L, G, N]
        Cm = C.detach().float().reshape(nb, G, N, L).permute(0, 3, 1, 2).contiguous()
        zeros = u_.new_zeros(dim)
        Dv = zeros if D is None else D.detach().float().contiguous()
        bias = zeros if delta_bias is None else delta_bias.detach().float().contiguous()
        tc = chunk_steps(L, N)
        out = u_.new_empty(nb, L, dim)
        last = u_.new_empty(nb, dim, N)
        ckpt = dl = sx = sz = None
        if need_grad:  # chunk-end states; delta, softplus' derivative and sigmoid(z) per (b, t, d)
            ckpt = u_.new_empty(nb, -(-L // tc), N, dim)
            dl = u_.new_empty(nb, L, dim)
            sx = u_.new_empty(nb, L, dim) if delta_softplus else None
            sz = None if z is None else u_.new_empty(nb, L, dim)
        rc = _lib().sosm_scan_fwd_f32(
            nb, L, dim, N, G, tc, _p(u_), u_.stride(0), u_.stride(1), _p(dt_), dt_.stride(0), dt_.stride(1),
            _p(z_), 0 if z_ is None else z_.stride(0), 0 if z_ is None else z_.stride(1),
            _p(At), _p(Bm), _p(Cm), _p(Dv), _p(bias), int(bool(delta_softplus)), _p(out), _p(last), _p(ckpt),
            _p(dl), _p(sx), _p(sz))
        if rc != 0:
            raise MemoryError("selective_scan (native CPU): could not allocate the scan's work buffer")
        if need_grad:
            ctx.save_for_backward(u_, z_, At, Bm, Cm, Dv, ckpt, dl, sx, sz)
            ctx.meta = (nb, L, dim, N, G, tc, bool(delta_softplus), B.shape, u.dtype, delta.dtype,
                        A.dtype, B.dtype, C.dtype, None if D is None else D.dtype,
                        None if z is None else z.dtype, None if delta_bias is None else delta_bias.dtype)
        return out.transpose(1, 2).to(u.dtype), last

    @staticmethod
    def backward(ctx, grad_out, grad_last):
        u_, z_, At, Bm, Cm, Dv, ckpt, dl, sx, sz = ctx.saved_tensors
        (nb, L, dim, N, G, tc, softplus, b_shape, u_dt, d_dt, a_dt, b_dt, c_dt, dd_dt, z_dt,
         bias_dt) = ctx.meta
        go = u_.new_zeros(nb, L, dim) if grad_out is None else _bld(grad_out)
        gl = None if grad_last is None else grad_last.detach().float().contiguous()
        gu, gdt = u_.new_empty(nb, L, dim), u_.new_empty(nb, L, dim)
        gz = None if z_ is None else u_.new_empty(nb, L, dim)
        gA = u_.new_empty(N, dim)
        gB, gC = torch.empty_like(Bm), torch.empty_like(Cm)
        gD, gbias = u_.new_empty(dim), u_.new_empty(dim)
        rc = _lib().sosm_scan_bwd_f32(
            nb, L, dim, N, G, tc, _p(u_), u_.stride(0), u_.stride(1),
            _p(z_), 0 if z_ is None else z_.stride(0), 0 if z_ is None else z_.stride(1),
            _p(At), _p(Bm), _p(Cm), _p(Dv), _p(ckpt), _p(dl), _p(sx), _p(sz),
            _p(go), go.stride(0), go.stride(1), _p(gl),
            _p(gu), _p(gdt), _p(gz), _p(gA), _p(gB), _p(gC), _p(gD), _p(gbias))
        if rc != 0:
            raise MemoryError("selective_scan (native CPU): could not allocate the backward's chunk buffers")

        def bc(g, dtype):  # [B, L, G, N] -> B's shape ([B, N, L] or [B, G, N, L])
            return g.permute(0, 2, 3, 1).reshape(b_shape).to(dtype)

        need = ctx.needs_input_grad
        return (gu.transpose(1, 2).to(u_dt) if need[0] else None,
                gdt.transpose(1, 2).to(d_dt) if need[1] else None,
                gA.t().to(a_dt) if need[2] else None,
                bc(gB, b_dt) if need[3] else None,
                bc(gC, c_dt) if need[4] else None,
                gD.to(dd_dt) if dd_dt is not None and need[5] else None,
                gz.transpose(1, 2).to(z_dt) if gz is not None and need[6] else None,
                gbias.to(bias_dt) if bias_dt is not None and need[7] else None,
                None, None)


def selective_scan_native(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          return_last_state=False):
    """Same signature and numbers as :func:`~.reference.selective_scan_ref` (to float32 rounding), CPU only.

    Raises:
        RuntimeError: the library could not be built or loaded (``status()`` says why); the
            entry point ``selective_scan`` checks first and falls back instead.
        ValueError: tensors not on the CPU, or a bad argument (see ``check_scan_args``).
    """
    check_scan_args(u, delta, A, B, C, D, z, delta_bias)
    if u.device.type != "cpu":
        raise ValueError(f"selective_scan_native runs on CPU tensors, got {u.device}")
    need_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (u, delta, A, B, C, D, z, delta_bias))
    out, last = _NativeScan.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, need_grad)
    return (out, last) if return_last_state else out


class _NativeConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, act):
        nb, T, E = x.shape
        K = weight.shape[1]
        x_ = _channels_unit(x)
        taps = weight.detach().float().t().contiguous()  # [K, E]
        b_ = x_.new_zeros(E) if bias is None else bias.detach().float().contiguous()
        out = x_.new_empty(nb, T, E)
        rc = _lib().sosm_conv_fwd_f32(nb, T, E, K, _p(x_), x_.stride(0), x_.stride(1), _p(taps), _p(b_), int(act),
                                      _p(out))
        if rc != 0:
            raise MemoryError("causal_conv1d (native CPU): could not allocate the forward's work buffer")
        ctx.save_for_backward(x_, taps, b_)
        ctx.meta = (act, x.dtype, weight.dtype, None if bias is None else bias.dtype)
        return out.to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        x_, taps, b_ = ctx.saved_tensors
        act, x_dt, w_dt, b_dt = ctx.meta
        nb, T, E = x_.shape
        K = taps.shape[0]
        gy = grad.detach().float().contiguous()
        gx, gw, gb = x_.new_empty(nb, T, E), torch.empty_like(taps), x_.new_empty(E)
        rc = _lib().sosm_conv_bwd_f32(nb, T, E, K, _p(x_), x_.stride(0), x_.stride(1), _p(taps), _p(b_), int(act),
                                      _p(gy), _p(gx), _p(gw), _p(gb))
        if rc != 0:
            raise MemoryError("causal_conv1d (native CPU): could not allocate the backward's work buffer")
        need = ctx.needs_input_grad
        return (gx.to(x_dt) if need[0] else None, gw.t().to(w_dt) if need[1] else None,
                gb.to(b_dt) if b_dt is not None and need[2] else None, None)


def causal_conv1d_native(x, weight, bias=None, activation=None):
    """:func:`~.causal_conv.causal_conv1d` on the native C loop (CPU): ``x [B, T, E]``, ``weight [E, K]``.

    Float32 inside (other dtypes are cast and the results cast back); SiLU fused when
    ``activation == "silu"``. Raises ``RuntimeError`` when the library is unavailable.
    """
    if x.device.type != "cpu":
        raise ValueError(f"causal_conv1d_native runs on CPU tensors, got {x.device}")
    return _NativeConv.apply(x, weight, bias, activation == "silu")
