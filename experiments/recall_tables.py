"""The cell table of ``experiments/results/recall.md`` from ``recall.json``: best lr per cell, every seed.

One row per (model and label, T, kv pairs, d_model): the learning rates tried, the best one (mean accuracy
over seeds, as Zoology reports), each seed's test accuracy, the steps run (the 0.99 early stop), the share
of causal dense attention's (query, key) pairs the model reads, edge recall (graph models), state size and
CPU seconds.

Usage::

    python experiments/recall_tables.py                                   # the committed recall.json
    python experiments/recall_tables.py --only transformer mamba "hybrid MA +successor"
    python experiments/recall_tables.py experiments/results/recall_tasks.json   # induction head, selective copying
"""
from __future__ import annotations

import argparse
from pathlib import Path

from sosm.train.recall_grid import best_lr_summary, load_rows, row_name

ROOT = Path(__file__).resolve().parents[1]


def _graph(entry: dict) -> bool:
    """A graph model whose row lacks the graph's counts (older selective-copying rows): "n/m", not dense."""
    return entry["model"] in ("hybrid", "graph_attention")


def cell_table(rows: list) -> str:
    tasks = len({r.get("task", "mqar") for r in rows}) > 1  # a task column only when the file mixes tasks
    lines = [("| task " if tasks else "") + "| model | T, kv | d_model | lrs tried | best lr | accuracy per seed | "
             "steps run | (q, k) pairs vs causal dense | edge recall key / value | state floats | CPU s |",
             "|---" * (11 + tasks) + "|"]
    summary = best_lr_summary(rows)
    for e in sorted(summary, key=lambda e: (e["task"], e["seq_len"], e["d_model"], -e["accuracy"])):
        seeds = " / ".join(f"{a:.3f}" for a in e["accuracy_seeds"])
        steps = " / ".join(f"{n:,}" for n in e["steps_run_seeds"])
        fraction = (f"{e['attended_fraction']:.3f}" if e.get("attended_fraction") is not None
                    else "n/m" if _graph(e) else "1")
        recall = (f"{e['edge_recall_key']:.2f} / {e['edge_recall_value']:.2f}"
                  if e.get("edge_recall_key") is not None else "")
        lines.append((f"| {e['task']} " if tasks else "") + f"| {row_name(e)} | {e['seq_len']}, {e['num_kv_pairs']} | "
                     f"{e['d_model']} | {', '.join(f'{lr:.2e}' for lr in e['lrs_tried'])} | {e['best_lr']:.2e} | "
                     f"{seeds} | {steps} | {fraction} | {recall} | {e['state_floats']:,.0f} | {e['cpu_s']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="?", default=str(ROOT / "experiments" / "results" / "recall.json"))
    parser.add_argument("--only", nargs="+", metavar="NAME", help="rows of these legend names only")
    args = parser.parse_args(argv)
    rows = load_rows(args.results)
    if args.only:
        rows = [r for r in rows if row_name(r) in args.only]
        if not rows:
            parser.error(f"no row is named any of {args.only}; names: {sorted({row_name(r) for r in load_rows(args.results)})}")
    print(cell_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
