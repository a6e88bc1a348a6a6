"""Zoology-style figure of a recall results file: per (T, kv), best-lr accuracy vs d_model, one line per model.

Usage::

    python experiments/plot_recall.py experiments/results/recall.json --out experiments/results/recall.png
    python experiments/plot_recall.py experiments/results/recall.json --curves --out experiments/results/recall_curves.png

``--curves``: interim test accuracy against the training step instead, one line per cell (the ``curve``
each row keeps when the grid ran with ``--eval-every``), one panel per (T, kv, width). ``--only``: the
lines to draw, by legend name (model, hybrid pattern and label, e.g. ``"hybrid MA +successor"``).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sosm.train.recall_grid import best_lr_summary, format_summary, load_rows, row_name  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", help="a sosm recall JSON file")
    parser.add_argument("--out", default="recall.png", help="PNG to write")
    parser.add_argument("--curves", action="store_true", help="accuracy vs step, one line per cell")
    parser.add_argument("--only", nargs="+", metavar="NAME",
                        help="draw only these lines, by their legend name (e.g. transformer mamba 'hybrid MA +successor')")
    args = parser.parse_args()
    rows = load_rows(args.results)
    if args.only:
        rows = [r for r in rows if row_name(r) in args.only]
        if not rows:
            parser.error(f"no row is named any of {args.only}; names: {sorted({row_name(r) for r in load_rows(args.results)})}")
    if args.curves:
        return plot_curves(rows, args.out)
    summary = best_lr_summary(rows)
    print(format_summary(summary))
    shapes = sorted({(e["seq_len"], e["num_kv_pairs"]) for e in summary})
    widths = sorted({e["d_model"] for e in summary})
    figure, axes = plt.subplots(1, len(shapes), figsize=(3.6 * len(shapes) + 2.4, 3.6), squeeze=False)
    names = sorted({row_name(e) for e in summary})
    colours = dict(zip(names, plt.get_cmap("tab10" if len(names) <= 10 else "tab20").colors * 2))
    for axis, (seq_len, kv) in zip(axes[0], shapes):
        lines: dict = {}
        for e in summary:
            if (e["seq_len"], e["num_kv_pairs"]) == (seq_len, kv):
                lines.setdefault(row_name(e), []).append((e["d_model"], e["accuracy"], e.get("edge_recall_key") is not None))
        for label, points in sorted(lines.items()):
            points.sort()
            graph = points[0][2]
            axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", color=colours[label],
                      lw=2.2 if graph else 1.2, ls="-" if graph else "--", label=label)
        axis.set(title=f"MQAR T={seq_len}, {kv} pairs", xlabel="d_model", ylabel="test accuracy (best lr, seed mean)",
                 ylim=(0, 1.02), xscale="log", xticks=widths, xlim=(widths[0] / 1.25, widths[-1] * 1.25))
        axis.set_xticklabels([str(d) for d in widths])
        axis.minorticks_off()
        axis.axhline(0.99, color="grey", lw=0.6, ls=":")
    handles = {h.get_label(): h for axis in axes[0] for h in axis.get_lines() if not h.get_label().startswith("_")}
    figure.legend(handles.values(), handles.keys(), fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5),
                  title="graph models: solid", title_fontsize=7)
    figure.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=120, bbox_inches="tight")
    print(f"wrote {args.out}")


def plot_curves(rows: list, out: str) -> None:
    """Interim accuracy vs step, one line per row (rows without a curve are skipped).

    One panel per (T, kv, d_model), two panels a row; a model keeps its colour in every panel, and its
    seeds differ by marker.
    """
    rows = [r for r in rows if r.get("curve")]
    shapes = sorted({(r["seq_len"], r["num_kv_pairs"], r["d_model"]) for r in rows})
    columns = min(2, len(shapes))
    figure, axes = plt.subplots(-(-len(shapes) // columns), columns, figsize=(8 * columns, 4.2 * -(-len(shapes) // columns)),
                                squeeze=False)
    names = sorted({row_name(r) for r in rows})
    colours = dict(zip(names, plt.get_cmap("tab10" if len(names) <= 10 else "tab20").colors * 2))
    markers = ".x+^v"
    for axis, (seq_len, kv, width) in zip(axes.flat, shapes):
        cells = [r for r in sorted(rows, key=lambda r: (-r["accuracy"], r["seed"]))
                 if (r["seq_len"], r["num_kv_pairs"], r["d_model"]) == (seq_len, kv, width)]
        for row in cells:
            steps = [0] + [c["step"] for c in row["curve"]]
            accuracy = [0.0] + [c["accuracy"] for c in row["curve"]]
            graph = row.get("edge_recall_key") is not None
            seed = f", seed {row['seed']}" if any(r["seed"] != row["seed"] and row_name(r) == row_name(row) for r in cells) else ""
            lr = f", lr {row['lr']:.3g}" if any(r["lr"] != row["lr"] and row_name(r) == row_name(row) for r in cells) else ""
            axis.plot(steps, accuracy, marker=markers[row["seed"] % len(markers)], color=colours[row_name(row)],
                      lw=2.2 if graph else 1.2, ls=(0, (1, 1)) if lr and row["lr"] != min(r["lr"] for r in cells)
                      else "-" if graph else "--", label=f"{row_name(row)}{seed}{lr} ({row['accuracy']:.3f})")
        axis.set(title=f"MQAR T={seq_len}, {kv} pairs, d_model {width}", xlabel="step",
                 ylabel="interim test accuracy", ylim=(0, 1.02))
        axis.axhline(0.99, color="grey", lw=0.6, ls=":")
        axis.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), title="test accuracy (graph models: solid)",
                    title_fontsize=7)
    for axis in list(axes.flat)[len(shapes):]:
        axis.set_visible(False)
    figure.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
