"""Collect routed runs (and their baselines) into one JSON and a markdown table.

For each run folder: the config name, total and *active* parameters (an MoE layer counts its k
experts, or ``moe_capacity * k`` on average for expert choice, and its router), the train loss at
every log record, the evaluations, tokens/s, wall time, the last routing record, and, when the
folder holds ``eval.json`` (``sosm eval --leak-check --json RUN/eval.json``), the loss over the
whole validation split and the leak check.

    python experiments/analysis/routing_results.py /tmp/runs/transformer /tmp/runs/transformer_moe_top2 \\
        --json experiments/results/routing_shakespeare_cpu.json
"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from sosm.model import SOSMConfig, param_count
from sosm.train import TrainConfig


def active_parameters(config: SOSMConfig) -> int:
    """Parameters one token uses: the total minus the experts a token does not visit (on average)."""
    total = param_count(config)
    if not config.moe_experts:
        return total
    hidden, d = config.moe_expert_hidden, config.d_model
    per_expert = 2 * d * hidden + hidden + d
    layers = sum(1 for name in config.layer_types if "attention" in name)  # the blocks with an MLP slot
    visited = config.moe_k * (config.moe_capacity if config.moe_routing == "expert_choice" else 1.0)
    return round(total - layers * (config.moe_experts - visited) * per_expert)


def collect(run: Path) -> dict:
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    summary = json.loads((run / "summary.json").read_text())
    start = next(r for r in records if r["kind"] == "event" and r.get("event") == "start")
    train = TrainConfig.from_dict(start["config"])
    model = SOSMConfig.from_dict({**train.model, "vocab_size": 256, "max_seq_len": train.data.block_size})
    routing = [r for r in records if r["kind"] == "routing"]
    evaluation = json.loads((run / "eval.json").read_text()) if (run / "eval.json").is_file() else {}
    leak = evaluation.get("leak_check")
    return {"name": summary["name"], "layer_types": list(model.layer_types), "parameters": summary["parameters"],
            "active_parameters": active_parameters(model), "steps": summary["steps"],
            "train_loss": {r["step"]: round(r["loss"], 4) for r in records if r["kind"] == "train"},
            "evals": [{k: r[k] for k in ("step", "train_loss", "val_loss")} for r in records if r["kind"] == "eval"],
            "final_val_loss": summary["final_val_loss"], "tokens_per_s": round(summary["tokens_per_s"]),
            "wall_s": round(summary["wall_s"], 1), "last_routing": routing[-1] if routing else None,
            "whole_val_loss": evaluation.get("loss"), "bits_per_byte": evaluation.get("bits_per_byte"),
            "leak_check": None if leak is None else {"passed": leak["passed"], "max_abs_diff": max(leak["max_abs_diff"])}}


def table(runs: list) -> str:
    rows = ["| run | layers | params | active params | steps | train loss (first logged batch -> last) | val loss (estimate, "
            "last eval) | val loss (whole split) | leak check | tokens/s | routing at the last step |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        losses = list(r["train_loss"].values())
        route = ""
        if r["last_routing"]:
            dropped = [v for k, v in r["last_routing"].items() if k.endswith(".dropped")]
            through = [v for k, v in r["last_routing"].items() if k.endswith(".through")]
            if dropped:
                route += f"dropped {min(dropped):.3f}–{max(dropped):.3f} "
            if through:
                route += f"through {min(through):.3f}–{max(through):.3f}"
        kinds = "".join({"attention": "T", "graph_attention": "A", "mamba": "M"}.get(n.removeprefix("mod:"), "?")
                        + ("'" if n.startswith("mod:") else "") for n in r["layer_types"])
        rows.append(f"| {r['name']} | {kinds} | {r['parameters']:,} | {r['active_parameters']:,} | {r['steps']} "
                    f"| {losses[0]:.3f} -> {losses[-1]:.3f} | {r['final_val_loss']:.4f} "
                    f"| {'' if r['whole_val_loss'] is None else format(r['whole_val_loss'], '.4f')} "
                    f"| {'' if r['leak_check'] is None else 'PASS' if r['leak_check']['passed'] else 'FAIL'} "
                    f"| {r['tokens_per_s']:,} "
                    f"| {route.strip()} |")
    return "\n".join(rows)


def curve_table(runs: list) -> str:
    """Validation estimate at every evaluation, one row per run."""
    steps = sorted({e["step"] for r in runs for e in r["evals"]})
    rows = ["| run | " + " | ".join(f"{s:,}" for s in steps) + " |", "|---|" + "---|" * len(steps)]
    for r in runs:
        by_step = {e["step"]: e["val_loss"] for e in r["evals"]}
        rows.append(f"| {r['name']} | " + " | ".join(f"{by_step[s]:.4f}" if s in by_step else "" for s in steps) + " |")
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders (log.jsonl + summary.json)")
    parser.add_argument("--json", help="write the collected figures here")
    args = parser.parse_args(argv)
    runs = [collect(Path(run)) for run in args.runs]
    print(table(runs))
    print()
    print(curve_table(runs))
    if args.json:
        out = {"python": platform.python_version(), "torch": torch.__version__, "runs": runs}
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
