"""CPU pieces of the hybrid's training step, each beside its anchor in the same process.

One thread, jobs interleaved per repeat (``interleaved_times``), wall and CPU time medians:

- ``causal_conv``: Mamba's causal depthwise conv + SiLU, fwd+bwd, at one layer's shape (B=12,
  T=64, E=256, K=4, input a strided half of the in-projection): the native C path and the
  vectorised shifted multiply-adds beside ``F.conv1d`` + ``F.silu`` (the anchor and oracle).
- ``graph_attention``: the CPU graph-attention paths, fwd+bwd, H=4, d=32, ~10 neighbours per
  query (window 1 + 9 scattered earlier keys): dense masked SDPA vs the gather path at growing
  ``B*H*T^2``, beside causal dense SDPA (the anchor: the Transformer's attention), which picks
  ``DENSE_ELEMENTS``.
- ``graph_build``: the model's graph (default ``GraphBuilder`` of the CPU config, B=12, T=64,
  with landmarks) beside torch matmul + topk on the same features (anchor).
- ``adamw``: one optimiser step over the 0.8M hybrid's parameters, fused vs the for-loop
  implementation (anchor: PyTorch's CPU default).
- ``hybrid_step_T256``: the hybrid's whole training step at context 256 (B=12) with the
  graph-attention dense threshold at 2M (the old value: gather path) and at ``DENSE_ELEMENTS``.

Usage: ``OMP_NUM_THREADS=1 python experiments/bench/bench_cpu_components.py [--repeats 9]``
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from experiments.bench.common import interleaved_times, write_result  # noqa: E402
from sosm.kernels import GraphLayout, causal_conv1d  # noqa: E402
from sosm.kernels.selective_scan import causal_conv1d_ref, native_cpu  # noqa: E402
from sosm.train.components import sosm_model_factory  # noqa: E402
from sosm.train.config import TrainConfig  # noqa: E402

vectorized = importlib.import_module("sosm.kernels.graph_attention.vectorized")
CONFIGS = ROOT / "experiments" / "configs"
VOCAB = 256


def grads(out, inputs, grad):
    return torch.autograd.grad(out, inputs, grad)


def bench_conv(repeats):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 64, 512, generator=g)[..., 256:].requires_grad_()  # strided half, as in the model
    w = torch.randn(256, 4, generator=g).requires_grad_()
    b = torch.randn(256, generator=g).requires_grad_()
    go = torch.randn(12, 64, 256, generator=g)
    jobs = {name: (lambda be: lambda: grads(causal_conv1d(x, w, b, "silu", backend=be), (x, w, b), go))(be)
            for name, be in (("native", "native"), ("vectorized", "vectorized"))}
    if not native_cpu.status()[0]:
        jobs.pop("native")
    jobs["anchor_conv1d_silu"] = lambda: grads(causal_conv1d_ref(x, w, b, "silu"), (x, w, b), go)
    times, last = interleaved_times(jobs, repeats, warmup=2)
    for name, got in last.items():  # same gradients as the anchor
        for a, r in zip(got, last["anchor_conv1d_silu"]):
            torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-4, msg=name)
    out = {"shape": {"B": 12, "T": 64, "E": 256, "K": 4, "activation": "silu", "pass": "fwd+bwd"}, **times}
    for name in jobs:
        out[f"ratio_{name}_over_anchor"] = times[name]["median_cpu_s"] / times["anchor_conv1d_silu"]["median_cpu_s"]
    return out


def neighbours(batch, length, width=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = torch.full((batch, length, width), -1, dtype=torch.long)
    for k in range(width):
        off = 1 if k == 0 else torch.randint(2, 64, (batch, length), generator=g)
        pos = torch.arange(length)[None, :] - off
        n[..., k] = torch.where(pos >= 0, pos, -1)
    return n


def bench_graph_attention(repeats):
    rows = []
    heads, dim = 4, 32
    for batch, length in ((12, 64), (12, 256), (12, 512), (4, 1024), (2, 2048), (1, 4096)):
        g = torch.Generator().manual_seed(1)
        q, k, v = (torch.randn(batch, length, heads, dim, generator=g).requires_grad_() for _ in range(3))
        go = torch.randn(batch, length, heads, dim, generator=g)
        layout = GraphLayout.build(neighbours(batch, length))
        scale = dim ** -0.5
        jobs = {
            "dense_masked_sdpa": lambda: grads(vectorized._dense_attention(q, k, v, layout, scale, None, None),
                                               (q, k, v), go),
            "gather": lambda: grads(vectorized._GatherAttention.apply(q, k, v, layout, scale, None, None),
                                    (q, k, v), go),
            "anchor_causal_sdpa": lambda: grads(F.scaled_dot_product_attention(
                *(t.transpose(1, 2) for t in (q, k, v)), is_causal=True).transpose(1, 2), (q, k, v), go),
        }
        times, last = interleaved_times(jobs, repeats, warmup=1)
        for a, r in zip(last["dense_masked_sdpa"], last["gather"]):
            torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-4)
        scores = batch * heads * length * length
        rows.append({"B": batch, "T": length, "H": heads, "d": dim, "width": layout.width, "scores": scores,
                     "path_taken": "dense" if scores <= vectorized.DENSE_ELEMENTS else "gather", **times,
                     "gather_over_dense_cpu": times["gather"]["median_cpu_s"] / times["dense_masked_sdpa"]["median_cpu_s"]})
    return {"dense_elements": vectorized.DENSE_ELEMENTS, "pass": "fwd+bwd", "rows": rows}


def bench_graph_build(repeats):
    cfg = TrainConfig.from_yaml(CONFIGS / "shakespeare_char_cpu_hybrid.yaml")
    model = sosm_model_factory(cfg.model, VOCAB, cfg.data.block_size)
    g = torch.Generator().manual_seed(2)
    semantic, temporal = torch.randn(12, 64, 64, generator=g), torch.randn(12, 64, 32, generator=g)
    features = F.normalize(semantic, dim=-1)

    def anchor():  # causal kNN by one batched matmul + topk
        scores = features @ features.transpose(1, 2)
        return scores.masked_fill(torch.ones(64, 64, dtype=torch.bool).triu(-1), float("-inf")).topk(8, dim=-1)

    times, _ = interleaved_times({"model_build_graph": lambda: model.build_graph(semantic, temporal),
                                  "anchor_matmul_topk": anchor}, repeats, warmup=2)
    return {"shape": {"B": 12, "T": 64, "D": 64}, "config": "shakespeare_char_cpu_hybrid.yaml (k=8, window 1, "
            "8 landmarks, per-edge provenance)", **times,
            "ratio_over_anchor_cpu": times["model_build_graph"]["median_cpu_s"] / times["anchor_matmul_topk"]["median_cpu_s"]}


def bench_adamw(repeats):
    cfg = TrainConfig.from_yaml(CONFIGS / "shakespeare_char_cpu_hybrid.yaml")
    model = sosm_model_factory(cfg.model, VOCAB, cfg.data.block_size)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    jobs = {"fused": torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True).step,
            "anchor_for_loop": torch.optim.AdamW(model.parameters(), lr=1e-3).step}
    times, _ = interleaved_times(jobs, repeats, warmup=2)
    return {"parameters": sum(p.numel() for p in model.parameters()), "tensors": len(list(model.parameters())),
            **times, "ratio_fused_over_anchor_cpu": times["fused"]["median_cpu_s"] / times["anchor_for_loop"]["median_cpu_s"]}


def bench_hybrid_step_t256(repeats):
    cfg = TrainConfig.from_yaml(CONFIGS / "shakespeare_char_cpu_hybrid_ctx256.yaml")
    torch.manual_seed(0)
    model = sosm_model_factory(cfg.model, VOCAB, cfg.data.block_size).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    x = torch.randint(0, VOCAB, (12, 257), generator=torch.Generator().manual_seed(3))
    current = vectorized.DENSE_ELEMENTS

    def step(threshold):
        def run():
            vectorized.DENSE_ELEMENTS = threshold
            try:
                logits, _ = model(x[:, :-1])
                loss = F.cross_entropy(logits.reshape(-1, VOCAB), x[:, 1:].reshape(-1))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            finally:
                vectorized.DENSE_ELEMENTS = current
        return run

    times, _ = interleaved_times({"dense_threshold_2M_gather": step(1 << 21), f"dense_threshold_{current}": step(current)},
                                 repeats, warmup=1)
    return {"shape": {"B": 12, "T": 256}, "config": "shakespeare_char_cpu_hybrid_ctx256.yaml", **times}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--name", default="cpu_components")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    record = {"threads": args.threads, "repeats": args.repeats, "timing": "interleaved per repeat, medians",
              "causal_conv": bench_conv(args.repeats), "graph_attention": bench_graph_attention(args.repeats),
              "graph_build": bench_graph_build(args.repeats), "adamw": bench_adamw(args.repeats),
              "hybrid_step_T256": bench_hybrid_step_t256(max(3, args.repeats // 3)),
              "load_average_before": load_before, "load_average_after": os.getloadavg()}
    conv = record["causal_conv"]
    for name in ("native", "vectorized", "anchor_conv1d_silu"):
        if name in conv:
            print(f"conv+silu fwd+bwd {name:20s} {conv[name]['median_cpu_s'] * 1e3:7.3f} ms CPU")
    for row in record["graph_attention"]["rows"]:
        print(f"graph attention B={row['B']:2d} T={row['T']:5d} scores {row['scores'] / 1e6:5.1f}M: dense "
              f"{row['dense_masked_sdpa']['median_cpu_s'] * 1e3:7.1f} ms, gather {row['gather']['median_cpu_s'] * 1e3:7.1f} ms, "
              f"causal SDPA {row['anchor_causal_sdpa']['median_cpu_s'] * 1e3:7.1f} ms (takes {row['path_taken']})")
    gb = record["graph_build"]
    print(f"graph build B12 T64 {gb['model_build_graph']['median_cpu_s'] * 1e3:.2f} ms vs matmul+topk "
          f"{gb['anchor_matmul_topk']['median_cpu_s'] * 1e3:.2f} ms")
    ad = record["adamw"]
    print(f"AdamW step fused {ad['fused']['median_cpu_s'] * 1e3:.2f} ms vs for-loop {ad['anchor_for_loop']['median_cpu_s'] * 1e3:.2f} ms")
    for name, t in record["hybrid_step_T256"].items():
        if isinstance(t, dict) and "median_cpu_s" in t:
            print(f"hybrid step T=256 {name}: {t['median_cpu_s'] * 1e3:.1f} ms CPU")
    print(write_result(args.name, record))


if __name__ == "__main__":
    main()
