"""Issue 17's results: torchrun DDP/FSDP vs one process, LoRA fine-tuning, distillation (CPU).

Runs the real commands (as README.md documents them) one after the other and writes
experiments/results/scaleout.json; experiments/results/scaleout.md reads it. Run from the
repository root (Tiny Shakespeare in SOSM_DATA_DIR or its cache):

    python experiments/scaleout.py --runs runs/scaleout            # everything, about an hour on 2 busy cores
    python experiments/scaleout.py --runs runs/scaleout --only ddp # one part: base, ddp, lora, distill
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

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "experiments" / "results" / "scaleout.json"
CONFIGS = REPO / "experiments" / "configs"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
SOSM = [sys.executable, "-m", "sosm.cli"]


def command(argv: list, threads: int = None) -> dict:
    """Run ``argv`` from the repository root; returns its wall time, exit code and the command line."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # torchrun gives each rank 1 thread
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    shown = " ".join(["OMP_NUM_THREADS=%d" % threads] if threads else []) + " " + " ".join(
        a.replace(sys.executable, "python") for a in argv)
    print(f"$ {shown.strip()}", flush=True)
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=REPO, env=env)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {shown}")
    return {"command": shown.strip(), "wall_s": round(wall, 2)}


def records(run: Path) -> list:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]


def train_losses(run: Path) -> dict:
    return {r["step"]: r["loss"] for r in records(run) if r["kind"] == "train"}


def evals(run: Path) -> list:
    return [{k: r[k] for k in ("step", "train_loss", "val_loss")} for r in records(run) if r["kind"] == "eval"]


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def base(runs: Path) -> dict:
    """The Shakespeare hybrid: the base of the LoRA run and the teacher of the distillation."""
    out = runs / "hybrid"
    step = command(SOSM + ["train", "--config", "experiments/configs/shakespeare_char_cpu_hybrid.yaml", "--out",
                           str(out), "--max-steps", "500", "--no-progress"], threads=1)
    return {**step, "parameters": summary(out)["parameters"], "evals": evals(out)}


def ddp(runs: Path) -> dict:
    config = "experiments/configs/scaleout_ddp.yaml"
    parts = {}
    for name, argv, threads in [
        ("one_process_2_threads", SOSM + ["train", "--config", config, "--out", str(runs / "single2")], 2),
        ("one_process_1_thread", SOSM + ["train", "--config", config, "--out", str(runs / "single1")], 1),
        ("ddp_2_processes", TORCHRUN + ["-m", "sosm.cli", "train", "--config", config, "--out", str(runs / "ddp")],
         None),
        ("fsdp_2_processes", TORCHRUN + ["-m", "sosm.cli", "train", "--config", config, "--out", str(runs / "fsdp"),
                                         "--distributed", "fsdp"], None),
    ]:
        run = Path(argv[argv.index("--out") + 1])
        step = command(argv + ["--no-progress"], threads)
        s = summary(run)
        parts[name] = {**step, "train_wall_s": s["wall_s"], "tokens_per_s": s["tokens_per_s"], "evals": evals(run),
                       "losses": train_losses(run)}
    return compare(parts)


def compare(parts: dict) -> dict:
    """Per-step losses of each run against the one-process run: the largest relative difference, over the
    first 20 steps (ANCHORS' bar) and over the whole run; wall-time ratios."""
    reference = parts["one_process_2_threads"]["losses"]
    for name, part in parts.items():
        losses = part.pop("losses")
        differences = {s: abs(losses[s] - reference[s]) / abs(reference[s]) for s in reference}
        part["max_relative_difference_first_20_steps"] = max(differences[s] for s in range(1, 21))
        part["max_relative_difference_vs_one_process"] = max(differences.values())
        part["first_last_loss"] = [losses[1], losses[max(losses)]]
        for anchor in ("one_process_2_threads", "one_process_1_thread"):
            part[f"wall_ratio_vs_{anchor}"] = part["train_wall_s"] / parts[anchor]["train_wall_s"]
    return parts


def lora(runs: Path) -> dict:
    out = runs / "lora_default"
    step = command(SOSM + ["finetune", "--checkpoint", str(runs / "hybrid"), "--config",
                           "experiments/configs/scaleout_lora.yaml", "--out", str(out), "--no-progress"], threads=1)
    result = json.loads((out / "finetune_result.json").read_text())
    from sosm.data import default_corpus

    text = default_corpus()  # its validation split, as the fine-tuning run cuts it (val_fraction 0.1)
    (runs / "default_val.txt").write_text(text[int(len(text) * 0.9):], encoding="utf-8")
    command(SOSM + ["eval", "--checkpoint", str(runs / "hybrid"), "--text-file", str(runs / "default_val.txt"),
                    "--json", str(runs / "base_on_default.json"), "--no-progress"])
    command(SOSM + ["eval", "--checkpoint", str(out / "merged"), "--json", str(runs / "lora_eval.json"),
                    "--no-progress"])
    return {**step, **{k: result[k] for k in ("trainable", "total", "share", "before", "after", "steps", "lora")},
            "full_val_loss_before": json.loads((runs / "base_on_default.json").read_text())["loss"],
            "full_val_loss_after": json.loads((runs / "lora_eval.json").read_text())["loss"],
            "evals": evals(out)}


def distill(runs: Path) -> dict:
    parts = {}
    parts["distilled"] = command(SOSM + ["distill", "--teacher", str(runs / "hybrid"), "--config",
                                         "experiments/configs/scaleout_distill.yaml", "--out",
                                         str(runs / "distilled"), "--no-progress"], threads=1)
    parts["scratch"] = command(SOSM + ["train", "--config", "experiments/configs/scaleout_student.yaml", "--out",
                                       str(runs / "scratch"), "--no-progress"], threads=1)
    for name in ("distilled", "scratch"):
        run = runs / name
        command(SOSM + ["eval", "--checkpoint", str(run), "--json", str(runs / f"{name}_eval.json"), "--no-progress"])
        parts[name].update(parameters=summary(run)["parameters"], evals=evals(run),
                           full_val_loss=json.loads((runs / f"{name}_eval.json").read_text())["loss"])
    command(SOSM + ["eval", "--checkpoint", str(runs / "hybrid"), "--json", str(runs / "teacher_eval.json"),
                    "--no-progress"])
    parts["teacher_full_val_loss"] = json.loads((runs / "teacher_eval.json").read_text())["loss"]
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/scaleout", help="where the runs go")
    parser.add_argument("--only", choices=("base", "ddp", "lora", "distill"), action="append")
    args = parser.parse_args()
    runs = Path(args.runs).resolve()
    runs.mkdir(parents=True, exist_ok=True)
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results["environment"] = {"torch": torch.__version__, "python": platform.python_version(),
                              "cpus": os.cpu_count(), "machine": platform.machine(),
                              "load_average_at_start": os.getloadavg()}
    for part in args.only or ("base", "ddp", "lora", "distill"):
        results[part] = globals()[part](runs)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
