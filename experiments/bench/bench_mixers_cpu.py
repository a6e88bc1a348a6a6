"""Every registered mixer's forward + backward on the CPU at T = 256 / 1,024 / 4,096, beside dense attention.

One layer of each mixer at the Tiny Shakespeare width (``d_model`` 128, 4 heads, its defaults otherwise),
batch 1, float32, one thread. Within each length the mixers are timed in turn per repeat
(``interleaved_times``: the dense-attention layer is the anchor in the same process, so every figure is
also a ratio to it), and each (mixer, T) pair's peak memory is measured alone in a fresh process (peak
RSS of one forward + backward minus a baseline process that builds the same inputs). Graph attention
gets a causal graph of 8 semantic neighbours + a window of 1 built once beforehand (the model builds it
once per forward and shares it across layers; ``sosm.graph`` costs are benchmarked separately).
Bidirectional-only mixers (FNet, Linformer) are timed in their bidirectional form (``causal`` in each row);
multi-block heads also get the random semantic state the graph was built from.

    OMP_NUM_THREADS=1 python experiments/bench/bench_mixers_cpu.py                 # all mixers, three lengths
    OMP_NUM_THREADS=1 python experiments/bench/bench_mixers_cpu.py --lengths 256 --repeats 3 --mixers mamba s4

Writes ``experiments/bench/results/mixers_cpu.json`` (or ``--out``).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from experiments.bench.common import interleaved_times, peak_rss_subprocess, write_result  # noqa: E402

WIDTH, HEADS, ANCHOR = 128, 4, "attention"


def build(name: str, seq_len: int):
    """``(layer, x, ctx)`` for one mixer at ``seq_len`` (deterministic inputs)."""
    from sosm.graph import GraphBuilder, GraphConfig
    from sosm.graph.convert import to_neighbor_index
    from sosm.kernels import GraphLayout
    from sosm.model import SOSMConfig
    from sosm.model.context import LayerContext
    from sosm.model.mixers import build_mixer, get_mixer
    from sosm.model.positional import rope_angles

    torch.manual_seed(0)
    causal = get_mixer(name).causal_capable  # bidirectional-only mixers (fnet, linformer) run bidirectional
    config = SOSMConfig(model=name, d_model=WIDTH, n_heads=HEADS, vocab_size=256, max_seq_len=seq_len,
                        graph={"num_landmarks": 0, "causal": causal}, causal=causal)
    layer = build_mixer(name, config, causal=causal)
    layer.init_parameters()
    x = torch.randn(1, seq_len, WIDTH, requires_grad=True)
    ctx = LayerContext(angles=rope_angles(torch.arange(seq_len), WIDTH // HEADS, 10000.0)[None])
    if get_mixer(name).needs_graph:
        semantic = torch.randn(1, seq_len, 64)
        graph = GraphBuilder(GraphConfig(k=8, window=1)).build(semantic)
        ctx.neighbors = to_neighbor_index(graph)
        ctx.layout = GraphLayout.build(ctx.neighbors)
        ctx.semantic = semantic  # the MU state multi-block heads read
    return layer, x, ctx


def step(layer, x, ctx) -> None:
    layer.zero_grad(set_to_none=True)
    x.grad = None
    layer(x, ctx).square().mean().backward()


def peak_memory(name: str, seq_len: int) -> dict:
    """Peak RSS (MiB) of one forward + backward in a fresh process, minus the same process without the call."""
    root = str(Path(__file__).resolve().parents[2])
    setup = (f"import sys; sys.path.insert(0, {root!r}); import torch; torch.set_num_threads(1)\n"
             f"from experiments.bench.bench_mixers_cpu import build, step\n"
             f"layer, x, ctx = build({name!r}, {seq_len})\n")
    base = peak_rss_subprocess(setup)["peak_rss_mib"]
    full = peak_rss_subprocess(setup + "step(layer, x, ctx)\n")["peak_rss_mib"]
    return {"peak_rss_mib": full, "baseline_rss_mib": base, "step_rss_increase_mib": full - base}


def main(argv=None) -> int:
    from sosm.model.mixers import get_mixer, mixer_names

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mixers", nargs="+", default=None, help="mixers (default: every registered one)")
    parser.add_argument("--lengths", nargs="+", type=int, default=[256, 1024, 4096])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-memory", action="store_true", help="skip the per-(mixer, T) peak-memory processes")
    parser.add_argument("--out", default=None, help="JSON path (default experiments/bench/results/mixers_cpu.json)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    names = args.mixers or list(mixer_names())
    if ANCHOR not in names:
        names = [ANCHOR] + names
    rows = []
    for seq_len in args.lengths:
        built = {name: build(name, seq_len) for name in names}
        jobs = {name: (lambda b=built[name]: step(*b)) for name in names}
        times, _ = interleaved_times(jobs, args.repeats, warmup=1)
        anchor = times[ANCHOR]["median_cpu_s"]
        for name in names:
            row = {"mixer": name, "T": seq_len, "causal": get_mixer(name).causal_capable, "fwd_bwd_ms": 1e3 * times[name]["median_s"],
                   "fwd_bwd_cpu_ms": 1e3 * times[name]["median_cpu_s"],
                   "cpu_ratio_to_attention": times[name]["median_cpu_s"] / anchor,
                   "parameters": sum(p.numel() for p in built[name][0].parameters()),
                   "cpu_samples_s": times[name]["cpu_samples_s"]}
            if not args.no_memory:
                row.update(peak_memory(name, seq_len))
            rows.append(row)
            print(f"T={seq_len:5d} {name:16s} {row['fwd_bwd_cpu_ms']:9.1f} ms CPU  x{row['cpu_ratio_to_attention']:.2f}"
                  + (f"  +{row['step_rss_increase_mib']:.0f} MiB" if "step_rss_increase_mib" in row else ""),
                  flush=True)
    record = {"shapes": {"batch": 1, "d_model": WIDTH, "n_heads": HEADS, "lengths": args.lengths,
                         "dtype": "float32", "graph": "causal, k=8, window 1 (graph attention only)"},
              "anchor": f"{ANCHOR} (dense causal SDPA + MLP) in the same process", "repeats": args.repeats,
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "load_average": os.getloadavg(),
              "rows": rows}
    print(write_result("mixers_cpu", record, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
