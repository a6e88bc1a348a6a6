"""Exact causal top-k similarity on one GPU: our fused Triton kernel beside torch blocked matmul + topk.

Shapes: one sequence of T tokens (100k and 1M), features of width 16 (``similarity="projection"``
with a fixed orthonormal [16, 64] projection), K=8, causal, window 1. The anchor computes the
same features, then for each block of queries a float32 matmul against every earlier key, masks
the non-candidates and calls ``torch.topk``: the plain-PyTorch way to get the exact answer.
Writes JSON with the device, versions, shapes, timings, ratios and the agreement of the two.

    python experiments/bench/bench_topk_gpu.py --out experiments/bench/results/topk_h100.json
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch
import triton

from sosm.kernels import topk_similarity
from sosm.kernels.topk_similarity.reference import featurize
from sosm.kernels.topk_similarity.triton_topk import topk_indices_triton


def blocked_topk(features, k, window=1, block=4096):
    """torch anchor: exact causal top-k by blocks of queries, [T, T] never held at once."""
    length = features.shape[0]
    indices = torch.empty(length, k, dtype=torch.long, device=features.device)
    values = torch.empty(length, k, device=features.device)
    for q0 in range(0, length, block):
        q1 = min(length, q0 + block)
        key_end = max(1, q1 - 1 - window)
        scores = features[q0:q1] @ features[:key_end].T  # [block, keys]
        i = torch.arange(q0, q1, device=features.device)[:, None]
        j = torch.arange(key_end, device=features.device)[None, :]
        scores.masked_fill_(j > i - window - 1, float("-inf"))
        if scores.shape[1] < k:
            scores = torch.nn.functional.pad(scores, (0, k - scores.shape[1]), value=float("-inf"))
        v, ix = torch.topk(scores, k, dim=1)
        missing = torch.isinf(v)
        values[q0:q1], indices[q0:q1] = v.masked_fill(missing, 0.0), ix.masked_fill(missing, -1)
    return indices, values


def wall(fn, reps):
    """Median wall time (s) of ``reps`` synchronised calls after one warm-up, and the last result."""
    result = fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        result = fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2], result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--lengths", default="100000,1000000")
    args = parser.parse_args()
    props = torch.cuda.get_device_properties(0)
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(64, 16, generator=g))
    projection = q.T.contiguous().cuda()
    results = dict(device=props.name, torch=torch.__version__, triton=triton.__version__,
                   cuda=torch.version.cuda, python=platform.python_version(),
                   shapes=dict(batch=1, d_model=64, d_features=16, k=8, causal=True, window=1),
                   timing="wall clock median after one warm-up, seconds, synchronised", rows=[])
    tiles = dict(block_m=64, block_n=64, num_warps=4)
    for length in [int(x) for x in args.lengths.split(",")]:
        x = torch.randn(1, length, 64, generator=g).cuda()
        features = featurize(x, "projection", projection=projection)
        reps = 5 if length <= 200_000 else 1
        block = 4096 if length <= 200_000 else 2048
        row = dict(T=length, torch_query_block=block)
        if length <= 200_000:  # choose the tiles at the smaller size, keep them for the larger
            sweep = {}
            for bm, bn, warps in [(64, 64, 4), (128, 64, 8), (64, 128, 4), (128, 128, 8), (32, 64, 4)]:
                cfg = dict(block_m=bm, block_n=bn, num_warps=warps)
                sweep[f"{bm}x{bn}x{warps}"] = wall(lambda: topk_indices_triton(features, 8, **cfg), 3)[0]
                if sweep[f"{bm}x{bn}x{warps}"] == min(sweep.values()):
                    tiles = cfg
            row["tile_sweep_s"] = sweep
            print(json.dumps(sweep), flush=True)
        row["tiles"] = dict(tiles)
        row["ours_kernel_s"], (ours_i, ours_v) = wall(lambda: topk_indices_triton(features, 8, **tiles), reps)
        if length <= 200_000:
            row["ours_full_call_s"] = wall(lambda: topk_similarity(
                x, 8, similarity="projection", projection=projection), reps)[0]
        row["torch_blocked_s"], (ref_i, ref_v) = wall(lambda: blocked_topk(features[0], 8, block=block), reps)
        row["ratio_kernel_vs_torch"] = row["ours_kernel_s"] / row["torch_blocked_s"]
        same = ours_i[0] == ref_i
        row["index_agreement"] = float(same.float().mean())
        row["max_value_gap_where_indices_differ"] = (
            float((ours_v[0] - ref_v)[~same].abs().max()) if (~same).any() else 0.0)
        row["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 1e9
        results["rows"].append(row)
        print(json.dumps(row), flush=True)
    with open(args.out, "w") as fh:
        json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
