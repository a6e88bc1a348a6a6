"""The tables of ``experiments/results/mixers.md`` from the three result files behind it.

- Tiny Shakespeare CPU (``experiments/train_shakespeare.py --name mixers_shakespeare_char_cpu``):
  validation loss, tokens/s, peak memory and the leak check of every mixer's 2,000-step run;
- one layer's forward + backward on the CPU at T = 256 / 1,024 / 4,096 beside dense attention
  (``experiments/bench/bench_mixers_cpu.py``);
- each mixer's MQAR cell (``sosm recall``, the protocol of ``recall.md``).

Usage::

    python experiments/mixers_tables.py                       # the committed files
    python experiments/mixers_tables.py --recall experiments/results/recall.json experiments/results/recall_2000.json

Prints Markdown; a file that does not exist yet leaves its table out (named on stderr).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"


def shakespeare_table(path: Path) -> str:
    runs = json.loads(path.read_text())["runs"]
    best = min(r["val_loss_full"] for r in runs if r.get("val_loss_full") is not None)
    lines = ["| mixer | params | val loss (whole split) | val loss (estimate, 20 batches) | tokens/s | train wall s "
             "| peak RSS MiB | leak check |", "|---|---|---|---|---|---|---|---|"]
    for r in sorted(runs, key=lambda r: r.get("val_loss_full") or float("inf")):
        leak = r.get("leak_check") or {}
        full = r.get("val_loss_full")
        cell = "—" if full is None else (f"**{full:.4f}**" if full == best else f"{full:.4f}")
        lines.append(f"| {r['name']} | {r['parameters'] / 1e6:.3f}M | {cell} | {r['val_loss_estimate']:.4f} "
                     f"| {r['tokens_per_s']:,.0f} | {r['train_wall_s']:.0f} | {r.get('train_peak_rss_mib', 0):.0f} "
                     f"| {'PASS' if leak.get('passed') else 'FAIL' if leak else '—'} |")
    return "\n".join(lines)


def bench_table(path: Path) -> str:
    record = json.loads(path.read_text())
    rows = record["rows"]
    lengths = sorted({r["T"] for r in rows})
    names = list(dict.fromkeys(r["mixer"] for r in rows))
    by = {(r["mixer"], r["T"]): r for r in rows}
    head = "| mixer | " + " | ".join(f"T={t}: CPU ms (× attention) | +MiB" for t in lengths) + " |"
    lines = [head, "|---|" + "---|---|" * len(lengths)]
    for name in names:
        cells = []
        for t in lengths:
            r = by.get((name, t))
            if r is None:
                cells += ["—", "—"]
                continue
            mem = r.get("step_rss_increase_mib")
            cells += [f"{r['fwd_bwd_cpu_ms']:,.1f} (×{r['cpu_ratio_to_attention']:.2f})",
                      "—" if mem is None else f"{mem:,.0f}"]
        label = name if by[(name, lengths[0])].get("causal", True) else f"{name} (bidirectional)"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def recall_table(paths) -> str:
    from sosm.train.recall_grid import best_lr_summary, load_rows, row_name

    rows = [row for path in paths for row in load_rows(path)  # mixers.md's protocol: one cell, one lr, one seed
            if (row["task"], row["seq_len"], row["num_kv_pairs"], row["d_model"], row["seed"]) == ("mqar", 64, 4, 64, 0)
            and abs(row["lr"] - 10 ** -(8 / 3)) < 1e-9  # 2.15e-3; other widths, lrs and seeds: recall.md
            and row.get("label", "") in ("", "+successor")]  # the structural-encoding variants: recall.md
    summary = best_lr_summary(rows)
    lines = ["| model | d_model | steps run | test accuracy | state floats | params | edge recall key / value "
             "| CPU s |", "|---|---|---|---|---|---|---|---|"]
    steps = {}
    for row in rows:
        steps[(row_name(row), row["d_model"], row["steps"])] = row.get("steps_run", row["steps"])
    for e in sorted(summary, key=lambda e: -e["accuracy"]):
        label = row_name(e)
        recall = (f"{e['edge_recall_key']:.2f} / {e['edge_recall_value']:.2f}"
                  if e.get("edge_recall_key") is not None else "")
        lines.append(f"| {label} | {e['d_model']} | {steps.get((label, e['d_model'], e['steps']), '')} of {e['steps']} | {e['accuracy']:.3f} "
                     f"| {e['state_floats']:,.0f} | {e['parameters']:,.0f} | {recall} | {e['cpu_s']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shakespeare", default=str(RESULTS / "mixers_shakespeare_char_cpu.json"))
    parser.add_argument("--bench", default=str(ROOT / "experiments" / "bench" / "results" / "mixers_cpu.json"))
    parser.add_argument("--recall", nargs="+", default=[str(RESULTS / "recall.json")])
    args = parser.parse_args(argv)
    for title, build, source in (("Tiny Shakespeare, CPU, 2,000 steps", shakespeare_table, args.shakespeare),
                                 ("One layer, forward + backward, CPU", bench_table, args.bench),
                                 ("MQAR (64, 4), d_model 64", recall_table, args.recall)):
        sources = source if isinstance(source, list) else [source]
        missing = [s for s in sources if not Path(s).exists()]
        if missing:
            print(f"skipped {title!r}: {', '.join(missing)} not found", file=sys.stderr)
            continue
        print(f"### {title}\n\n{build(source if isinstance(source, list) else Path(source))}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
