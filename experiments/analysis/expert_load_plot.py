"""Expert load over training, from the ``"routing"`` records of one or more runs' ``log.jsonl``.

For every MoE layer of every run: one panel, the share of processed (token, expert) pairs each
expert took at each logged step (stacked; a balanced layer is E equal bands), with the dropped
share and the router entropy printed in the title at the last step. Mixture-of-Depths layers get
a line of the share of tokens through their block. Also prints a markdown table of the last
step's figures per layer.

    python experiments/analysis/expert_load_plot.py runs/transformer_moe_top2 runs/hybrid_moe_ec \\
        --png experiments/results/routing_expert_load.png
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def routing_records(run: Path) -> list[dict]:
    """The ``"routing"`` records of ``run/log.jsonl``, in step order."""
    lines = (run / "log.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    return sorted((r for r in records if r.get("kind") == "routing"), key=lambda r: r["step"])


def layer_series(records: list[dict]) -> dict:
    """``{layer: {stat: [value per record]}}`` with ``"step"`` in every layer's dict."""
    layers: dict = {}
    for record in records:
        for key, value in record.items():
            if key in ("kind", "step"):
                continue
            layer, _, stat = key.rpartition(".")
            series = layers.setdefault(layer, {"step": []})
            if not series["step"] or series["step"][-1] != record["step"]:
                series["step"].append(record["step"])
            series.setdefault(stat, []).append(value)
    return layers


def last_step_table(runs: dict) -> str:
    rows = ["| run | layer | step | load per expert (share) | max / mean load | dropped | unrouted | entropy (nats) "
            "| MoD through |", "|---|---|---|---|---|---|---|---|---|"]
    for run, layers in runs.items():
        for layer, s in layers.items():
            if "load" in s:
                load = s["load"][-1]
                peak = max(load) * len(load)
                rows.append(f"| {run} | {layer} | {s['step'][-1]} | {' '.join(f'{v:.3f}' for v in load)} | {peak:.2f} "
                            f"| {s['dropped'][-1]:.3f} | {s['unrouted'][-1]:.3f} | {s['entropy'][-1]:.3f} | |")
            elif "through" in s:
                rows.append(f"| {run} | {layer} | {s['step'][-1]} | | | | | | {s['through'][-1]:.3f} |")
    return "\n".join(rows)


def plot(runs: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(run, layer, s) for run, layers in runs.items() for layer, s in layers.items()]
    cols = min(4 if len(panels) > 8 else 2, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 2.6 * rows), squeeze=False)
    for ax, (run, layer, s) in zip(axes.flat, panels):
        if "load" in s:
            loads = list(zip(*s["load"]))  # per expert: its share at each step
            ax.stackplot(s["step"], loads, labels=[f"e{e}" for e in range(len(loads))])
            ax.axhline(1.0, color="black", lw=0.5)
            ax.set_ylim(0, 1)
            ax.set_ylabel("share of pairs")
            ax.set_title(f"{run}: {layer}\ndropped {s['dropped'][-1]:.3f}, entropy {s['entropy'][-1]:.2f} nats",
                         fontsize=9)
        else:
            ax.plot(s["step"], s["through"], label="through")
            ax.set_ylim(0, 1)
            ax.set_ylabel("share through the block")
            ax.set_title(f"{run}: {layer} (Mixture-of-Depths)", fontsize=9)
        ax.set_xlabel("step")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper right", fontsize=7, ncol=len(labels))
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=70)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders (each with a log.jsonl)")
    parser.add_argument("--png", default="expert_load.png", help="output PNG (default ./expert_load.png)")
    args = parser.parse_args(argv)
    runs = {}
    for folder in args.runs:
        records = routing_records(Path(folder))
        if not records:
            raise SystemExit(f"{folder}/log.jsonl has no routing records (was the model routed?)")
        runs[Path(folder).name] = layer_series(records)
    print(last_step_table(runs))
    plot(runs, Path(args.png))
    print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
