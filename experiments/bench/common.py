"""Shared helpers for every benchmark in ``experiments/bench/``: timing and the JSON record.

Each benchmark times ours beside its anchors in the same process and writes one JSON file
``experiments/bench/results/<name>.json`` with the device, library versions, shapes, the
figures and their ratios (STYLE.md, "In this project" 9).

Timing: ``median_time(fn, repeats=3, warmup=1)`` runs ``fn`` ``warmup`` times untimed, then
``repeats`` times, synchronising CUDA around each call when the tensors live there, and
returns the median and every sample (seconds); ``interleaved_times(jobs, repeats)`` does the
same for several jobs taken in turn within each repeat (ours beside its anchors). Peak memory of a call in a fresh process:
``peak_rss_subprocess(code)`` (``resource.getrusage`` max RSS, which sees torch's allocations;
``tracemalloc`` only sees Python objects).

Example:
    >>> from experiments.bench.common import median_time, write_result
    >>> t = median_time(lambda: sum(range(1000)), repeats=3)
    >>> t["median_s"] > 0
    True
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

from sosm.common.files import atomic_write

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _sync() -> None:
    try:
        import torch
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    except ImportError:
        pass


def median_time(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> dict:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` untimed runs.

    Returns ``{"median_s", "samples_s", "median_cpu_s", "cpu_samples_s", "repeats", "warmup"}``;
    the CPU figures are this process's CPU time (``time.process_time``), which other users of a
    shared machine disturb less than wall time.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    for _ in range(warmup):
        fn()
    _sync()
    samples, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        _sync()
        samples.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"median_s": statistics.median(samples), "samples_s": samples, "median_cpu_s": statistics.median(cpu),
            "cpu_samples_s": cpu, "repeats": repeats, "warmup": warmup}


def interleaved_times(jobs: dict, repeats: int, warmup: int = 0,
                      report: Optional[Callable[[str, float, float], None]] = None) -> tuple[dict, dict]:
    """Time every job of ``jobs`` (name -> no-argument callable) once per repeat, in turn.

    Interleaving puts the drift of a shared machine's load on every job alike, so ratios between
    jobs stay fair. ``warmup`` untimed rounds come first; ``report(name, wall_s, cpu_s)``, when
    given, is called after each timed call (progress lines).

    Returns:
        ``(times, last)``: ``times[name]`` is ``{"median_s", "samples_s", "median_cpu_s",
        "cpu_samples_s"}`` (wall and this process's CPU time, as :func:`median_time`), ``last[name]``
        the job's return value in the last repeat.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    for _ in range(warmup):
        for fn in jobs.values():
            fn()
    _sync()
    wall = {name: [] for name in jobs}
    cpu = {name: [] for name in jobs}
    last = {}
    for _ in range(repeats):
        for name, fn in jobs.items():
            t0, c0 = time.perf_counter(), time.process_time()
            last[name] = fn()
            _sync()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
            if report is not None:
                report(name, wall[name][-1], cpu[name][-1])
    times = {name: {"median_s": statistics.median(wall[name]), "samples_s": wall[name],
                    "median_cpu_s": statistics.median(cpu[name]), "cpu_samples_s": cpu[name]} for name in jobs}
    return times, last


def environment() -> dict:
    """Device, CPU/thread count and versions of the libraries a benchmark may use."""
    env = {"python": platform.python_version(), "platform": platform.platform(),
           "cpu_count": os.cpu_count(), "hostname_kind": platform.machine()}
    try:
        import torch
        env["torch"] = torch.__version__
        env["torch_threads"] = torch.get_num_threads()
        env["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except ImportError:
        env["device"] = "cpu"
    for name in ("faiss", "triton", "numpy", "scipy", "networkx", "torch_geometric"):
        try:
            env[name] = __import__(name).__version__
        except (ImportError, AttributeError):
            env[name] = None
    return env


def peak_rss_subprocess(code: str, timeout: Optional[float] = None) -> dict:
    """Run ``code`` in a fresh Python and report its peak resident memory.

    The child reports its own high-water mark after ``code`` ran: ``VmHWM`` of ``/proc/self/status``
    on Linux (``ru_maxrss`` elsewhere, which on Linux a child inherits from the process that forked
    it, however small the child); this counts torch's allocator, unlike ``tracemalloc``. To get the
    memory of one call, subtract a baseline run of the same imports and inputs.
    Returns ``{"peak_rss_mib", "seconds"}`` (seconds include interpreter start-up).
    """
    wrapper = (
        "import resource, sys, time\n"
        f"exec(compile({code!r}, '<bench>', 'exec'))\n"
        "try:\n"
        "    peak = [ln.split()[1] for ln in open('/proc/self/status') if ln.startswith('VmHWM')][0]\n"
        "except OSError:\n"
        "    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print('PEAK_RSS_KIB', peak)\n"
    )
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True, timeout=timeout,
                         check=True)
    seconds = time.perf_counter() - t0
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("PEAK_RSS_KIB")][-1]
    return {"peak_rss_mib": int(line.split()[1]) / 1024.0, "seconds": seconds}


def write_result(name: str, record: dict, out=None) -> Path:
    """Write ``record`` plus :func:`environment` to ``out`` (default ``results/<name>.json``) atomically."""
    path = Path(out) if out is not None else RESULTS_DIR / f"{name}.json"
    payload = {"benchmark": name, "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "environment": environment(), **record}
    return atomic_write(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")
