"""Tiny Shakespeare, character level, CPU: train the hybrid, the baselines, every mixer and the LEAKY control.

Runs the models one after another (never in parallel) through the real command line
(``sosm train`` then ``sosm eval --leak-check``), then writes
``experiments/results/<name>.json``. ``--models`` takes any ``experiments/configs/shakespeare_char_cpu_<model>.yaml``.

    python experiments/train_shakespeare.py                   # 2,000 steps each (the configs' max_steps)
    python experiments/train_shakespeare.py --max-steps 500   # shortened, the SAME for every model
    python experiments/train_shakespeare.py --models mamba2 rwkv retnet s4 ossm cfc --name mixers_shakespeare_char_cpu
    python experiments/train_shakespeare.py --models performer cosformer sw_attention diff_attention lsh_attention \
        --name attention_family_shakespeare_char_cpu

A shortened run is recorded as such in the JSON and on the results page.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sosm.common.files import atomic_write  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "experiments" / "configs"
MODELS = ("hybrid", "transformer", "mamba", "graph_attention", "hybrid_leaky")  # the default set
#: every config of this family: mixers, ablations, context 256 (run on request: --models ... --name ...)
AVAILABLE = tuple(sorted(p.stem[len("shakespeare_char_cpu_"):] for p in CONFIGS.glob("shakespeare_char_cpu_*.yaml")))


def config_path(model: str) -> Path:
    return CONFIGS / f"shakespeare_char_cpu_{model}.yaml"


def sh(cmd: list, threads: int) -> tuple[int, float, str, float]:
    """Run ``cmd`` from the repository root: (exit status, wall seconds, combined output, peak RSS MiB or NaN).

    The peak resident memory of the process comes from GNU time (``/usr/bin/time -f %M``) when present.
    """
    print("$ " + " ".join(cmd), flush=True)
    start = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    timed = ["/usr/bin/time", "-f", "SOSM_MAXRSS_KB=%M"] + cmd if Path("/usr/bin/time").exists() else cmd
    proc = subprocess.run(timed, cwd=ROOT, text=True, capture_output=True, env=env)
    wall = time.perf_counter() - start
    output = proc.stdout + proc.stderr
    peak = float("nan")
    for line in output.splitlines():
        if line.startswith("SOSM_MAXRSS_KB="):
            peak = int(line.split("=", 1)[1]) / 1024.0
    print("\n".join(output.splitlines()[-6:]), flush=True)
    return proc.returncode, wall, output, peak


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"cpu": cpu, "cores": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform()}


def run_model(model: str, out_root: Path, max_steps, results_dir: Path, device: str, threads: int,
              eval_tokens) -> dict:
    out = out_root / model
    train = [sys.executable, "-m", "sosm.cli", "train", "--config", str(config_path(model).relative_to(ROOT)),
             "--out", str(out), "--no-progress", "--device", device]
    if max_steps is not None:
        train += ["--max-steps", str(max_steps)]
    if (out / "checkpoints").exists():
        train.append("--resume")
    load_before = os.getloadavg()
    status, wall, log, peak_mib = sh(train, threads)
    load_after = os.getloadavg()
    if status != 0:
        return {"model": model, "error": f"sosm train exited {status}", "log_tail": log[-2000:], "command": " ".join(train)}
    summary = json.loads((out / "summary.json").read_text())
    eval_json = results_dir / f".eval_{model}.json"
    evaluate = [sys.executable, "-m", "sosm.cli", "eval", "--checkpoint", str(out), "--leak-check", "--json", str(eval_json),
                "--device", device]
    if eval_tokens:
        evaluate += ["--max-tokens", str(eval_tokens)]
    eval_status, eval_wall, eval_log, _ = sh(evaluate, threads)
    if not eval_json.exists():
        return {"model": model, "error": f"sosm eval exited {eval_status}", "log_tail": eval_log[-2000:],
                "command": " ".join(evaluate), "summary": summary}
    report = json.loads(eval_json.read_text())
    eval_json.unlink()
    return {
        "model": model, "name": summary["display_name"], "leaky": summary["leaky"], "parameters": summary["parameters"],
        "steps": summary["steps"], "val_loss_estimate": summary["final_val_loss"],
        "train_loss_estimate": summary["final_train_loss"], "best_val_loss_estimate": summary["best_val_loss"],
        "val_loss_full": report["loss"], "val_bits_per_byte": report["bits_per_byte"],
        "val_tokens_scored": report["tokens"], "tokens_per_s": summary["tokens_per_s"],
        "train_wall_s": summary["wall_s"], "process_wall_s": wall, "eval_wall_s": eval_wall,
        "train_peak_rss_mib": peak_mib,
        "leak_check": report["leak_check"], "load_average_before": load_before, "load_average_after": load_after,
        "commands": [" ".join(train), " ".join(evaluate)],
    }


def render_table(record: dict) -> str:
    """The results table in Markdown (one row per run, LEAKY rows labelled)."""
    scored = (f"first {record['eval_tokens']:,} val tokens" if record.get("eval_tokens")
              else "whole val split, 111,539 tokens")
    lines = [f"| model | params | steps | val loss ({scored}) | val loss (nanoGPT-style estimate, 20 batches) "
             "| val bits/byte | tokens/s | train wall s | leak check |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in record["runs"]:
        if "error" in r:
            lines.append(f"| {r['model']} | — | — | — | — | — | — | — | {r['error']} |")
            continue
        leak = r["leak_check"]
        verdict = ("PASS" if leak["passed"] else "**FAIL (leak detected)**") + f", max Δ {leak['worst']:.2g}"
        name = f"**LEAKY** {r['model']} (graph causal=false)" if r["leaky"] else r["model"]
        lines.append(f"| {name} | {r['parameters'] / 1e6:.3f}M | {r['steps']:,} | {r['val_loss_full']:.4f} "
                     f"| {r['val_loss_estimate']:.4f} | {r['val_bits_per_byte']:.4f} | {r['tokens_per_s']:,.0f} "
                     f"| {r['train_wall_s']:.0f} | {verdict} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=AVAILABLE, metavar="MODEL",
                        help=f"configs to run (default: {' '.join(MODELS)}); any of {' '.join(AVAILABLE)}")
    parser.add_argument("--max-steps", type=int, default=None, help="same shortened step count for every model")
    parser.add_argument("--out", default="runs/shakespeare_char_cpu", help="run folders go here")
    parser.add_argument("--results", default="experiments/results", metavar="DIR",
                        help="folder the JSON goes to, as <DIR>/<name>.json (default experiments/results)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="training device (default cpu)")
    parser.add_argument("--threads", type=int, default=1,
                        help="OMP_NUM_THREADS for each run (default 1: on a shared 2-core machine two threads that "
                             "compete with other processes are several times slower; 0 leaves torch's default)")
    parser.add_argument("--eval-tokens", type=int, default=None,
                        help="score only the first N validation tokens in the final eval (default: all 111,539)")
    parser.add_argument("--name", default="shakespeare_char_cpu", help="results file stem")
    parser.add_argument("--table", action="store_true", help="only print the Markdown table of the existing JSON")
    parser.add_argument("--append", action="store_true",
                        help="keep the existing JSON's runs of other models (run the models in several invocations)")
    args = parser.parse_args(argv)
    if args.table:
        print(render_table(json.loads((ROOT / args.results / f"{args.name}.json").read_text())))
        return 0
    results_dir = ROOT / args.results
    if results_dir.suffix == ".json":
        parser.error(f"--results is a folder (the file is <folder>/{args.name}.json, named by --name), got "
                     f"{args.results!r}")
    results_dir.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    json_path = results_dir / f"{args.name}.json"
    rows = []
    if args.append and json_path.exists():
        previous = json.loads(json_path.read_text())
        started = previous["started_utc"]
        rows = [r for r in previous["runs"] if r["model"] not in args.models]
    for model in args.models:
        rows.append(run_model(model, ROOT / args.out, args.max_steps, results_dir, args.device, args.threads,
                              args.eval_tokens))
        record = {"benchmark": f"tinyshakespeare char-level (byte tokenizer), CPU-sized configs, trained on {args.device}",
                  "started_utc": started, "device": args.device, "omp_num_threads": args.threads,
                  "eval_tokens": args.eval_tokens, "cuda": torch.cuda.get_device_name() if args.device == "cuda" else None,
                  "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(),
                  "max_steps_override": args.max_steps, "runs": rows,
                  "anchors": {"nanogpt_cpu_config_val_loss": 1.8857, "nanogpt_gpu_config_val_loss": 1.4697}}
        atomic_write(json_path, json.dumps(record, indent=2) + "\n")  # after every model: partial results survive
    print(f"wrote {json_path}")
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
