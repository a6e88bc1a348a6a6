"""Native CPU landmark BFS: ``landmarks_cpu.c`` (package data) compiled on first use, loaded with ctypes.

:func:`landmark_bfs_native` returns exactly the torch path's distances (``int16 [N, L]``) for
CPU edge lists; ``sosm.graph.landmarks.landmark_distances`` calls it on CPU tensors when
:func:`status` is ok and ``SOSM_NATIVE_CPU`` is not ``0``, else runs its torch BFS (one warning
when the library cannot be built). Compilation, caching and loading are the shared
``sosm.common.native`` helper's (same cache folder and rules as the native selective scan).
"""
from __future__ import annotations

import ctypes
from pathlib import Path

import torch

from ..common import native as _native  # the leaf's compile-on-first-use helper (shared with sosm.kernels)

SOURCE = Path(__file__).with_name("landmarks_cpu.c")
ABI = 1
BASE_FLAGS = ("-O3", "-fPIC", "-shared")

enabled = _native.enabled
find_compiler = _native.find_compiler


def flag_attempts() -> list[tuple[str, ...]]:
    return [BASE_FLAGS + ("-march=native",), BASE_FLAGS]


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    lib.sosm_landmarks_abi.restype = ctypes.c_int
    lib.sosm_landmarks_abi.argtypes = []
    if lib.sosm_landmarks_abi() != ABI:
        raise RuntimeError(f"library has ABI {lib.sosm_landmarks_abi()}, expected {ABI}")
    lib.sosm_landmark_bfs.restype = ctypes.c_int
    lib.sosm_landmark_bfs.argtypes = [i64, ptr, ptr, i64, i64, i64, ctypes.c_int, i64, ptr, i64, ptr]
    return lib


def _build():
    return _native.build(SOURCE, flag_attempts(), _bind, find_compiler(), BASE_FLAGS)


library = _native.LazyLibrary(lambda: _build(), "native CPU landmark BFS")
status = library.status  # (available, detail): builds and loads the library on the first call
_reset = library.reset  # forget the loaded library and the fallback warning (tests)


def landmark_bfs_native(edge_index: torch.Tensor, batch_size: int, seq_len: int, landmarks: torch.Tensor,
                        max_distance: int, causal: bool) -> torch.Tensor:
    """``int16 [B*T, L]`` hop distances (arguments already validated by ``landmark_distances``)."""
    lib = library.lib()
    n = batch_size * seq_len
    if n >= 2 ** 31 - 1:
        raise ValueError("native landmark BFS takes fewer than 2**31 - 1 nodes")
    marks = landmarks.contiguous()
    L = marks.shape[1]
    dist = torch.empty(n, L, dtype=torch.int16)
    E = edge_index.shape[1]  # any strides: row 1 starts stride(0) elements after row 0
    stride = edge_index.stride(1) if E else 1
    src = edge_index.data_ptr()
    dst = src + edge_index.stride(0) * edge_index.element_size()
    rc = lib.sosm_landmark_bfs(E, src, dst, stride, batch_size, seq_len, int(bool(causal)), L,
                               marks.data_ptr(), min(max_distance, 2 ** 62), dist.data_ptr())
    if rc == 1:
        raise MemoryError("landmark_distances (native CPU): could not allocate the BFS buffers")
    if rc != 0:
        raise RuntimeError(f"landmark_distances (native CPU) failed with code {rc}")
    return dist
