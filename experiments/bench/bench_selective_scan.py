"""Selective scan on one GPU: ours (Triton) beside mamba_ssm's CUDA kernel and the PyTorch paths.

Shapes: Mamba-1 layer, batch 1, D=1536, N=16, bf16 u/delta/z/B/C, float32 A/D/delta_bias,
softplus on delta + delta_bias, gate z and skip D on. mamba_ssm is timed only when its compiled
extension ``selective_scan_cuda`` imports (this repository neither ships nor builds it).
Writes JSON with the device, versions, shapes, every timing and the ratios.

    python experiments/bench/bench_selective_scan.py --out experiments/bench/results/selective_scan_h100.json
"""
from __future__ import annotations

import argparse
import json
import platform

import torch
import triton
from triton.testing import do_bench

from sosm.kernels.selective_scan import selective_scan_ref, selective_scan_vectorized
from sosm.kernels.selective_scan import triton_scan


def make_inputs(length, dim=1536, d_state=16, batch=1, dtype=torch.bfloat16, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    rand = lambda *s: torch.randn(*s, device="cuda", generator=g)  # noqa: E731
    return dict(u=rand(batch, dim, length).to(dtype), delta=(0.5 * rand(batch, dim, length)).to(dtype),
                A=-torch.exp(0.5 * rand(dim, d_state)), B=rand(batch, d_state, length).to(dtype),
                C=rand(batch, d_state, length).to(dtype), D=rand(dim), z=rand(batch, dim, length).to(dtype),
                delta_bias=0.5 * rand(dim) - 1.0)


def time_ms(fn, warmup=25, rep=100):
    return do_bench(fn, warmup=warmup, rep=rep, return_mode="median")


def ours_fns(inputs):
    grads_of = [inputs[k].detach().requires_grad_() for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    kw = dict(zip(("u", "delta", "A", "B", "C", "D", "z", "delta_bias"), grads_of))
    dout = torch.randn_like(inputs["u"])

    def fwd():
        with torch.no_grad():
            return triton_scan.selective_scan_triton(**inputs, delta_softplus=True)

    def fwd_bwd():
        out = triton_scan.selective_scan_triton(**kw, delta_softplus=True)
        return torch.autograd.grad(out, grads_of, dout)
    return fwd, fwd_bwd


def mamba_fns(inputs):
    import selective_scan_cuda  # built beside the benchmark, never part of this repository
    args = [inputs[k] for k in ("u", "delta", "A")] + [inputs["B"][:, None], inputs["C"][:, None],
                                                        inputs["D"], inputs["z"], inputs["delta_bias"]]
    dout = torch.randn_like(inputs["u"])

    def fwd():
        return selective_scan_cuda.fwd(*args, True)

    def fwd_bwd():
        out, x, *rest = selective_scan_cuda.fwd(*args, True)
        return selective_scan_cuda.bwd(*args, dout, x, out, None, True, False)
    return fwd, fwd_bwd


def sweep(length, results):
    """Pick the forward and backward tile configs at one length; returns the best of each."""
    inputs = make_inputs(length)
    best = {}
    for phase, grid in (("fwd", [(1, 128, 4), (1, 256, 4), (1, 512, 8), (2, 64, 4), (2, 128, 4), (4, 64, 4)]),
                        ("bwd", [(1, 32, 4), (1, 64, 4), (1, 128, 4), (2, 32, 4), (2, 64, 4), (1, 128, 8)])):
        for block_d, block_l, warps in grid:
            triton_scan.CONFIG[phase] = dict(block_d=block_d, block_l=block_l, num_warps=warps)
            if phase == "bwd":  # the backward reuses the forward's tiles for its checkpoints
                triton_scan.CONFIG["fwd"] = dict(best["fwd"][0], block_l=block_l)
            fwd, fwd_bwd = ours_fns(inputs)
            try:
                ms = time_ms(fwd if phase == "fwd" else fwd_bwd, warmup=20, rep=60)
            except Exception as err:  # a config that fails to compile (registers, shared memory)
                results["sweep"].append(dict(phase=phase, config=triton_scan.CONFIG[phase], error=str(err)[:200]))
                continue
            results["sweep"].append(dict(phase=phase, length=length, config=dict(triton_scan.CONFIG[phase]), ms=ms))
            print(f"sweep {phase} {block_d=} {block_l=} {warps=}: {ms:.3f} ms", flush=True)
            if phase not in best or ms < best[phase][1]:
                best[phase] = (dict(triton_scan.CONFIG[phase]), ms)
    triton_scan.CONFIG["fwd"] = dict(best["fwd"][0], block_l=best["bwd"][0]["block_l"])
    triton_scan.CONFIG["bwd"] = best["bwd"][0]
    return triton_scan.CONFIG


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--lengths", default="2048,8192,32768")
    parser.add_argument("--no-sweep", action="store_true")
    args = parser.parse_args()
    lengths = [int(x) for x in args.lengths.split(",")]
    props = torch.cuda.get_device_properties(0)
    results = dict(device=props.name, sms=props.multi_processor_count, torch=torch.__version__,
                   triton=triton.__version__, cuda=torch.version.cuda, python=platform.python_version(),
                   shapes=dict(batch=1, dim=1536, d_state=16, dtype="bfloat16", delta_softplus=True,
                               D=True, z=True, delta_bias=True, lengths=lengths),
                   timing="triton.testing.do_bench median, ms; same process, same inputs",
                   sweep=[], rows=[])
    try:
        import selective_scan_cuda  # noqa: F401
        have_mamba = True
    except ImportError as err:
        have_mamba = False
        results["mamba_ssm"] = f"not available: {err}"
    warm = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(200):  # bring the clocks up before the first timing
        warm @ warm
    torch.cuda.synchronize()
    if not args.no_sweep:
        results["config"] = {k: dict(v) for k, v in sweep(8192, results).items()}
    for length in lengths:
        inputs = make_inputs(length)
        row = dict(length=length)
        fwd, fwd_bwd = ours_fns(inputs)
        row["ours_fwd_ms"], row["ours_fwd_bwd_ms"] = time_ms(fwd), time_ms(fwd_bwd)
        ours_out = fwd().float()
        ref_in = {k: v.float() for k, v in inputs.items()}
        if length <= 2048:
            exact = selective_scan_ref(**ref_in, delta_softplus=True).float()
            row["ours_rel_err_vs_fp32_loop"] = float((ours_out - exact).norm() / exact.norm())
        if have_mamba:
            m_fwd, m_fwd_bwd = mamba_fns(inputs)
            row["mamba_fwd_ms"], row["mamba_fwd_bwd_ms"] = time_ms(m_fwd), time_ms(m_fwd_bwd)
            m_out = m_fwd()[2].float()
            row["ours_vs_mamba_rel_diff"] = float((ours_out - m_out).norm() / m_out.norm())
            row["ratio_fwd_vs_mamba"] = row["ours_fwd_ms"] / row["mamba_fwd_ms"]
            row["ratio_fwd_bwd_vs_mamba"] = row["ours_fwd_bwd_ms"] / row["mamba_fwd_bwd_ms"]
        if length <= 8192:
            with torch.no_grad():
                row["torch_loop_fwd_ms"] = time_ms(lambda: selective_scan_ref(**inputs, delta_softplus=True),
                                                   warmup=1, rep=1)
                row["torch_vectorized_fwd_ms"] = time_ms(
                    lambda: selective_scan_vectorized(**inputs, delta_softplus=True), warmup=1, rep=1)
        results["rows"].append(row)
        print(json.dumps(row), flush=True)
    with open(args.out, "w") as fh:
        json.dump(results, fh, indent=1)
    print(f"{'L':>6} {'ours fwd':>9} {'mamba fwd':>9} {'ours f+b':>9} {'mamba f+b':>9} {'ratio f+b':>9}")
    for r in results["rows"]:
        print(f"{r['length']:>6} {r['ours_fwd_ms']:>9.3f} {r.get('mamba_fwd_ms', float('nan')):>9.3f} "
              f"{r['ours_fwd_bwd_ms']:>9.3f} {r.get('mamba_fwd_bwd_ms', float('nan')):>9.3f} "
              f"{r.get('ratio_fwd_bwd_vs_mamba', float('nan')):>9.3f}")


if __name__ == "__main__":
    main()
