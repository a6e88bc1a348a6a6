"""Zoology-style figure of a recall results file: per (T, kv), best-lr accuracy vs d_model, one line per model.

Usage::

    python experiments/plot_recall.py experiments/results/recall.json --out experiments/results/recall.png
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sosm.train.recall_grid import best_lr_summary, format_summary, load_rows  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", help="a sosm recall JSON file")
    parser.add_argument("--out", default="recall.png", help="PNG to write")
    args = parser.parse_args()
    summary = best_lr_summary(load_rows(args.results))
    print(format_summary(summary))
    shapes = sorted({(e["seq_len"], e["num_kv_pairs"]) for e in summary})
    figure, axes = plt.subplots(1, len(shapes), figsize=(4.5 * len(shapes), 3.6), squeeze=False)
    for axis, (seq_len, kv) in zip(axes[0], shapes):
        lines: dict = {}
        for e in summary:
            if (e["seq_len"], e["num_kv_pairs"]) == (seq_len, kv):
                label = e.get("label") or e["model"] + (f" {e['layer_pattern']}" if e["model"] == "hybrid" else "")
                label += f", {e['steps']} steps" if len({s["steps"] for s in summary}) > 1 else ""
                lines.setdefault(label, []).append((e["d_model"], e["accuracy"]))
        for label, points in sorted(lines.items()):
            points.sort()
            axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
        axis.set(title=f"MQAR T={seq_len}, {kv} pairs", xlabel="d_model", ylabel="test accuracy (best lr)",
                 ylim=(0, 1.02), xscale="log", xticks=sorted({e["d_model"] for e in summary}))
        axis.set_xticklabels([str(d) for d in sorted({e["d_model"] for e in summary})])
        axis.minorticks_off()
        axis.axhline(0.99, color="grey", lw=0.6, ls=":")
        axis.legend(fontsize=7)
    figure.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
