"""HNSWMemory beside raw hnswlib (same parameters, same process) on random vectors.

Measures build time, single-query latency (p50/p99 at k=10, one query per call) and
recall@10 against exact brute force (torch, cosine, blocked over the data) on
``--queries`` queries, for:

- ``ours``: ``HNSWMemory.add`` / ``HNSWMemory.retrieve`` with its defaults (validation, lock,
  ids, metadata, states; ef follows the index size, ``sosm.memory.hnsw.auto_ef``);
- ``raw``: a separately built ``hnswlib.Index`` with the same M / ef_construction / ef / seed.

Fairness on a shared machine:

- ``--raw-build copy`` (for sizes whose two builds do not fit the time at hand): raw is not
  built but loaded from ours' graph (``save_index``/``load_index``: the same graph in separate
  memory), so query latency and recall are still compared on identical graphs; the build
  ratio then comes from a smaller run with ``--raw-build full`` (the default);
- both indexes are built with one thread (``--threads 1``), which makes hnswlib
  deterministic: ours and raw hold the same graph in separate memory, so they return the
  same ids (checked: ``identical_results``) and do the same work per query;
- the builds are interleaved chunk by chunk (``--chunk`` rows, alternating which goes first)
  so load drift hits both; build figures are the sums of the chunks, wall and thread CPU time;
- each query runs ``--repeats`` times on each side, alternating which side goes first (per
  query and per repeat); latency p50/p99 are reported for the first call of each side and
  for the minimum over repeats, as wall time and as the calling thread's CPU time (which
  does not count time the thread spends preempted by other users of the machine). Only
  ours and raw take part: a third caller on ours' own index (the earlier ``raw_same_graph``)
  warmed ours' cache lines between its calls and made ours look faster than raw.

Also sweeps ef on the built graph (recall@10 of ours, raw single-query p50 on the first
``--sweep-queries`` queries): the trade-off behind the default ef.

    python experiments/bench/bench_memory.py --n 1000000 --out memory_hnsw_1m
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import hnswlib
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from experiments.bench.common import write_result  # noqa: E402
from sosm.memory import HNSWMemory  # noqa: E402
from sosm.memory.hnsw import auto_ef  # noqa: E402


def exact_top_k(data: np.ndarray, queries: np.ndarray, k: int, chunk: int = 50_000) -> np.ndarray:
    """Exact cosine top-k ids [Q, k] of queries [Q, d] over data [N, d], blocked over N."""
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


def summary(samples_ns) -> dict:
    us = np.asarray(samples_ns, dtype=np.float64) / 1e3
    return {"p50_us": float(np.percentile(us, 50)), "p99_us": float(np.percentile(us, 99)), "mean_us": float(us.mean())}


def build_interleaved(ours: HNSWMemory, raw: hnswlib.Index, data: np.ndarray, chunk: int, threads: int) -> dict:
    """Add ``data`` to both indexes chunk by chunk, alternating the order; wall and thread-CPU sums."""
    spent = {"ours": [0.0, 0.0], "raw": [0.0, 0.0]}
    adds = {"ours": lambda rows, start: ours.add(rows),
            "raw": lambda rows, start: raw.add_items(rows, np.arange(start, start + len(rows)), num_threads=threads)}
    for c, start in enumerate(range(0, len(data), chunk)):
        rows = data[start:start + chunk]
        for name in (("ours", "raw") if c % 2 == 0 else ("raw", "ours")):
            t, cpu = time.perf_counter(), time.thread_time()
            adds[name](rows, start)
            spent[name][0] += time.perf_counter() - t
            spent[name][1] += time.thread_time() - cpu
        print(f"  built {start + len(rows):,} rows: ours {spent['ours'][0]:.0f}s raw {spent['raw'][0]:.0f}s "
              f"(load {os.getloadavg()[0]:.1f})", flush=True)
    return {name: {"wall_s": w, "thread_cpu_s": c} for name, (w, c) in spent.items()}


def build_ours_only(ours: HNSWMemory, data: np.ndarray, chunk: int) -> dict:
    """Add ``data`` to ours chunk by chunk (raw is copied from its graph afterwards: no raw build time)."""
    wall, cpu = 0.0, 0.0
    for start in range(0, len(data), chunk):
        t, c = time.perf_counter(), time.thread_time()
        ours.add(data[start:start + chunk])
        wall += time.perf_counter() - t
        cpu += time.thread_time() - c
        print(f"  built {start + chunk:,} rows: ours {wall:.0f}s (load {os.getloadavg()[0]:.1f})", flush=True)
    return {"ours": {"wall_s": wall, "thread_cpu_s": cpu}, "raw": None}


def time_queries(calls: dict, queries: np.ndarray, k: int, repeats: int) -> tuple[dict, dict]:
    """Per call name: wall and thread-CPU ns per query (first call, min over repeats), and first-call ids."""
    names = list(calls)
    samples = {n: {kind: [] for kind in ("wall_first", "wall_min", "cpu_first", "cpu_min")} for n in names}
    found = {n: [] for n in names}
    wall, cpu = time.perf_counter_ns, time.thread_time_ns
    for i in range(len(queries)):
        one = queries[i:i + 1]
        low = {n: [None, None] for n in names}
        for r in range(repeats):
            shift = (i + r) % len(names)  # alternate who goes first, per query and per repeat
            for name in names[shift:] + names[:shift]:
                c, t = cpu(), wall()
                got = calls[name](one, k)
                t, c = wall() - t, cpu() - c
                if r == 0:
                    samples[name]["wall_first"].append(t)
                    samples[name]["cpu_first"].append(c)
                    found[name].append(got)
                low[name] = [t if low[name][0] is None else min(low[name][0], t),
                             c if low[name][1] is None else min(low[name][1], c)]
        for name in names:
            samples[name]["wall_min"].append(low[name][0])
            samples[name]["cpu_min"].append(low[name][1])
    timings = {n: {"wall_first_call": summary(samples[n]["wall_first"]), "wall_min_of_repeats": summary(samples[n]["wall_min"]),
                   "thread_cpu_first_call": summary(samples[n]["cpu_first"]),
                   "thread_cpu_min_of_repeats": summary(samples[n]["cpu_min"])} for n in names}
    return timings, {n: np.concatenate([np.asarray(f) for f in found[n]]).astype(np.int64) for n in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="build threads, both sides (1: deterministic, same graph)")
    parser.add_argument("--chunk", type=int, default=50_000, help="rows per interleaved build chunk")
    parser.add_argument("--repeats", type=int, default=3, help="timings per query and side (rotating order)")
    parser.add_argument("--ef-sweep", default="128,256,384,512,768,1024")
    parser.add_argument("--sweep-queries", type=int, default=300)
    parser.add_argument("--raw-build", choices=("full", "copy"), default="full",
                        help="full: build raw beside ours (interleaved); copy: load ours' graph into raw (no raw build time)")
    parser.add_argument("--copy-both", action="store_true",
                        help="with --raw-build copy: also reload ours (HNSWMemory.save/load) so both sides run on a "
                             "freshly loaded graph; without it ours runs on its incrementally built graph and raw on a "
                             "compact loaded copy, which searches faster (allocation layout), not a wrapper cost")
    parser.add_argument("--copy-dir", default="/tmp", help="where --raw-build copy writes the graph file (deleted after)")
    parser.add_argument("--out", default="memory_hnsw", help="result name under experiments/bench/results/")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_start = list(os.getloadavg())

    rng = np.random.default_rng(0)
    data = rng.standard_normal((args.n, args.dim), dtype=np.float32)
    queries = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    ours = HNSWMemory(dim=args.dim, max_elements=args.n, num_threads=args.threads)
    params = {"M": ours.M, "ef_construction": ours.ef_construction, "ef_default": "auto" if ours.ef_auto else ours.ef,
              "seed": ours.seed}
    print(f"n={args.n} dim={args.dim} params={params} threads={args.threads} load={load_start}", flush=True)

    raw = hnswlib.Index(space="cosine", dim=args.dim)
    raw.init_index(max_elements=args.n, M=ours.M, ef_construction=ours.ef_construction, random_seed=ours.seed)
    if args.raw_build == "full":
        build = build_interleaved(ours, raw, data, args.chunk, args.threads)
    else:
        build = build_ours_only(ours, data, args.chunk)
        if args.copy_both:  # both sides loaded from the same saved graph: the same memory layout
            import shutil
            import tempfile
            folder = Path(tempfile.mkdtemp(dir=args.copy_dir))
            ours.save(folder / "memory")
            ours = HNSWMemory.load(folder / "memory")
            version = (folder / "memory" / "CURRENT").read_text().split()[0]
            raw = hnswlib.Index(space="cosine", dim=args.dim)
            raw.load_index(str(folder / "memory" / version / "index.bin"), max_elements=args.n)
            shutil.rmtree(folder)
        else:
            copy_path = Path(args.copy_dir) / f"bench_memory_graph_{os.getpid()}.bin"
            ours._index.save_index(str(copy_path))
            raw = hnswlib.Index(space="cosine", dim=args.dim)
            raw.load_index(str(copy_path), max_elements=args.n)
            copy_path.unlink()
    ef = ours.ef  # the default ef at this size
    raw.set_ef(ef)
    params["ef_at_n"] = ef
    print(f"build: {build}; default ef at n={args.n}: {ef}", flush=True)

    t = time.perf_counter()
    truth = exact_top_k(data, queries, args.k)
    exact_s = time.perf_counter() - t
    calls = {"ours": lambda q, k: ours.retrieve(q, k=k).ids,  # what each returns, converted after timing
             "raw": lambda q, k: raw.knn_query(q, k=k, num_threads=1)[0]}
    timings, found = time_queries(calls, queries, args.k, args.repeats)
    results = {name: {**timings[name], "recall_at_10": recall(found[name], truth)} for name in calls}
    results["ours"]["build"], results["raw"]["build"] = build["ours"], build["raw"]
    if build["raw"] is None:
        results["raw"]["build"] = "not built: loaded from ours' graph (--raw-build copy)"

    sweep = {}
    sub = queries[:args.sweep_queries]
    for sweep_ef in (int(e) for e in args.ef_sweep.split(",")):
        ids = ours.retrieve(queries, k=args.k, ef=max(sweep_ef, args.k)).ids.numpy()
        raw.set_ef(sweep_ef)
        lat = []
        for i in range(len(sub)):
            t = time.perf_counter_ns()
            raw.knn_query(sub[i:i + 1], k=args.k, num_threads=1)
            lat.append(time.perf_counter_ns() - t)
        sweep[str(sweep_ef)] = {"recall_at_10": recall(ids, truth), "raw_p50_us": summary(lat)["p50_us"]}
        print(f"  ef={sweep_ef}: {sweep[str(sweep_ef)]}", flush=True)
    raw.set_ef(ef)

    def ratio(kind: str, stat: str) -> float:
        return results["ours"][kind][stat] / results["raw"][kind][stat]

    record = {
        "device": "cpu (2-core shared machine)",
        "shapes": {"n": args.n, "dim": args.dim, "queries": args.queries, "k": args.k, "space": "cosine",
                   "data": "i.i.d. standard normal float32, numpy default_rng(0) (data first, then queries)"},
        "params": {**params, "build_threads": args.threads, "query_threads": 1, "build_chunk": args.chunk, "raw_build": args.raw_build + (" (both loaded)" if args.copy_both else ""),
                   "repeats": args.repeats, "torch_threads": torch.get_num_threads()},
        "versions": {"hnswlib": _version("hnswlib"), "sosm": _version("sosm"), "numpy": np.__version__,
                     "torch": torch.__version__},
        "ours": results["ours"], "raw_hnswlib": results["raw"],
        "identical_results_ours_vs_raw": float(np.mean((found["ours"] == found["raw"]).all(axis=1))),
        "exact_brute_force_s": exact_s,
        "ratio_ours_over_raw": {
            **({"build_wall": build["ours"]["wall_s"] / build["raw"]["wall_s"],
                "build_thread_cpu": build["ours"]["thread_cpu_s"] / build["raw"]["thread_cpu_s"]} if build["raw"] else {}),
            **{f"{stat[:3]}_{kind}": ratio(kind, stat) for kind in results["ours"] if kind.startswith(("wall", "thread"))
               for stat in ("p50_us", "p99_us")},
        },
        "ef_sweep": sweep,
        "auto_ef_rule": {"ef_at_n": ef, "check": auto_ef(args.n)},
        "load_average_1_5_15": {"start": load_start, "end": list(os.getloadavg())},
        "command": "python " + " ".join(sys.argv),
    }
    path = write_result(args.out, record)
    print(path)
    print({k: record[k] for k in ("ratio_ours_over_raw", "identical_results_ours_vs_raw")})
    print({n: (results[n]["wall_first_call"]["p50_us"], results[n]["thread_cpu_min_of_repeats"]["p50_us"],
               results[n]["recall_at_10"]) for n in results})


def _version(name: str) -> str:
    from importlib.metadata import version
    try:
        return version(name)
    except Exception:  # distribution metadata missing
        return "unknown"


if __name__ == "__main__":
    main()
