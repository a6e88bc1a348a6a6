"""Training throughput (fwd + bwd + AdamW) of the hybrid with the kernels vs the reference path.

Issue 4 ("Also report training throughput of the hybrid model with the kernels vs the reference
path at T=2k/8k/32k") and the "Training throughput" table of ANCHORS.md. For every sequence
length T (batch ``max(1, tokens_per_step // T)``, so 16,384 tokens per step, and one sequence of
32,768 tokens at T=32k) it times, in one process, with repeats interleaved across models:

- ``transformer``: the same-harness Transformer (``F.scaled_dot_product_attention``, causal; flash
  on CUDA in bf16), the anchor every other row is divided by;
- ``mamba``: pure Mamba (TopologicalMamba layers, ``sosm.kernels.selective_scan``) matched to the
  Transformer's parameter count;
- ``hybrid``: ``SOSMModel`` hybrid (graph attention + Mamba, graph built every step) matched to the
  Transformer's parameter count, kernels dispatched as in training (Triton on CUDA);
- ``hybrid_reference``: the same hybrid forced onto the PyTorch path with
  ``sosm.kernels._backend.force_backend`` (``--reference-backend``, default ``vectorized``: the
  vectorised graph attention and scan, and the dense top-k oracle);
- optional ``mamba_reference`` (the Mamba baseline on the PyTorch scan).

Every row records the kernel path each op actually resolved to (on CPU the ``hybrid`` row runs
the vectorised graph attention and the native C scan: there is no Triton kernel off CUDA, so
kernels-vs-reference is a GPU figure). One step = forward under bf16 autocast (CUDA; fp32 on CPU) + cross-entropy +
backward + grad-norm clip 1.0 + AdamW (fused on CUDA) + ``zero_grad``. Tokens/s are over the
timed steps after warm-up (CUDA events, then a synchronize; ``perf_counter`` and process CPU
time on CPU). Peak memory: ``torch.cuda.max_memory_allocated`` during the timed steps, also as
an estimate of the model alone (minus the other models' resident weights and optimiser state);
on CPU the process's peak RSS so far. An out-of-memory error is recorded as ``status: "oom"``
(and, when other models were resident, the model is retried alone), never a crash.

Sizes (``--size``): ``anchor`` is ANCHORS.md's (Transformer 12 layers, d=768, 12 heads, GPT-2
vocabulary 50,257 untied: 162.2M parameters; the hybrid and Mamba matched to that count at
d=768 by depth), T in {2048, 8192, 32768}; ``tiny`` (d=64, vocabulary 256, T in {128, 256}, 1,024
tokens per step) runs on a CPU in well under a minute and is the smoke test.

Usage:
    python experiments/bench/bench_train_throughput.py --size anchor --name train_throughput_h100
    python experiments/bench/bench_train_throughput.py --size tiny --name train_throughput_cpu_tiny
    # one T per command (10-minute limits): --lengths 32768 --name train_throughput_h100_32k
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import os
import resource
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from experiments.bench.common import write_result  # noqa: E402
from sosm.kernels._backend import force_backend, resolve  # noqa: E402
from sosm.kernels.selective_scan import scan_path  # noqa: E402
from sosm.model import SOSMConfig, SOSMModel, matched_config, param_count  # noqa: E402

PRESETS = {
    "anchor": {"model": {"d_model": 768, "n_layers": 12, "n_heads": 12, "vocab_size": 50257,
                         "tie_embeddings": False},
               "lengths": (2048, 8192, 32768), "tokens_per_step": 16384},
    "tiny": {"model": {"d_model": 64, "n_layers": 4, "n_heads": 2, "vocab_size": 256, "tie_embeddings": True},
             "lengths": (128, 256), "tokens_per_step": 1024},
}
# variant -> (SOSMConfig.model, forced backend: None = dispatch as in training, "ref" = --reference-backend)
VARIANTS = {"transformer": ("transformer", None), "mamba": ("mamba", None), "hybrid": ("hybrid", None),
            "hybrid_reference": ("hybrid", "ref"), "mamba_reference": ("mamba", "ref")}
DEFAULT_VARIANTS = ("transformer", "mamba", "hybrid", "hybrid_reference")
ANCHOR = "transformer"
OPS = ("graph_attention", "selective_scan", "topk_similarity")
# ANCHORS.md, "Training throughput" (H100 80GB, bf16, 16k tokens per step), tokens/s.
ANCHORS_MD = {"device": "NVIDIA H100 80GB HBM3", "tokens_per_s": {
    "transformer_12L_d768_162M_sdpa_flash": {"2048": 293e3, "8192": 231e3, "32768": 128e3},
    "mamba_24L_d768_168M_mamba_ssm": {"2048": 113e3, "8192": 109e3, "32768": 126e3}},
    "bar": "hybrid at matched size >= 1x the Transformer at T=8192, >= 2x at T=32768"}


def is_oom(err: BaseException) -> bool:
    """True for an allocator failure (CUDA OOM, or the CPU allocator giving up)."""
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def match_to(reference: SOSMConfig, model: str, tolerance: float = 0.05) -> tuple[SOSMConfig, str]:
    """``model`` config at ``reference``'s parameter count: ``(config, how it was found)``."""
    return matched_config(reference, model, tolerance), "sosm.model.matched_config"


def variant_configs(size: str, variants, max_len: int) -> dict:
    """``{variant: (SOSMConfig, match method)}`` for a preset, the Transformer as the reference."""
    reference = SOSMConfig(model="transformer", max_seq_len=max_len, **PRESETS[size]["model"])
    matched = {"transformer": (reference, "reference")}
    out = {}
    for name in variants:
        kind = VARIANTS[name][0]
        if kind not in matched:
            matched[kind] = match_to(reference, kind)
        out[name] = matched[kind]
    return out


def resolved_paths(kind: str, device: torch.device, forced) -> dict:
    """The path each kernel op of this model takes (what ``sosm.kernels`` dispatch will pick)."""
    if kind == "transformer":
        return {"attention": "torch sdpa (causal)"}
    ops = ("selective_scan",) if kind == "mamba" else OPS
    with (force_backend(forced) if forced else contextlib.nullcontext()):
        paths = {op: resolve(op, device) for op in ops}
        paths["selective_scan"] = scan_path(device)  # on CPU: "native" (compiled C) unless disabled/unbuildable
    if "topk_similarity" in paths and device.type != "cuda":  # SOSMModel.graph_builder passes it on CUDA only
        paths["topk_similarity"] = "not called (sosm.graph blocked top-k off CUDA)"
    return paths


def state_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the parameters and the optimiser state (what stays resident between steps)."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    for state in optimizer.state.values():
        total += sum(t.numel() * t.element_size() for t in state.values() if torch.is_tensor(t))
    return total


class Runner:
    """One model at one T: its optimiser, fixed random batch and ``step()``."""

    def __init__(self, name: str, config: SOSMConfig, match: str, seq_len: int, batch: int,
                 device: torch.device, reference_backend: str, seed: int = 0):
        self.name, self.seq_len, self.batch, self.device = name, seq_len, batch, device
        kind, forced = VARIANTS[name]
        self.forced = reference_backend if forced else None
        self.config = replace(config, max_seq_len=seq_len)
        torch.manual_seed(seed)
        self.model = SOSMModel(self.config).to(device).train()
        self.params = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        fused = {"fused": True} if device.type == "cuda" else {}
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4, betas=(0.9, 0.95),
                                           weight_decay=0.1, **fused)
        gen = torch.Generator(device=device).manual_seed(seed)
        self.tokens = torch.randint(0, self.config.vocab_size, (batch, seq_len + 1), generator=gen, device=device)
        self.paths = resolved_paths(kind, device, self.forced)
        self.info = {"model": name, "kind": kind, "T": seq_len, "batch": batch, "tokens_per_step": batch * seq_len,
                     "params": self.params, "matched_by": match,
                     "config": {"n_layers": self.config.n_layers, "d_model": self.config.d_model,
                                "n_heads": self.config.n_heads, "layer_types": self.config.layer_types,
                                "vocab_size": self.config.vocab_size, "d_state": self.config.d_state,
                                "expand": self.config.expand, "positional": self.config.positional,
                                "graph_k": self.config.graph.k, "graph_window": self.config.graph.window,
                                "num_landmarks": self.config.graph.num_landmarks,
                                "tie_embeddings": self.config.tie_embeddings},
                     "forced_backend": self.forced, "kernel_paths": self.paths}

    def step(self) -> torch.Tensor:
        """fwd (bf16 autocast on CUDA) + cross-entropy + bwd + clip + AdamW; returns the loss (no sync)."""
        x = self.tokens
        backend = force_backend(self.forced) if self.forced else contextlib.nullcontext()
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda"
                    else contextlib.nullcontext())
        with backend:
            with autocast:
                logits, _ = self.model(x[:, :-1])
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def timed(self, steps: int) -> dict:
        """Run ``steps`` steps; wall seconds (CUDA events on GPU), process CPU seconds, last loss."""
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            loss = self.step()
        if cuda:
            end.record()
            end.synchronize()
            seconds = start.elapsed_time(end) / 1e3
        else:
            seconds = time.perf_counter() - t0
        return {"seconds": seconds, "cpu_seconds": time.process_time() - c0, "loss": float(loss)}

    def release(self) -> None:
        del self.model, self.optimizer, self.tokens


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def failure(err: BaseException) -> tuple[str, str]:
    """``("oom" | "error", message)`` for an exception raised while building or stepping a model.

    Both are recorded in the model's row and the other models go on (a GPU session is short);
    the run prints every failure and ``main`` exits non-zero with ``--strict`` on an ``"error"``.
    """
    text = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
    if is_oom(err):
        return "oom", f"{type(err).__name__}: {text}"
    frames = traceback.extract_tb(err.__traceback__)[-4:]
    where = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames))
    return "error", f"{type(err).__name__}: {text} (at {where})"


def measure(names, configs, seq_len: int, batch: int, device: torch.device, args) -> list[dict]:
    """Rows for every model at one T, repeats interleaved across the models built side by side."""
    cuda = device.type == "cuda"
    runners, rows = {}, {}
    for name in names:
        failed = None
        try:
            runners[name] = Runner(name, *configs[name], seq_len, batch, device, args.reference_backend, args.seed)
        except Exception as err:  # noqa: BLE001 - recorded in the row, the other models go on
            failed = failure(err)
        if failed is not None:
            rows[name] = {"model": name, "T": seq_len, "batch": batch, "status": failed[0], "phase": "build",
                          "error": failed[1], "other_models_built": len(runners)}
            free_memory(device)
    samples = {name: [] for name in runners}
    budget = {}
    resident = {}

    def fail(name, failed, phase):
        runner = runners.pop(name)
        others = sum(resident.get(n, 0) for n in runners)
        rows[name] = {**runner.info, "status": failed[0], "phase": phase, "error": failed[1],
                      "other_models_resident_bytes": others}
        runner.release()
        free_memory(device)

    for name in list(runners):  # warm-up (compiles/autotunes the kernels), sizes the timed repeats
        runner, failed = runners[name], None
        per_step = 0.0
        try:
            for _ in range(args.warmup):  # the last warm-up step (after compilation) sizes the repeats
                t0 = time.perf_counter()
                runner.step()
                if cuda:
                    torch.cuda.synchronize(device)
                per_step = time.perf_counter() - t0
        except Exception as err:  # noqa: BLE001
            failed = failure(err)  # keep the text only: the traceback holds the step's tensors
        if failed is not None:
            fail(name, failed, "warmup")
            continue
        affordable = int(args.row_budget_s // max(per_step * args.steps, 1e-9)) if args.warmup else args.repeats
        budget[name] = max(1, min(args.repeats, affordable))
    for repeat in range(args.repeats):
        for name in list(runners):
            if repeat >= budget[name]:
                continue
            runner, failed = runners[name], None
            resident[name] = state_bytes(runner.model, runner.optimizer)
            if cuda:
                torch.cuda.synchronize(device)
                allocated = torch.cuda.memory_allocated(device)
                torch.cuda.reset_peak_memory_stats(device)
            try:
                sample = runner.timed(args.steps)
            except Exception as err:  # noqa: BLE001
                failed = failure(err)
            if failed is not None:
                fail(name, failed, f"timed repeat {repeat}")
                continue
            if cuda:
                peak = torch.cuda.max_memory_allocated(device)
                others = allocated - resident[name]
                sample.update(peak_bytes=peak, peak_alone_estimate_bytes=peak - others)
            samples[name].append(sample)
    for name, runner in runners.items():
        s = samples[name]
        tokens = runner.batch * runner.seq_len * args.steps
        rates = [tokens / x["seconds"] for x in s]
        row = {**runner.info, "status": "ok", "warmup_steps": args.warmup, "timed_steps_per_repeat": args.steps,
               "repeats": len(s), "tokens_per_s": statistics.median(rates), "tokens_per_s_samples": rates,
               "step_ms": 1e3 * statistics.median(x["seconds"] for x in s) / args.steps,
               "step_cpu_ms": 1e3 * statistics.median(x["cpu_seconds"] for x in s) / args.steps,
               "last_loss": s[-1]["loss"], "load_average": os.getloadavg()}
        if cuda:
            row["peak_mem_gib"] = max(x["peak_bytes"] for x in s) / 2 ** 30
            row["peak_mem_alone_estimate_gib"] = max(x["peak_alone_estimate_bytes"] for x in s) / 2 ** 30
            row["resident_state_gib"] = resident[name] / 2 ** 30
        else:  # a shared CPU: process CPU time is disturbed less by other users than wall time
            row["tokens_per_cpu_s"] = statistics.median(tokens / max(x["cpu_seconds"], 1e-9) for x in s)
            row["peak_rss_process_so_far_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rows[name] = row
        runner.release()
    runners.clear()
    free_memory(device)
    return [rows[n] for n in names if n in rows]


def add_ratios(rows: list[dict]) -> dict:
    """Per T: each model's tokens/s over the Transformer's, and the kernels-over-reference speed-up.

    Wall-time ratios (keys without suffix) and, on CPU, the same from process CPU time
    (``..._cpu_time`` keys, ``*_cpu`` row fields).
    """
    ratios = {}
    by = {(r["model"], r["T"]): r for r in rows if r.get("status") == "ok"}
    for measure_key, suffix in (("tokens_per_s", ""), ("tokens_per_cpu_s", "_cpu")):
        for (name, seq_len), row in by.items():
            if measure_key not in row:
                continue
            tag = f"T{seq_len}" + ("_cpu_time" if suffix else "")
            anchor = by.get((ANCHOR, seq_len))
            if anchor is not None:
                row["speed_ratio_to_transformer" + suffix] = row[measure_key] / anchor[measure_key]
                if name != ANCHOR:
                    ratios[f"{name}_over_transformer_{tag}"] = row["speed_ratio_to_transformer" + suffix]
            if name in ("hybrid", "mamba") and (f"{name}_reference", seq_len) in by:
                ref = by[(f"{name}_reference", seq_len)]
                row["speedup_over_reference_path" + suffix] = row[measure_key] / ref[measure_key]
                ratios[f"{name}_kernels_over_reference_{tag}"] = row["speedup_over_reference_path" + suffix]
    return ratios


def write(record: dict, name: str, out) -> Path:
    """``results/<name>.json`` via ``common.write_result``, or the same payload at ``out``."""
    return write_result(name, record, out)


def git_commit() -> str | None:
    """The repository's HEAD commit (short), or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=sorted(PRESETS), default="anchor", help="model sizes and default lengths")
    p.add_argument("--lengths", type=int, nargs="+", default=None, help="sequence lengths T (default: the preset's)")
    p.add_argument("--tokens-per-step", type=int, default=None,
                   help="batch = max(1, this // T) (default: the preset's, 16384 for anchor)")
    p.add_argument("--models", nargs="+", default=list(DEFAULT_VARIANTS), choices=sorted(VARIANTS))
    p.add_argument("--reference-backend", choices=("vectorized", "reference"), default="vectorized",
                   help="path forced for the *_reference rows (sosm.kernels._backend.force_backend)")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per model before timing")
    p.add_argument("--steps", type=int, default=3, help="timed steps per repeat")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats (median reported)")
    p.add_argument("--row-budget-s", type=float, default=120.0,
                   help="fewer repeats (at least 1) for a model whose warm-up step says its repeats exceed this")
    p.add_argument("--threads", type=int, default=1, help="torch threads (CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default=None, help="result name (default train_throughput_<device>_<size>)")
    p.add_argument("--out", default=None, help="write the JSON here instead of experiments/bench/results/<name>.json")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--strict", action="store_true", help="exit non-zero when a model failed other than by OOM")
    a = p.parse_args(argv)
    for flag in ("warmup",):
        if getattr(a, flag) < 0:
            p.error(f"--{flag} must be >= 0")
    for flag in ("steps", "repeats", "threads"):
        if getattr(a, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be >= 1")
    return a


def main(argv=None) -> dict:
    a = parse_args(argv)
    torch.set_num_threads(a.threads)
    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    preset = PRESETS[a.size]
    lengths = a.lengths or list(preset["lengths"])
    tokens = a.tokens_per_step or preset["tokens_per_step"]
    if min(lengths) < 1 or tokens < 1:
        raise ValueError(f"--lengths and --tokens-per-step must be >= 1, got {lengths} and {tokens}")
    names = [ANCHOR] + [m for m in dict.fromkeys(a.models) if m != ANCHOR]
    name = a.name or f"train_throughput_{device.type}_{a.size}"
    configs = variant_configs(a.size, names, max(lengths))
    record = {"commit": git_commit(), "size": a.size, "device_type": device.type, "lengths": lengths,
              "tokens_per_step_target": tokens,
              "batch_rule": "batch = max(1, tokens_per_step // T)", "models": names,
              "reference_backend": a.reference_backend, "threads": a.threads, "warmup_steps": a.warmup,
              "timed_steps_per_repeat": a.steps, "repeats": a.repeats,
              "step": "fwd (bf16 autocast on CUDA, fp32 on CPU) + cross-entropy + bwd + clip 1.0 + AdamW "
                      "(fused on CUDA) + zero_grad; random token batch fixed per (model, T)",
              "anchor": "transformer, same process, repeats interleaved", "timer": (
                  "CUDA events over the timed steps, then synchronize" if device.type == "cuda"
                  else "perf_counter wall over the timed steps (process CPU time beside it)"),
              "params": {n: {"params": param_count(c), "n_layers": c.n_layers, "d_model": c.d_model,
                             "matched_by": how} for n, (c, how) in configs.items()},
              "anchors_md": ANCHORS_MD, "load_average_before": os.getloadavg(), "rows": []}
    for seq_len in lengths:
        batch = max(1, tokens // seq_len)
        rows = measure(names, configs, seq_len, batch, device, a)
        oom_crowded = [r["model"] for r in rows if r["status"] == "oom"] if len(names) > 1 else []
        if oom_crowded:  # retry alone: the others' weights and optimiser state may have been in the way
            alone = {r["model"]: {**r, "alone": True} for r in measure(oom_crowded, configs, seq_len, batch, device, a)}
            rows = [alone.get(r["model"], r) if r["model"] in oom_crowded else r for r in rows]
        record["rows"].extend(rows)
        for r in rows:
            cpu = f"  cpu {r['step_cpu_ms']:9.1f} ms" if device.type == "cpu" and r["status"] == "ok" else ""
            rate = f"{r['tokens_per_s']:12,.0f} tok/s  step {r['step_ms']:9.1f} ms{cpu}" if r["status"] == "ok" \
                else f"{r['status'].upper()} ({r.get('phase')}): {r.get('error')}"
            print(f"T={seq_len:6d} B={batch:4d} {r['model']:18s} {rate}", flush=True)
        record["ratios"] = add_ratios(record["rows"])
        record["load_average_after"] = os.getloadavg()
        if not a.no_write:
            path = write(record, name, a.out)
    for key, value in record["ratios"].items():
        print(f"{key:48s} {value:8.3f}")
    print("load average", record["load_average_before"], "->", record["load_average_after"])
    if not a.no_write:
        print(path)
    errors = [f"{r['model']} T={r['T']}: {r['error']}" for r in record["rows"] if r["status"] == "error"]
    if errors and a.strict:
        raise SystemExit("failed (not out of memory): " + "; ".join(errors))
    return record


if __name__ == "__main__":
    main()
