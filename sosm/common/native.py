"""Compile-on-first-use of a C source into a shared library, cached on disk and loaded with ctypes.

Shared by the native CPU paths (``sosm.kernels.selective_scan.native_cpu``,
``sosm.graph.native_landmarks``). Part of the leaf package :mod:`sosm.common`: standard library
only, so both rooms import it without importing each other (docs/ARCHITECTURE.md, "Layers").

Build: the system C compiler (``$CC``, else ``cc``, ``gcc`` or ``clang``) into
``$SOSM_CACHE_DIR/kernels`` (default ``~/.cache/sosm/kernels``), named
``<source stem>-<hash>.so`` where the hash covers the source bytes, the compiler's path and
``--version``, the flags, the machine and (with ``-march=native``) the CPU's flags. Each process
compiles to a temporary name in the same folder and ``os.replace``-s it into place, so
processes that build at once are safe. ``SOSM_NATIVE_CPU=0`` switches every native path off.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Callable, Iterable, Optional

from .files import atomic_path

ENV_SWITCH = "SOSM_NATIVE_CPU"


def enabled() -> bool:
    """False when ``SOSM_NATIVE_CPU`` is ``0``/``false``/``off``/``no`` (read at every call)."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "off", "no")


def find_compiler() -> Optional[str]:
    """Path of the C compiler: ``$CC`` if set (and found), else ``cc``, ``gcc`` or ``clang``."""
    names = [os.environ["CC"]] if os.environ.get("CC") else ["cc", "gcc", "clang"]
    for name in names:
        path = shutil.which(name.split()[0])
        if path:
            return path
    return None


def cache_dir() -> Path:
    """``$SOSM_CACHE_DIR/kernels``, default ``~/.cache/sosm/kernels``."""
    root = os.environ.get("SOSM_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "sosm")
    return Path(root) / "kernels"


def cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def compiler_id(cc: str) -> str:
    try:
        res = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
        return res.stdout.strip()
    except (OSError, subprocess.SubprocessError) as err:
        return f"{cc} ({type(err).__name__})"


def library_path(source: Path, cc: str, flags: tuple[str, ...]) -> Path:
    """Cache path of ``source`` built by ``cc`` with ``flags`` (the key: see the module docstring)."""
    key = hashlib.sha256()
    for part in (source.read_bytes(), cc.encode(), compiler_id(cc).encode(), " ".join(flags).encode(),
                 platform.machine().encode(), (cpu_flags() if "-march=native" in flags else "").encode()):
        key.update(part)
        key.update(b"\0")
    return cache_dir() / f"{source.stem}-{key.hexdigest()[:20]}.so"


def compile_library(source: Path, cc: str, flags: tuple[str, ...], target: Path) -> None:
    """Compile ``source`` into ``target`` atomically (the compiler writes a temporary file beside it)."""
    with atomic_path(target, suffix=".tmp.so") as tmp:
        res = subprocess.run([cc, *flags, "-o", str(tmp), str(source)], capture_output=True, text=True, timeout=300)
        if res.returncode != 0:
            raise RuntimeError(f"{Path(cc).name} exited with {res.returncode}: {res.stderr.strip()[-500:]}")


def build(source: Path, flag_attempts: Iterable[tuple[str, ...]], bind: Callable[[ctypes.CDLL], ctypes.CDLL],
          cc: Optional[str], base_flags: tuple[str, ...] = ()) -> tuple[Optional[ctypes.CDLL], str]:
    """``(library, detail)`` or ``(None, why)``: the first flag set that compiles (or is cached) and binds.

    ``bind`` declares the entry points and checks the ABI, raising ``RuntimeError`` on a mismatch.
    """
    if cc is None:
        return None, "no C compiler found (set CC, or install cc/gcc/clang)"
    if not source.is_file():
        return None, f"source {source} missing from the installation"
    errors = []
    for flags in flag_attempts:
        try:
            target = library_path(source, cc, flags)
            if not target.is_file():
                compile_library(source, cc, flags, target)
            lib = bind(ctypes.CDLL(str(target)))
            return lib, f"{target} ({Path(cc).name} {' '.join(flags)})"
        except (OSError, RuntimeError, subprocess.SubprocessError, AttributeError) as err:
            errors.append(f"{' '.join(flags[len(base_flags):]) or 'base flags'}: {type(err).__name__}: {err}")
    return None, "build failed: " + " | ".join(errors)


class LazyLibrary:
    """One native library per process, built and loaded on the first :meth:`status` call (thread-safe).

    Args:
        build: no-argument callable returning ``(library or None, detail)``, e.g. a module's
            ``lambda: _build()`` (a lambda, so tests can monkeypatch the module's ``_build``).
        name: what the library provides, for the error of :meth:`lib`.

    ``warned`` is for the caller's one-per-process fallback warning; :meth:`reset` clears it too.
    """

    def __init__(self, build: Callable[[], tuple[Optional[ctypes.CDLL], str]], name: str):
        self._build, self.name = build, name
        self._lock = threading.Lock()
        self._lib: Optional[ctypes.CDLL] = None
        self._reason: Optional[str] = None
        self.warned = False

    def status(self) -> tuple[bool, str]:
        """(available, detail): builds and loads the library on the first call."""
        with self._lock:
            if self._reason is None:
                self._lib, self._reason = self._build()
        return self._lib is not None, self._reason

    def lib(self) -> ctypes.CDLL:
        """The loaded library; ``RuntimeError`` saying why when it could not be built or loaded."""
        ok, reason = self.status()
        if not ok:
            raise RuntimeError(f"{self.name} unavailable: {reason}")
        return self._lib

    def reset(self) -> None:
        """Forget the loaded library and the warning flag (tests)."""
        with self._lock:
            self._lib, self._reason, self.warned = None, None, False
