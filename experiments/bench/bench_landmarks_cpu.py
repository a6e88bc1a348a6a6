"""64-landmark BFS over a 100k-node semantic-style graph: ``landmark_distances`` vs scipy csgraph.

The graph mimics a causal semantic k-NN graph: window edges ``j -> i`` for ``1 <= i - j <= window``
plus ``knn`` random earlier neighbours per token (seeded), ~2.1M directed edges for the
defaults. Both sides compute hop distances from the same 64 stride landmarks with the same
depth cap (directed, along edge direction, as in causal mode): ours is
``sosm.graph.landmarks.landmark_distances``; the anchor is ``scipy.sparse.csgraph.shortest_path``
(``unweighted=True``, BFS per source) and, for reference, ``breadth_first_order`` from every
source (order only, no distances). The results are checked equal before timing. Ours runs on one
torch thread by default (``--threads``), like scipy.

Run:
    python experiments/bench/bench_landmarks_cpu.py            # writes results/bench_landmarks_cpu.json
    python experiments/bench/bench_landmarks_cpu.py --nodes 20000 --repeats 1
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import scipy
import scipy.sparse as sp
import torch
from scipy.sparse import csgraph

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from experiments.bench.common import median_time, write_result  # noqa: E402
from sosm.graph import native_landmarks  # noqa: E402
from sosm.graph.landmarks import _landmark_distances_torch, landmark_distances, select_landmarks  # noqa: E402
from sosm.graph.types import UNREACHABLE  # noqa: E402


def semantic_like_graph(num_nodes: int, window: int, knn: int, seed: int) -> torch.Tensor:
    """``LongTensor[2, E]``: window edges plus ``knn`` distinct-ish random earlier sources per target."""
    gen = torch.Generator().manual_seed(seed)
    target = torch.arange(num_nodes)
    offsets = torch.arange(1, window + 1)
    win_src = (target[:, None] - offsets[None]).reshape(-1)
    win_dst = target.repeat_interleave(window)
    rnd_dst = target[window + 1:].repeat_interleave(knn)
    span = (rnd_dst - window).clamp(min=1)
    rnd_src = (torch.rand(rnd_dst.numel(), generator=gen) * span).long()  # in [0, i - window)
    src, dst = torch.cat([win_src, rnd_src]), torch.cat([win_dst, rnd_dst])
    keep = src >= 0
    key = torch.unique(dst[keep] * num_nodes + src[keep])
    return torch.stack([key % num_nodes, key // num_nodes])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--window", type=int, default=5)
    parser.add_argument("--knn", type=int, default=16)
    parser.add_argument("--landmarks", type=int, default=64)
    parser.add_argument("--max-distance", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: scipy's csgraph is single-threaded, and on a "
                             "shared 2-core machine a second OpenMP thread stalls behind other jobs)")
    parser.add_argument("--name", default="bench_landmarks_cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    N = args.nodes
    edge_index = semantic_like_graph(N, args.window, args.knn, args.seed)
    marks = select_landmarks(edge_index, 1, N, args.landmarks, rule="stride", causal=True)
    sources = marks[0].numpy()
    adjacency = sp.csr_matrix((np.ones(edge_index.shape[1], dtype=np.float64),
                               (edge_index[0].numpy(), edge_index[1].numpy())), shape=(N, N))

    def ours():
        return landmark_distances(edge_index, 1, N, marks, max_distance=args.max_distance, causal=True)

    def ours_torch():  # the torch BFS (the CUDA path, and the CPU fallback without a compiler)
        return _landmark_distances_torch(edge_index, 1, N, marks, args.max_distance, True).long()

    def scipy_shortest_path():
        return csgraph.shortest_path(adjacency, directed=True, unweighted=True, indices=sources)

    def scipy_bfs_order():
        return [csgraph.breadth_first_order(adjacency, int(s), directed=True, return_predecessors=False)
                for s in sources]

    got = ours()[0].T.numpy()
    want = scipy_shortest_path()
    want = np.where(np.isinf(want) | (want > args.max_distance), UNREACHABLE, want).astype(np.int64)
    if not np.array_equal(got, want):
        raise SystemExit(f"mismatch: {(got != want).sum()} of {got.size} distances differ")
    got_torch = ours_torch()[0].T.numpy()
    if not np.array_equal(got_torch, got):
        raise SystemExit(f"torch path mismatch: {(got_torch != got).sum()} distances differ")
    native_ok, native_detail = native_landmarks.status()
    path = "native C (CPU)" if native_ok and native_landmarks.enabled() else "torch (fallback)"

    t_ours = median_time(ours, repeats=args.repeats, warmup=1)
    t_torch = median_time(ours_torch, repeats=args.repeats, warmup=1)
    t_sp = median_time(scipy_shortest_path, repeats=args.repeats, warmup=1)
    t_bfo = median_time(scipy_bfs_order, repeats=args.repeats, warmup=1)
    reached = int((got != UNREACHABLE).sum())
    record = {
        "shapes": {"nodes": N, "edges": int(edge_index.shape[1]), "landmarks": args.landmarks,
                   "window": args.window, "knn": args.knn, "max_distance": args.max_distance,
                   "mode": "causal (directed BFS along edge direction)", "reached_pairs": reached,
                   "max_hops": int(got[got != UNREACHABLE].max())},
        "ours": {"name": f"sosm.graph.landmarks.landmark_distances ({path})", "path": path, **t_ours},
        "ours_torch_path": {"name": "sosm.graph.landmarks._landmark_distances_torch (torch BFS, CPU)", **t_torch},
        "native_build": native_detail,
        "anchor": {"name": "scipy.sparse.csgraph.shortest_path(unweighted=True, indices=64 sources)", **t_sp},
        "anchor_breadth_first_order": {"name": "scipy csgraph.breadth_first_order x 64 (order only)", **t_bfo},
        "ratio_anchor_over_ours": t_sp["median_s"] / t_ours["median_s"],
        "ratio_bfs_order_over_ours": t_bfo["median_s"] / t_ours["median_s"],
        "ratio_anchor_over_torch_path": t_sp["median_s"] / t_torch["median_s"],
        "scipy": scipy.__version__,
        "torch_threads": args.threads,
        "verified_equal": True,
        "command": "python " + " ".join(sys.argv),
    }
    out = write_result(args.name, record)
    print(f"ours [{path}] {t_ours['median_s']:.3f} s | torch path {t_torch['median_s']:.3f} s | scipy shortest_path {t_sp['median_s']:.3f} s | "
          f"scipy breadth_first_order x{args.landmarks} {t_bfo['median_s']:.3f} s | "
          f"speed-up vs shortest_path {record['ratio_anchor_over_ours']:.2f}x -> {out}")


if __name__ == "__main__":
    main()
