"""Exact top-k on CPU: our streaming top-k beside faiss IndexFlatIP and plain torch blocked matmul+topk.

Inputs (same for all three): ``T`` unit vectors of width ``d`` (seeded Gaussian, normalised),
``K`` neighbours, non-causal, self excluded (``sosm.graph.streaming_topk(..., causal=False,
window=0)``; faiss and torch search ``K + 1`` and drop self).

Timing: all methods run in this one process, interleaved (repeat r runs ours, faiss, torch in
turn), each on ``--threads`` threads (default 1: on the shared 2-core machine one core is busy
with other work); we report the median wall and CPU time (``time.process_time``, less disturbed
by other users of the machine than wall time) and the ratios ours / anchor of both, plus the
load average before and after. Memory: each method once more in a fresh subprocess that
reports its peak-RSS increase over the inputs (``VmHWM`` after a peak reset, which sees torch's
allocator; ``ru_maxrss`` would carry the parent's peak across ``exec``).
Agreement of the neighbour sets with each anchor is recorded (faiss ranks in float32, so a
near-tie can differ from our exact order).

    python experiments/bench/bench_topk_cpu.py --length 4096 --repeats 7 --name topk_cpu_4096
    python experiments/bench/bench_topk_cpu.py --length 100000 --repeats 3 --warmup 0 --name topk_cpu_100k
    python experiments/bench/bench_topk_cpu.py --length 100000 --dim 64 --repeats 3 --warmup 0 --name topk_cpu_100k_d64
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from experiments.bench.common import interleaved_times, write_result  # noqa: E402
from sosm.common.files import atomic_write  # noqa: E402

ANCHORS_DOC = ("anchor figures, 2-core CPU, 2026-11-23: T=100k d=16 K=8 faiss 8.1 s, torch blocked 34.1 s; "
               "d=64 faiss 11.0 s, torch blocked 31.4 s; T=4096: faiss 0.060 s, torch blocked 0.051 s; "
               "bar: ours <= 1.5x faiss, memory O(T*K)")


def make_inputs(length: int, dim: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.nn.functional.normalize(torch.randn(length, dim, generator=gen), dim=-1).contiguous()


def run_ours(x: torch.Tensor, k: int, block: int) -> np.ndarray:
    from sosm.graph.topk import streaming_topk
    return streaming_topk(x[None], k, causal=False, window=0, tile=block)[0][0].numpy()


def run_faiss(x: torch.Tensor, k: int, threads: int) -> np.ndarray:
    import faiss
    faiss.omp_set_num_threads(threads)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x.numpy())
    _, idx = index.search(x.numpy(), k + 1)
    return _drop_self(torch.from_numpy(idx), k)


def run_torch_blocked(x: torch.Tensor, k: int) -> np.ndarray:
    length = x.shape[0]
    out = torch.empty(length, k + 1, dtype=torch.long)
    for q0 in range(0, length, 4096):
        q1 = min(length, q0 + 4096)
        out[q0:q1] = (x[q0:q1] @ x.T).topk(k + 1, dim=1).indices
    return _drop_self(out, k)


def _drop_self(idx: torch.Tensor, k: int) -> np.ndarray:
    """``[T, k+1]`` neighbour lists that may contain the query itself -> ``[T, k]`` without it."""
    length = idx.shape[0]
    self_hit = idx == torch.arange(length)[:, None]
    drop = torch.where(self_hit.any(1), self_hit.float().argmax(1), torch.full((length,), k))
    keep = torch.arange(k + 1)[None, :] != drop[:, None]
    return idx[keep].reshape(length, k).numpy()


CHILD = r"""
import json, sys
import torch
sys.path.insert(0, sys.argv[1])
from experiments.bench import bench_topk_cpu as b
length, dim, k, threads, block, method = (int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]),
                                          int(sys.argv[6]), sys.argv[7])
torch.set_num_threads(threads)
x = b.make_inputs(length, dim)
if method == "faiss":
    import faiss
if method == "ours":
    import sosm.graph.topk


def status(field):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field + ":"))


with open("/proc/self/clear_refs", "w") as fh:  # reset the peak (VmHWM) to the current RSS
    fh.write("5")
base = status("VmRSS")
b.METHODS[method](x, k, threads, block)
print(json.dumps({"peak_rss_increase_mib": (status("VmHWM") - base) / 1024.0}))
"""

METHODS = {
    "ours": lambda x, k, threads, block: run_ours(x, k, block),
    "faiss": lambda x, k, threads, block: run_faiss(x, k, threads),
    "torch_blocked": lambda x, k, threads, block: run_torch_blocked(x, k),
}


def peak_memory(method, length, dim, k, threads, block) -> dict:
    root = str(Path(__file__).resolve().parents[2])
    proc = subprocess.run([sys.executable, "-c", CHILD, root, str(length), str(dim), str(k), str(threads), str(block),
                           method], capture_output=True, text=True, check=True,
                          env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs of every method first")
    parser.add_argument("--tile", type=int, default=2048, help="streaming top-k tile (GraphConfig.topk_tile)")
    parser.add_argument("--methods", default="ours,faiss,torch_blocked")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-RSS subprocesses")
    parser.add_argument("--memory-only", action="store_true",
                        help="only the peak-RSS subprocesses, written into the existing results/<name>.json")
    parser.add_argument("--name", default=None, help="results/<name>.json (default topk_cpu_<T>[_d<d>])")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"--methods has unknown entries {unknown}; accepted: {sorted(METHODS)}")
    name = args.name or f"topk_cpu_{args.length}" + ("" if args.dim == 16 else f"_d{args.dim}")
    if args.memory_only:
        return add_memory(name, methods, args)
    x = make_inputs(args.length, args.dim)
    jobs = {method: (lambda m: lambda: METHODS[m](x, args.k, args.threads, args.tile))(method)
            for method in methods}
    load_before = os.getloadavg()
    times, found = interleaved_times(  # interleaved: every repeat runs every method once
        jobs, args.repeats, warmup=args.warmup,
        report=lambda method, wall, cpu: print(method, f"wall {wall:.3f} s cpu {cpu:.3f} s", flush=True))
    load_after = os.getloadavg()
    row = {"T": args.length, "d": args.dim, "K": args.k, "causal": False}
    for method in methods:
        row[method] = times[method]
        if not args.no_memory:
            row[method].update(peak_memory(method, args.length, args.dim, args.k, args.threads, args.tile))
    for anchor in ("faiss", "torch_blocked"):
        if "ours" in row and anchor in row:
            row[f"ratio_ours_over_{anchor}"] = row["ours"]["median_s"] / row[anchor]["median_s"]
            row[f"cpu_ratio_ours_over_{anchor}"] = row["ours"]["median_cpu_s"] / row[anchor]["median_cpu_s"]
            row[f"index_agreement_with_{anchor}"] = float(
                (np.sort(found["ours"], 1) == np.sort(found[anchor], 1)).mean())
    record = {"threads": args.threads, "tile": args.tile, "repeats": args.repeats, "warmup": args.warmup,
              "timing": "one process, interleaved repeats, median", "load_avg_before": load_before,
              "load_avg_after": load_after, "results": [row], "anchors_doc": ANCHORS_DOC,
              "memory_method": MEMORY_METHOD}
    print(write_result(name, record))


MEMORY_METHOD = ("peak RSS (VmHWM) increase over the RSS inside a fresh subprocess after the inputs were built and "
                 "imports done (peak reset through /proc/self/clear_refs)")


def add_memory(name, methods, args):
    """Fill the peak-RSS figures of ``methods`` into an existing ``results/<name>.json``."""
    from experiments.bench.common import RESULTS_DIR
    path = RESULTS_DIR / f"{name}.json"
    record = json.loads(path.read_text())
    row = record["results"][0]
    if (row["T"], row["d"], row["K"]) != (args.length, args.dim, args.k):
        raise ValueError(f"{path} holds T={row['T']} d={row['d']} K={row['K']}, not the requested "
                         f"T={args.length} d={args.dim} K={args.k}")
    for method in ("ours", "faiss", "torch_blocked"):  # figures from an older method are dropped, not kept
        if method in row:
            row[method].pop("peak_rss_increase_mib", None)
    for method in methods:
        row[method].update(peak_memory(method, args.length, args.dim, args.k, args.threads, args.tile))
        print(method, row[method]["peak_rss_increase_mib"], "MiB", flush=True)
    record["memory_method"] = MEMORY_METHOD
    atomic_write(path, json.dumps(record, indent=2) + "\n")
    print(path)


if __name__ == "__main__":
    main()
