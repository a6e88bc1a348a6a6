"""HNSWMemory beside raw hnswlib (same parameters, same process) on random vectors.

Measures build time, single-query latency (p50/p99 at k=10, one query per call) and
recall@10 against exact brute force (torch, cosine) on ``--queries`` queries, for:

- ``ours``: ``HNSWMemory.add`` / ``HNSWMemory.retrieve`` (validation, lock, ids, metadata, states);
- ``raw``: a separately built ``hnswlib.Index`` with the same M / ef_construction / ef / seed;
- ``raw_same_graph``: ``knn_query`` on the very index inside ``ours``, so the latency ratio
  ours / raw_same_graph is the wrapper overhead alone (two independently built graphs
  differ in shape, and a multi-threaded build is not deterministic).

Latencies interleave ours and raw query by query so load drift on a shared machine hits
both; ``--repeats R`` times each query R times, rotating which of the three goes first
(a repeated search on the same graph runs from a warm cache), and keeps the per-query minimum. Also sweeps ef on ours to report the ef that recall@10 >= 0.95 needs at this size.

    python experiments/bench/bench_memory.py --n 1000000 --out memory_hnsw
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import hnswlib
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from experiments.bench.common import write_result  # noqa: E402
from sosm.memory import HNSWMemory  # noqa: E402


def exact_top_k(data: np.ndarray, queries: np.ndarray, k: int, chunk: int = 200_000) -> np.ndarray:
    """Exact cosine top-k ids [Q, k] of queries [Q, d] over data [N, d], chunked over N."""
    q = torch.nn.functional.normalize(torch.from_numpy(queries), dim=1)
    best_sims = torch.full((len(queries), k), -float("inf"))
    best_ids = torch.full((len(queries), k), -1, dtype=torch.long)
    for start in range(0, len(data), chunk):
        block = torch.nn.functional.normalize(torch.from_numpy(data[start:start + chunk]), dim=1)
        sims, ids = (q @ block.T).topk(min(k, len(block)), dim=1)
        merged_sims = torch.cat([best_sims, sims], dim=1)
        merged_ids = torch.cat([best_ids, ids + start], dim=1)
        best_sims, order = merged_sims.topk(k, dim=1)
        best_ids = merged_ids.gather(1, order)
    return best_ids.numpy()


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found.tolist(), truth.tolist())]))


def latency_summary(samples_ns: list[int]) -> dict:
    us = np.asarray(samples_ns) / 1e3
    return {"p50_us": float(np.percentile(us, 50)), "p99_us": float(np.percentile(us, 99)), "mean_us": float(us.mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="build threads (both sides)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="time each query this many times (interleaved) and keep its minimum: filters preemption on a shared machine")
    parser.add_argument("--ef-sweep", default="64,128,256,512")
    parser.add_argument("--out", default="memory_hnsw", help="result name under experiments/bench/results/")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    data = rng.standard_normal((args.n, args.dim), dtype=np.float32)
    queries = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    defaults = HNSWMemory(dim=args.dim)
    params = {"M": defaults.M, "ef_construction": defaults.ef_construction, "ef": defaults.ef, "seed": defaults.seed}
    print(f"n={args.n} dim={args.dim} params={params} threads={args.threads}", flush=True)

    ours = HNSWMemory(dim=args.dim, max_elements=args.n, num_threads=args.threads)
    t0 = time.perf_counter()
    ours.add(data)
    build_ours = time.perf_counter() - t0
    print(f"ours built in {build_ours:.1f}s", flush=True)

    raw = hnswlib.Index(space="cosine", dim=args.dim)
    t0 = time.perf_counter()
    raw.init_index(max_elements=args.n, M=params["M"], ef_construction=params["ef_construction"], random_seed=params["seed"])
    raw.add_items(data, np.arange(args.n), num_threads=args.threads)
    build_raw = time.perf_counter() - t0
    raw.set_ef(params["ef"])
    print(f"raw built in {build_raw:.1f}s", flush=True)

    truth = exact_top_k(data, queries, args.k)
    inner = ours._index
    lat = {"ours": [], "raw": [], "raw_same_graph": []}
    found = {"ours": [], "raw": [], "raw_same_graph": []}
    clock = time.perf_counter_ns
    for i in range(args.queries):
        one = queries[i:i + 1]
        best = {name: None for name in lat}
        calls = {"ours": lambda: ours.retrieve(one, k=args.k).ids[0].numpy(),
                 "raw": lambda: raw.knn_query(one, k=args.k, num_threads=1)[0][0],
                 "raw_same_graph": lambda: inner.knn_query(one, k=args.k, num_threads=1)[0][0]}
        names = list(calls)
        for r in range(args.repeats):
            # rotate the order: the second search of a query on the same graph finds it in cache
            for name in names[r % 3:] + names[:r % 3]:
                t = clock(); got = calls[name](); spent = clock() - t
                best[name] = spent if best[name] is None else min(best[name], spent)
                found_now = found.setdefault("_last", {})
                found_now[name] = got
        for name in lat:
            lat[name].append(best[name])
        for name in lat:
            found[name].append(found["_last"][name])
    found.pop("_last")

    results = {name: {**latency_summary(lat[name]), "recall_at_10": recall(np.stack(found[name]).astype(np.int64), truth)}
               for name in lat}
    results["ours"]["build_s"], results["raw"]["build_s"] = build_ours, build_raw
    sweep = {}
    for ef in (int(e) for e in args.ef_sweep.split(",")):
        ids = ours.retrieve(queries, k=args.k, ef=max(ef, args.k)).ids.numpy()
        sweep[str(ef)] = recall(ids, truth)
    record = {
        "shapes": {"n": args.n, "dim": args.dim, "queries": args.queries, "k": args.k, "space": "cosine",
                   "data": "i.i.d. standard normal float32, numpy default_rng(0)"},
        "params": {**params, "build_threads": args.threads, "query_threads": 1},
        "latency_per_query": "minimum of %d interleaved timings" % args.repeats if args.repeats > 1 else "single timing",
        "versions": {"hnswlib": _version("hnswlib"), "sosm": _version("sosm")},
        "ours": results["ours"], "raw_hnswlib": results["raw"], "raw_hnswlib_same_graph": results["raw_same_graph"],
        "ratio": {
            "build_ours_over_raw": build_ours / build_raw,
            "p50_ours_over_raw": results["ours"]["p50_us"] / results["raw"]["p50_us"],
            "p50_ours_over_raw_same_graph": results["ours"]["p50_us"] / results["raw_same_graph"]["p50_us"],
            "p99_ours_over_raw_same_graph": results["ours"]["p99_us"] / results["raw_same_graph"]["p99_us"],
        },
        "recall_at_10_by_ef_ours": sweep,
        "load_average_1_5_15": list(__import__("os").getloadavg()),
        "command": "python " + " ".join(sys.argv),
    }
    path = write_result(args.out, record)
    print(path)
    print({k: record[k] for k in ("ours", "raw_hnswlib", "raw_hnswlib_same_graph", "ratio", "recall_at_10_by_ef_ours")})


def _version(name: str) -> str:
    from importlib.metadata import version
    try:
        return version(name)
    except Exception:  # distribution metadata missing
        return "unknown"


if __name__ == "__main__":
    main()
