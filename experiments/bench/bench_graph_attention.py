"""Benchmark: sosm.kernels.graph_attention beside FlexAttention and SDPA flash, one process.

B=2, H=16, d=64, bf16, causal graphs. Masks:
- ``semantic``: window 64 + 8 scattered earlier neighbours per token (the SOSM k-NN graph);
- ``block``: diagonal (causal) + previous + 4 random earlier 128-blocks per query block.
Every implementation gets the same mask. Medians of ``triton.testing.do_bench``. Writes
JSON (device, versions, shapes, ours, anchors, ratios) to ``--out``.

Run (on a CUDA machine): ``python experiments/bench/bench_graph_attention.py --out r.json``
"""
from __future__ import annotations

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

from sosm.kernels import GraphLayout, graph_attention
from sosm.kernels.graph_attention import triton_graph_attention

BATCH, HEADS, HEAD_DIM, BLOCK = 2, 16, 64, 128
DEVICE = "cuda"
flex = torch.compile(flex_attention, dynamic=False)


def semantic_graph(seq_len, window=64, scattered=8, seed=0):
    """[B, T, window + scattered]: the previous ``window`` tokens + random earlier ones."""
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    pos = torch.arange(seq_len, device=DEVICE)
    win = pos[:, None] - torch.arange(window, 0, -1, device=DEVICE)  # ascending
    far_range = (pos - window).clamp_min(0)  # candidates [0, i - window)
    rand = torch.rand(BATCH, seq_len, scattered, generator=g, device=DEVICE)
    far = (rand * far_range[:, None]).long()
    far = torch.where(far_range[:, None] > 0, far, -1)
    nbrs = torch.cat([far, win.expand(BATCH, -1, -1)], -1)
    nbrs = torch.where(nbrs < 0, seq_len, nbrs).sort(-1).values
    return torch.where(nbrs >= seq_len, -1, nbrs)


def block_graph(seq_len, seed=0):
    """Block table [nb, nb] and the same mask as a neighbour list [B, T, 6*128]."""
    g = torch.Generator().manual_seed(seed)
    n_blocks = seq_len // BLOCK
    table = torch.zeros(n_blocks, n_blocks, dtype=torch.bool)
    for qb in range(n_blocks):
        table[qb, qb] = True
        if qb >= 1:
            table[qb, qb - 1] = True
        if qb >= 2:
            table[qb, torch.randperm(qb - 1, generator=g)[:4]] = True
    table = table.to(DEVICE)
    width = 6 * BLOCK
    blocks = torch.where(table, torch.arange(n_blocks, device=DEVICE), n_blocks)
    blocks = blocks.sort(-1).values[:, :6]  # [nb, 6] key blocks, ascending, nb = padding
    keys = (blocks[:, :, None] * BLOCK + torch.arange(BLOCK, device=DEVICE)).reshape(n_blocks, width)
    keys = keys.repeat_interleave(BLOCK, 0)  # [T, width]
    pos = torch.arange(seq_len, device=DEVICE)[:, None]
    keys = torch.where((keys >= pos) | (keys >= seq_len), -1, keys)  # causal diagonal, padding
    nbrs = torch.where(keys < 0, seq_len, keys).sort(-1).values
    nbrs = torch.where(nbrs >= seq_len, -1, nbrs)
    return table, nbrs[None].expand(BATCH, -1, -1).contiguous()


def bench(fn, inputs=None, rep=200):
    torch.cuda.synchronize()
    return triton.testing.do_bench(fn, warmup=25, rep=rep, grad_to_none=inputs,
                                   return_mode="median")


def timed_pair(forward, inputs, rep=200):
    """(fwd ms, fwd+bwd ms) of ``forward()`` with a fixed random output gradient."""
    out = forward()
    grad = torch.randn_like(out)
    fwd = bench(forward, rep=rep)
    both = bench(lambda: forward().backward(grad), inputs, rep=rep)
    return fwd, both


def make_qkv(seq_len, seed=0):
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    return [torch.randn(BATCH, seq_len, HEADS, HEAD_DIM, generator=g, device=DEVICE,
                        dtype=torch.bfloat16).requires_grad_() for _ in range(3)]


def ours(q, k, v, nbrs, layout, rep=200):
    return timed_pair(lambda: graph_attention(q, k, v, nbrs, layout=layout), [q, k, v], rep)


def traffic_gb(layout, seq_len):
    """Bytes (GB) the gather kernels must move: every edge's two gathered rows, plus I/O."""
    edges = layout.num_edges
    row = HEADS * HEAD_DIM * 2
    io = BATCH * seq_len * row
    fwd = edges * 2 * row + 2 * io
    bwd = 2 * edges * 2 * row + 8 * io  # dq: K,V per edge; dk/dv: Q,dO per edge
    return fwd / 1e9, (fwd + bwd) / 1e9


def flex_pair(q, k, v, block_mask, rep=200):
    qt, kt, vt = (t.detach().transpose(1, 2).contiguous().requires_grad_() for t in (q, k, v))
    return timed_pair(lambda: flex(qt, kt, vt, block_mask=block_mask), [qt, kt, vt], rep)


def sdpa_pair(q, k, v, rep=200):
    qt, kt, vt = (t.detach().transpose(1, 2).contiguous().requires_grad_() for t in (q, k, v))
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        return timed_pair(lambda: F.scaled_dot_product_attention(qt, kt, vt, is_causal=True),
                          [qt, kt, vt], rep)


def sweep_configs(q, k, v, nbrs, layout, configs):
    """fwd+bwd ms of each kernel config on one graph; leaves the fastest in CONFIG."""
    results = []
    for config in configs:
        triton_graph_attention.CONFIG.update(config)
        fwd, both = ours(q, k, v, nbrs, layout, rep=100)
        results.append({**config, "fwd_ms": fwd, "fwd_bwd_ms": both})
        print("config", config, f"fwd {fwd:.3f} fwd+bwd {both:.3f}", flush=True)
    best = min(results, key=lambda r: r["fwd_bwd_ms"])
    triton_graph_attention.CONFIG.update({k: best[k] for k in configs[0]})
    return results


def check_agreement(q, k, v, nbrs, layout, block_mask):
    """Relative RMS difference between ours and FlexAttention on the same mask (bf16)."""
    with torch.no_grad():
        a = graph_attention(q, k, v, nbrs, layout=layout).float()
        b = flex(*(t.transpose(1, 2) for t in (q, k, v)), block_mask=block_mask)
        b = b.transpose(1, 2).float()
    return float((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="graph_attention_bench.json")
    parser.add_argument("--lengths", default="16384,65536")
    parser.add_argument("--configs", default="16,1,2;16,2,4;32,2,4;16,4,4;8,4,4;32,4,8;16,8,8",
                        help="kernel configs to sweep: BLOCK_N,BLOCK_H,num_warps;...")
    parser.add_argument("--no-flex", action="store_true", help="skip FlexAttention (compiles)")
    args = parser.parse_args()
    lengths = [int(x) for x in args.lengths.split(",")]
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "triton": triton.__version__, "batch": BATCH, "heads": HEADS,
              "head_dim": HEAD_DIM, "dtype": "bfloat16", "timer": "triton do_bench median",
              "bandwidth_definition": "gathered K/V (fwd) and K/V + Q/dO (bwd) rows per edge "
                                      "plus q/out/grad I/O, over the measured time",
              "rows": []}

    def add(mask, seq_len, impl, fwd, both, **extra):
        row = {"mask": mask, "T": seq_len, "impl": impl, "fwd_ms": fwd, "fwd_bwd_ms": both, **extra}
        report["rows"].append(row)
        print(json.dumps(row), flush=True)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)

    for seq_len in lengths:
        q, k, v = make_qkv(seq_len)
        nbrs = semantic_graph(seq_len)
        start = time.perf_counter()
        layout = GraphLayout.build(nbrs)
        torch.cuda.synchronize()
        build_ms = 1e3 * (time.perf_counter() - start)
        if seq_len == lengths[0]:
            configs = [dict(zip(("BLOCK_N", "BLOCK_H", "num_warps"), map(int, c.split(","))))
                       for c in args.configs.split(";")]
            report["config_sweep"] = sweep_configs(q, k, v, nbrs, layout, configs)
            report["config"] = dict(triton_graph_attention.CONFIG)
        fwd, both = ours(q, k, v, nbrs, layout)
        gb_fwd, gb_both = traffic_gb(layout, seq_len)
        add("semantic", seq_len, "ours", fwd, both, layout_build_ms=build_ms,
            edges=layout.num_edges, fwd_TBps=gb_fwd / fwd, fwd_bwd_TBps=gb_both / both)
        if seq_len <= 16384 and not args.no_flex:
            adjacency = torch.zeros(BATCH, seq_len, seq_len, dtype=torch.bool, device=DEVICE)
            adjacency.scatter_(2, torch.where(nbrs < 0, torch.arange(seq_len, device=DEVICE)[:, None],
                                              nbrs), True)
            adjacency |= torch.eye(seq_len, dtype=torch.bool, device=DEVICE)
            mask = create_block_mask(lambda b, h, qi, ki: adjacency[b, qi, ki], BATCH, None,
                                     seq_len, seq_len, device=DEVICE, _compile=True)
            report.setdefault("agreement_rel_rms", {})[f"semantic_{seq_len}"] = \
                check_agreement(q, k, v, nbrs, layout, mask)
            add("semantic", seq_len, "flex_dense_adjacency", *flex_pair(q, k, v, mask),
                sparsity=float(mask.sparsity()))
            del adjacency, mask
        add("dense_causal", seq_len, "sdpa_flash", *sdpa_pair(q, k, v, rep=100))
        del layout, nbrs
        table, nbrs = block_graph(seq_len)
        layout = GraphLayout.build(nbrs)
        if not args.no_flex:
            mask = create_block_mask(lambda b, h, qi, ki: table[qi // BLOCK, ki // BLOCK] & (qi >= ki),
                                     None, None, seq_len, seq_len, device=DEVICE, _compile=True)
            if seq_len == lengths[0]:
                report.setdefault("agreement_rel_rms", {})[f"block_{seq_len}"] = \
                    check_agreement(q, k, v, nbrs, layout, mask)
            add("block", seq_len, "flex_blockmask", *flex_pair(q, k, v, mask),
                sparsity=float(mask.sparsity()))
            del mask
        fwd, both = ours(q, k, v, nbrs, layout, rep=100)
        gb_fwd, gb_both = traffic_gb(layout, seq_len)
        add("block", seq_len, "ours", fwd, both, edges=layout.num_edges, fwd_TBps=gb_fwd / fwd,
            fwd_bwd_TBps=gb_both / both)
        del layout, nbrs, q, k, v
        torch.cuda.empty_cache()

    rows = {(r["mask"], r["T"], r["impl"]): r for r in report["rows"]}
    ratios = {}
    for (mask, seq_len, impl), row in rows.items():
        if impl == "ours":
            continue
        mine = rows.get(("block" if mask == "block" else "semantic", seq_len, "ours"))
        if mine is not None:
            ratios[f"{mask}_{seq_len}_ours_over_{impl}"] = {
                "fwd": mine["fwd_ms"] / row["fwd_ms"], "fwd_bwd": mine["fwd_bwd_ms"] / row["fwd_bwd_ms"]}
    report["ratios"] = ratios
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print(f"{'mask':10s} {'T':>6s} {'impl':24s} {'fwd ms':>9s} {'fwd+bwd ms':>11s}")
    for r in report["rows"]:
        print(f"{r['mask']:10s} {r['T']:6d} {r['impl']:24s} {r['fwd_ms']:9.3f} {r['fwd_bwd_ms']:11.3f}")
    print(json.dumps(ratios, indent=1))
    assert math.isfinite(sum(r["fwd_bwd_ms"] for r in report["rows"]))


if __name__ == "__main__":
    main()
