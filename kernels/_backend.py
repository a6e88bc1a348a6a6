"""Backend choice shared by every kernel in ``sosm.kernels``: detected once, forced for tests.

A kernel's dispatching function calls :func:`resolve` with its op name, the device of its
inputs and its ``backend=`` argument. The answer is one of ``BACKENDS``:

- ``"triton"``: the Triton kernel (CUDA tensors; or CPU tensors when ``TRITON_INTERPRET=1``
  and the path is forced, which is how the CPU test suite runs the kernels);
- ``"native"``: the op's compiled C path for CPU tensors, where it has one (``selective_scan``,
  which also picks it under ``"auto"`` on CPU; see its ``native_cpu`` module); an op without
  one treats ``"native"`` as ``"auto"``;
- ``"vectorized"``: the op's vectorised PyTorch path (the CPU default);
- ``"reference"``: the op's plain PyTorch reference (the test oracle; slow, dense).

``"auto"`` picks Triton on CUDA when Triton imports, else the vectorised path, warning once
per (op, reason); an op with a native CPU path intercepts ``"auto"``/``"native"`` on CPU
tensors before calling :func:`resolve`. A path can be forced, in order of precedence, by the function's own
``backend=`` argument, by :func:`force_backend` (a context manager), or by the environment
variable ``SOSM_KERNEL_BACKEND`` (read at every call, so tests may monkeypatch it).

Example:
    >>> from sosm.kernels._backend import force_backend
    >>> with force_backend("reference"):
    ...     pass  # every kernel call in here runs its PyTorch reference
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import warnings

BACKENDS = ("auto", "triton", "native", "vectorized", "reference")
ENV_VAR = "SOSM_KERNEL_BACKEND"

_forced: contextvars.ContextVar[str | None] = contextvars.ContextVar("sosm_kernel_backend",
                                                                     default=None)
_warned: set[tuple[str, str]] = set()


def _check(name: str, where: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"{where} must be one of {BACKENDS}, got {name!r}")
    return name


@functools.lru_cache(maxsize=1)
def triton_status() -> tuple[bool, str]:
    """(available, reason): whether ``import triton`` works; detected once per process."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception as err:  # ImportError, or a broken install raising anything else
        return False, f"triton unavailable ({type(err).__name__}: {err})"
    return True, f"triton {triton.__version__}"


def interpreter_enabled() -> bool:
    """True when Triton runs kernels on the CPU through its interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def warn_once(op: str, key: str, message: str) -> None:
    """Emit ``message`` as a RuntimeWarning the first time (op, key) is seen in this process."""
    if (op, key) not in _warned:
        _warned.add((op, key))
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def forced_backend() -> str:
    """The backend forced by :func:`force_backend` or ``SOSM_KERNEL_BACKEND``, else ``"auto"``."""
    name = _forced.get()
    if name is not None:
        return name
    return _check(os.environ.get(ENV_VAR, "auto") or "auto", f"environment variable {ENV_VAR}")


@contextlib.contextmanager
def force_backend(name: str):
    """Run every kernel call inside the ``with`` block on backend ``name`` (one of BACKENDS)."""
    token = _forced.set(_check(name, "force_backend(name)"))
    try:
        yield
    finally:
        _forced.reset(token)


def resolve(op: str, device, backend: str = "auto") -> str:
    """The concrete backend (``"triton"``, ``"vectorized"`` or ``"reference"``) for one call.

    Args:
        op: the kernel's name, used in warnings and errors.
        device: the inputs' ``torch.device`` (or its type string).
        backend: the caller's ``backend=`` argument; ``"auto"`` defers to the forced one.

    Raises:
        ValueError: ``backend`` not in BACKENDS.
        RuntimeError: ``"triton"`` forced where it cannot run (no Triton, or CPU tensors
            without ``TRITON_INTERPRET=1``).
    """
    name = _check(backend, "backend")
    if name == "auto":
        name = forced_backend()
    if name == "native":  # ops with a native CPU path handle it before calling resolve
        name = "auto"
    device_type = getattr(device, "type", device)
    available, reason = triton_status()
    if name == "triton":
        if not available:
            raise RuntimeError(f"{op}: backend 'triton' forced but {reason}")
        if device_type != "cuda" and not interpreter_enabled():
            raise RuntimeError(f"{op}: backend 'triton' forced on {device_type} tensors; "
                               "set TRITON_INTERPRET=1 before importing triton to use the "
                               "interpreter, or move the tensors to CUDA")
        return name
    if name != "auto":
        return name
    if device_type == "cuda" and available:
        return "triton"
    if device_type == "cuda":
        warn_once(op, "no-triton", f"{op}: {reason}; CUDA tensors use the vectorised PyTorch "
                                   "path (slow)")
    else:
        warn_once(op, f"device-{device_type}", f"{op}: {device_type} tensors use the vectorised "
                                               "PyTorch path (no Triton kernel off CUDA)")
    return "vectorized"
