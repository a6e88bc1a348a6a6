"""Causal random-walk encodings (RWPE) for a training batch: ours vs PyG's ``AddRandomWalkPE``, on CPU.

What a model with ``structure="rwpe"`` pays per forward: the graph of a batch (``B`` samples of
``T`` tokens, built by :class:`sosm.graph.GraphBuilder` from random token states with the model's
defaults: window 1, semantic top-k, optional successor edges), then ``walk_length`` return
probabilities per token. Causal means token t reads the walk on its own *prefix graph* (edges
between positions <= t, degrees counted there), so it is one walk per (sample, t).

Timed side by side in one process (interleaved, one torch thread):

* ours: ``sosm.graph.random_walk_encoding(..., causal=True)`` — every prefix of a sample at once
  as batched dense ``[T, T]`` products;
* anchor, causal: PyG's ``AddRandomWalkPE`` (the GraphGPS transform) called once per prefix
  graph — the straightforward way to get the same numbers from the public implementation; timed
  on ``--anchor-samples`` samples and scaled to the batch (its cost is linear in samples);
* anchor, bidirectional: ``AddRandomWalkPE`` once per sample on the whole sample graph — what
  GraphGPS computes, which reads the future (not usable causally); the floor of any per-sample
  walk;
* the encoding RWPE replaces: ``landmark_distances`` (8 landmarks, causal BFS) on the same graph;
* ours in one block (``row_block = T``: one ``[T, T]`` product per walk step), what the row blocks replace.

Ours is checked equal (to 1e-5) to the per-prefix PyG anchor before timing.

Run:
    python experiments/bench/bench_rwpe_cpu.py                  # writes results/rwpe_cpu.json
    python experiments/bench/bench_rwpe_cpu.py --seq-lens 64 --batch 8 --repeats 1 --name rwpe_smoke
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from experiments.bench.common import interleaved_times, write_result  # noqa: E402
from sosm.graph import (GraphBuilder, GraphConfig, landmark_distances, random_walk_encoding,  # noqa: E402
                        select_landmarks)
from sosm.graph.landmarks import _prefix_random_walk  # noqa: E402


def batch_graph(batch: int, seq_len: int, k: int, successor: bool, seed: int) -> torch.Tensor:
    """Token edges ``[2, E]`` (nodes ``b * seq_len + t``) of a causal graph over random states."""
    gen = torch.Generator().manual_seed(seed)
    states = torch.randn(batch, seq_len, 64, generator=gen)
    graph = GraphBuilder(GraphConfig(k=k, successor_edges=successor)).build(states)
    src, dst = graph.edge_index
    keep = (src < batch * seq_len) & (dst < batch * seq_len)  # token nodes only (no memory slots)
    return torch.stack([src[keep], dst[keep]])


def sample_edges(edge_index: torch.Tensor, sample: int, seq_len: int) -> torch.Tensor:
    """Edges of one sample renumbered to ``0..seq_len-1``, undirected, without self-loops."""
    src, dst = edge_index
    keep = (src // seq_len == sample) & (dst // seq_len == sample) & (src != dst)
    ei = torch.stack([src[keep] % seq_len, dst[keep] % seq_len])
    return torch.unique(torch.cat([ei, ei.flip(0)], dim=1), dim=1)


def pyg_causal(edge_index: torch.Tensor, samples: int, seq_len: int, walk_length: int) -> torch.Tensor:
    """``[samples * T, walk_length]``: PyG's AddRandomWalkPE on every prefix graph, row t of prefix t."""
    from torch_geometric.data import Data
    from torch_geometric.transforms import AddRandomWalkPE

    transform = AddRandomWalkPE(walk_length=walk_length, attr_name="pe")
    rows = []
    for b in range(samples):
        ei = sample_edges(edge_index, b, seq_len)
        for t in range(seq_len):
            prefix = ei[:, (ei[0] <= t) & (ei[1] <= t)]
            rows.append(transform(Data(edge_index=prefix, num_nodes=t + 1)).pe[t])
    return torch.stack(rows)


def pyg_bidirectional(edge_index: torch.Tensor, samples: int, seq_len: int, walk_length: int) -> torch.Tensor:
    """``[samples * T, walk_length]``: AddRandomWalkPE once per whole sample graph (reads the future)."""
    from torch_geometric.data import Data
    from torch_geometric.transforms import AddRandomWalkPE

    transform = AddRandomWalkPE(walk_length=walk_length, attr_name="pe")
    return torch.cat([transform(Data(edge_index=sample_edges(edge_index, b, seq_len), num_nodes=seq_len)).pe
                      for b in range(samples)])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--batch", type=int, default=64, help="samples per batch (default 64, the recall harness's)")
    parser.add_argument("--walk-length", type=int, default=8, help="walk lengths 1..N (default 8, rwpe_steps)")
    parser.add_argument("--k", type=int, default=8, help="semantic neighbours (default 8, GraphConfig's)")
    parser.add_argument("--successor", action="store_true", help="add successor edges (the MQAR configuration)")
    parser.add_argument("--anchor-samples", type=int, default=2,
                        help="samples the per-prefix PyG anchor walks; its time is scaled to --batch (default 2)")
    parser.add_argument("--landmarks", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", default="rwpe_cpu")
    parser.add_argument("--out", default=None, help="JSON path (default experiments/bench/results/<name>.json)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    import torch_geometric

    B, W, S = args.batch, args.walk_length, min(args.anchor_samples, args.batch)
    rows = []
    for T in args.seq_lens:
        edge_index = batch_graph(B, T, args.k, args.successor, args.seed)
        marks = select_landmarks(edge_index, B, T, args.landmarks, rule="stride", causal=True)
        ours = random_walk_encoding(edge_index, B * T, W, causal=True, seq_len=T)
        want = pyg_causal(edge_index, S, T, W)
        err = (ours[:S * T] - want).abs().max().item()
        if err > 1e-5:
            raise SystemExit(f"T={T}: ours differs from PyG's per-prefix AddRandomWalkPE by {err:.2e}")
        jobs = {
            "ours": lambda: random_walk_encoding(edge_index, B * T, W, causal=True, seq_len=T),
            "anchor_pyg_per_prefix": lambda: pyg_causal(edge_index, S, T, W),
            "anchor_pyg_bidirectional": lambda: pyg_bidirectional(edge_index, B, T, W),
            "landmark_distances": lambda: landmark_distances(edge_index, B, T, marks, max_distance=64, causal=True),
            "ours_one_block": lambda: _prefix_random_walk(edge_index, B, T, W, row_block=T),
        }
        times, _ = interleaved_times(jobs, repeats=args.repeats, warmup=1)
        per_prefix_batch = times["anchor_pyg_per_prefix"]["median_s"] * B / S
        row = {
            "seq_len": T, "batch": B, "edges": int(edge_index.shape[1]), "max_abs_err_vs_pyg": err,
            "ours_s": times["ours"]["median_s"],
            "anchor_pyg_per_prefix_s_measured": times["anchor_pyg_per_prefix"]["median_s"],
            "anchor_pyg_per_prefix_samples": S,
            "anchor_pyg_per_prefix_s_scaled_to_batch": per_prefix_batch,
            "anchor_pyg_bidirectional_s": times["anchor_pyg_bidirectional"]["median_s"],
            "landmark_distances_s": times["landmark_distances"]["median_s"],
            "ratio_pyg_per_prefix_over_ours": per_prefix_batch / times["ours"]["median_s"],
            "ratio_pyg_bidirectional_over_ours":
                times["anchor_pyg_bidirectional"]["median_s"] / times["ours"]["median_s"],
            "ratio_ours_over_landmarks": times["ours"]["median_s"] / times["landmark_distances"]["median_s"],
            "ours_one_block_s": times["ours_one_block"]["median_s"],
            "ratio_one_block_over_ours": times["ours_one_block"]["median_s"] / times["ours"]["median_s"],
            "times": times,
        }
        rows.append(row)
        print(f"T={T:4d} B={B} E={row['edges']:7d} | ours {row['ours_s'] * 1e3:8.1f} ms | PyG per prefix "
              f"{per_prefix_batch * 1e3:9.1f} ms ({row['ratio_pyg_per_prefix_over_ours']:.0f}x) | PyG bidirectional "
              f"{row['anchor_pyg_bidirectional_s'] * 1e3:8.1f} ms ({row['ratio_pyg_bidirectional_over_ours']:.2f}x) | "
              f"landmarks {row['landmark_distances_s'] * 1e3:7.1f} ms (ours/landmarks "
              f"{row['ratio_ours_over_landmarks']:.2f}x) | one block {row['ours_one_block_s'] * 1e3:7.1f} ms "
              f"({row['ratio_one_block_over_ours']:.2f}x ours)", flush=True)
    record = {
        "shapes": {"batch": B, "seq_lens": args.seq_lens, "walk_length": W, "k": args.k,
                   "successor_edges": args.successor, "landmarks": args.landmarks,
                   "graph": "GraphBuilder(GraphConfig(k, successor_edges)) over randn states [B, T, 64]"},
        "rows": rows,
        "anchor": "torch_geometric.transforms.AddRandomWalkPE (GraphGPS's RWPE), per prefix graph / per sample",
        "torch_geometric": torch_geometric.__version__,
        "torch_threads": args.threads,
        "verified_equal": True,
        "command": "python experiments/bench/bench_rwpe_cpu.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    out = write_result(args.name, record, out=args.out)
    print(f"-> {out}")
    return record


if __name__ == "__main__":
    main()
