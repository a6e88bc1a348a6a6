"""CPU training-step time (fwd + bwd + AdamW) per model at the shakespeare_char CPU config.

Times one optimiser step of each model built from ``experiments/configs/shakespeare_char_cpu_<model>.yaml``
(batch 12 x context 64, byte vocabulary) beside the Transformer in the same process (the anchor:
ratio = model / transformer), models interleaved per repeat so machine-load drift hits all alike.
Also times the CPU selective scan paths at one Mamba layer's shape and memory layout (u, delta, z
transposed views of [B, L, E] memory, B and C of [B, L, N]), fwd and fwd+bwd, interleaved per
repeat: the native C loop (``selective_scan_native``, what the models run on CPU), the vectorised
PyTorch path (``selective_scan_vectorized``) and the sequential reference loop (``selective_scan_ref``).
One thread by default (the shared 2-core machine); the load average is recorded, and CPU time
(``time.process_time``) beside wall time: on the loaded machine wall is about 2x CPU.

Usage: ``python experiments/bench/bench_cpu_train_step.py [--repeats 7] [--threads 1] [--models ...]``
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from experiments.bench.common import interleaved_times, write_result  # noqa: E402
from sosm.kernels.selective_scan import (native_cpu, scan_path, selective_scan_native,  # noqa: E402
                                         selective_scan_ref, selective_scan_vectorized)
from sosm.train.components import count_parameters, sosm_model_factory  # noqa: E402
from sosm.train.config import TrainConfig  # noqa: E402

MODELS = ("transformer", "hybrid", "mamba", "graph_attention")
# This script's figures at commit 5b1f4f1 (before the CPU scan / graph-attention work), one thread,
# 3 repeats, load average 6.2-9.9 on the 2-core machine: median step CPU time in ms and ratio to
# the Transformer's; the scan's fwd+bwd wall time in ms.
BEFORE = {"commit": "5b1f4f1", "load_average": [6.21, 9.95, 9.92],
          "train_step_cpu_ms": {"transformer": 133.1, "hybrid": 539.8, "mamba": 940.5, "graph_attention": 270.6},
          "cpu_ratio_to_transformer": {"transformer": 1.0, "hybrid": 4.06, "mamba": 7.06, "graph_attention": 2.03},
          "selective_scan_fwd_bwd_wall_ms": {"vectorized": 197.8, "reference_loop": 292.3}}
# This script at 30fc2db (before the native CPU scan; the models ran the vectorised scan), 1 thread,
# 9 repeats, load average 5.2-5.5: median step CPU time in ms and ratio to the Transformer's.
PREVIOUS = {"commit": "30fc2db", "load_average": [5.2, 5.5],
            "train_step_cpu_ms": {"transformer": 65.1, "hybrid": 150.6, "mamba": 223.4, "graph_attention": 85.3},
            "cpu_ratio_to_transformer": {"transformer": 1.0, "hybrid": 2.31, "mamba": 3.43, "graph_attention": 1.31},
            "selective_scan_fwd_bwd_wall_ms": {"vectorized": 44.9, "reference_loop": 269.6}}
VOCAB = 256


def build(name: str):
    cfg = TrainConfig.from_yaml(ROOT / "experiments" / "configs" / f"shakespeare_char_cpu_{name}.yaml")
    torch.manual_seed(cfg.seed)
    model = sosm_model_factory(cfg.model, VOCAB, cfg.data.block_size).train()
    o = cfg.optim
    opt = torch.optim.AdamW(model.parameters(), lr=o.lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay,
                            fused=True)  # as the trainer
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, VOCAB, (cfg.batch_size, cfg.data.block_size + 1), generator=gen)

    def step():
        logits, _ = model(x[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
        opt.step()
    return model, step


def time_steps(models, repeats: int) -> dict:
    built = {m: build(m) for m in models}
    times, _ = interleaved_times({m: step for m, (_, step) in built.items()}, repeats, warmup=1)
    out = {}
    for m in models:
        out[m] = {"params": count_parameters(built[m][0]), "median_s": times[m]["median_s"],
                  "median_cpu_s": times[m]["median_cpu_s"], "samples_s": times[m]["samples_s"]}
    if "transformer" in out:
        for m in models:
            out[m]["ratio_to_transformer"] = out[m]["median_s"] / out["transformer"]["median_s"]
            out[m]["cpu_ratio_to_transformer"] = out[m]["median_cpu_s"] / out["transformer"]["median_cpu_s"]
    return out


SCAN_PATHS = {"native": selective_scan_native, "vectorized": selective_scan_vectorized,
              "reference_loop": selective_scan_ref}


def scan_bench(repeats: int) -> dict:
    B, E, N, L = 12, 256, 16, 64  # one Mamba layer at d_model 128, expand 2
    g = torch.Generator().manual_seed(0)
    mk = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    # the model's layout: [B, E, L] / [B, N, L] views of [B, L, *] memory, z a column slice
    u, dt = (mk(B, L, E).transpose(1, 2).requires_grad_() for _ in range(2))
    z = mk(B, L, 2 * E)[..., E:].transpose(1, 2).requires_grad_()
    A = (-torch.rand(E, N, generator=g) - 0.5).requires_grad_()
    proj = mk(B, L, 8 + 2 * N)
    Bm, Cm = proj[..., 8:8 + N].transpose(1, 2).requires_grad_(), proj[..., 8 + N:].transpose(1, 2).requires_grad_()
    D, bias = mk(E).requires_grad_(), mk(E).requires_grad_()
    args = (u, dt, A, Bm, Cm, D, z, bias, True)
    inputs = (u, dt, A, Bm, Cm, D, z, bias)
    gout = mk(B, L, E).transpose(1, 2)
    paths = dict(SCAN_PATHS) if native_cpu.status()[0] else {k: v for k, v in SCAN_PATHS.items() if k != "native"}

    def fwd(fn):
        with torch.no_grad():
            fn(*args)

    def fwd_bwd(fn):
        torch.autograd.grad(fn(*args), inputs, gout)

    for _ in range(2):  # warm-up (the native library is built and loaded before this)
        for fn in paths.values():
            fwd_bwd(fn)
    jobs = {(name, kind): (lambda call, fn: lambda: call(fn))(call, fn)
            for name, fn in paths.items() for kind, call in (("fwd", fwd), ("fwd_bwd", fwd_bwd))}
    times, _ = interleaved_times(jobs, repeats)  # interleaved: each repeat times every path once
    res = {"shape": {"batch": B, "dim": E, "d_state": N, "length": L, "layout": "model ([B, L, E] memory)",
                     "options": "D, z, delta_bias, softplus"},
           "native_library": native_cpu.status()[1]}
    for name in paths:
        res[name] = {f"{kind}{suffix}": times[name, kind][median]
                     for kind in ("fwd", "fwd_bwd") for suffix, median in (("_s", "median_s"), ("_cpu_s", "median_cpu_s"))}
    res["speedup_fwd_bwd"] = res["reference_loop"]["fwd_bwd_s"] / res["vectorized"]["fwd_bwd_s"]
    if "native" in paths:
        for kind in ("fwd_s", "fwd_cpu_s", "fwd_bwd_s", "fwd_bwd_cpu_s"):
            res[f"vectorized_over_native_{kind[:-2]}"] = res["vectorized"][kind] / res["native"][kind]
    return res


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--name", default="cpu_train_step")
    p.add_argument("--no-write", action="store_true")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    load_before = os.getloadavg()
    record = {"threads": a.threads, "repeats": a.repeats, "config": "shakespeare_char_cpu_*.yaml (batch 12 x 64)",
              "step": "fwd + cross-entropy + bwd + clip + AdamW", "anchor": "transformer, same process, interleaved",
              "selective_scan_path": scan_path("cpu"),
              "train_step": time_steps(a.models, a.repeats), "selective_scan_cpu": scan_bench(a.repeats),
              "before": BEFORE, "previous": PREVIOUS}
    record["load_average_before"], record["load_average_after"] = load_before, os.getloadavg()
    for m, r in record["train_step"].items():
        print(f"{m:16s} {r['median_s'] * 1e3:8.1f} ms  cpu {r['median_cpu_s'] * 1e3:8.1f} ms  "
              f"x{r.get('cpu_ratio_to_transformer', float('nan')):.2f} of transformer (cpu)")
    s = record["selective_scan_cpu"]
    print(f"models' scan path on CPU: {record['selective_scan_path']}")
    for name in SCAN_PATHS:
        if name in s:
            print(f"scan {name:15s} fwd {s[name]['fwd_s'] * 1e3:6.2f} ms (cpu {s[name]['fwd_cpu_s'] * 1e3:6.2f})  "
                  f"fwd+bwd {s[name]['fwd_bwd_s'] * 1e3:6.2f} ms (cpu {s[name]['fwd_bwd_cpu_s'] * 1e3:6.2f})")
    print("load average", load_before, "->", record["load_average_after"])
    if not a.no_write:
        print(write_result(a.name, record))


if __name__ == "__main__":
    main()
