"""What the MQAR models cost per step as T grows, on CPU: the graph models beside the Transformer (SDPA).

The recall results (``experiments/results/recall.md``) count the (query, key) pairs a graph layer reads
(3.1% of causal attention's at T = 256 with successor edges and k = 1). This benchmark asks what that buys
in time on the machine the grid ran on: one optimiser step (forward at the answer positions, cross-entropy,
backward, AdamW) and one forward without gradient, for each model of the recall protocol (two layers,
d_model 64, vocabulary 8,192, no MLP in attention layers), on MQAR batches with ``T / 16`` key-value pairs:

* ``transformer``: causal attention through ``F.scaled_dot_product_attention`` (the anchor);
* ``mamba``: two Mamba layers (the native C selective scan on CPU);
* ``hybrid +successor k=1`` (M A) and ``graph_attention +successor k=1`` (A A): the graph is built in every
  forward (front-end states, streaming top-1, successor edges), then gathered attention over it.

Models are interleaved per repeat (the shared machine's drift hits all alike); medians; one thread.
Also recorded: parameters, the graph's attended fraction of causal pairs, and Zoology's state floats.

Run:
    python experiments/bench/bench_recall_cost_cpu.py                       # writes results/recall_cost_cpu.json + .png
    python experiments/bench/bench_recall_cost_cpu.py --seq-lens 128 --batch 2 --repeats 1 --name smoke
    python experiments/bench/bench_recall_cost_cpu.py --replot experiments/bench/results/recall_cost_cpu.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from experiments.bench.common import interleaved_times, write_result  # noqa: E402
from sosm.data.recall import IGNORE_INDEX, RecallData, RecallTaskConfig, make_recall_splits  # noqa: E402
from sosm.model import SOSMModel  # noqa: E402
from sosm.train.recall import RecallCell, adamw, edge_recall, state_floats  # noqa: E402

RECALL_GRAPH = {"graph": {"successor_edges": True, "k": 1}}
MODELS = {  # name -> (model kind, overrides): the recall protocol's models (recall.md)
    "transformer": ("transformer", {"mlp_ratio": 0}),
    "mamba": ("mamba", {}),
    "hybrid +successor k=1": ("hybrid", {"mlp_ratio": 0, **RECALL_GRAPH}),
    "graph_attention +successor k=1": ("graph_attention", {"mlp_ratio": 0, **RECALL_GRAPH}),
}


def build(name: str, seq_len: int, d_model: int, seed: int) -> tuple[SOSMModel, RecallCell]:
    kind, overrides = MODELS[name]
    cell = RecallCell(model=kind, seq_len=seq_len, num_kv_pairs=max(1, seq_len // 16), d_model=d_model,
                      model_overrides=overrides, num_train=8, num_test=8, progress=False, lr=1e-3, seed=seed)
    torch.manual_seed(seed)
    return SOSMModel(cell.model_config()), cell


def plot(record: dict, path) -> Path:
    """Step time vs T (log-log), one line per model, with the graph's attended fraction of pairs beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = record["rows"]
    names = list(rows[0]["models"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    T = [row["seq_len"] for row in rows]
    for name in names:
        left.plot(T, [row["models"][name]["step_s"] * 1e3 for row in rows], marker="o", label=name)
        fractions = [row["models"][name]["attended_fraction"] for row in rows]
        if all(f is not None for f in fractions):
            right.plot(T, [100 * f for f in fractions], marker="o", label=name)
    for axis in (left, right):
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("T (sequence length)")
        axis.grid(True, which="both", alpha=0.3)
    left.set_ylabel("train step, ms (median)")
    left.set_title(f"one step, batch {record['shapes']['batch']}, d_model {record['shapes']['d_model']}, "
                   f"{record['torch_threads']} thread", fontsize=9)
    right.set_ylabel("% of causal (query, key) pairs read")
    right.set_title("pairs read", fontsize=9)
    left.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", default="recall_cost_cpu")
    parser.add_argument("--out", default=None, help="JSON path (default experiments/bench/results/<name>.json); "
                                                     "the figure goes beside it (.png)")
    parser.add_argument("--replot", metavar="JSON", default=None, help="only redraw the figure of a result file")
    args = parser.parse_args(argv)
    if args.replot:
        record = json.loads(Path(args.replot).read_text())
        print(f"-> {plot(record, Path(args.replot).with_suffix('.png'))}")
        return record
    torch.set_num_threads(args.threads)
    anchor = "transformer"
    rows = []
    for T in args.seq_lens:
        kv = max(1, T // 16)
        data = make_recall_splits(RecallTaskConfig(task="mqar", seq_len=T, num_kv_pairs=kv, vocab_size=8192,
                                                   num_train=args.batch, num_test=8, seed=args.seed))
        x, y = data.train.inputs[:args.batch], data.train.targets[:args.batch]
        mask = y != IGNORE_INDEX
        jobs, info = {}, {}
        for name in args.models:
            model, cell = build(name, T, args.d_model, args.seed)
            optimizer = adamw(model, cell)

            def step(model=model, optimizer=optimizer):
                logits, _ = model(x, logits_mask=mask)
                loss = F.cross_entropy(logits, y[mask])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

            def forward(model=model):
                with torch.no_grad():
                    model(x, logits_mask=mask)

            jobs[f"{name} | step"], jobs[f"{name} | forward"] = step, forward
            graph = edge_recall(model, RecallData(x, y), batch_size=args.batch) if model.config.uses_graph else None
            info[name] = {"parameters": sum(p.numel() for p in model.parameters()),
                          "attended_fraction": (graph["attended_fraction"] if graph is not None
                                                else 1.0 if name == "transformer" else None),  # Mamba reads no pairs
                          "state_floats": state_floats(model, None if graph is None else graph["avg_neighbors"])}
        times, _ = interleaved_times(jobs, repeats=args.repeats, warmup=1)
        row = {"seq_len": T, "num_kv_pairs": kv, "batch": args.batch, "models": {}}
        for name in args.models:
            step_s, fwd_s = times[f"{name} | step"]["median_s"], times[f"{name} | forward"]["median_s"]
            row["models"][name] = {**info[name], "step_s": step_s, "forward_s": fwd_s,
                                   "step_cpu_s": times[f"{name} | step"]["median_cpu_s"]}
        if anchor in row["models"]:
            for name, entry in row["models"].items():
                entry["step_ratio_over_transformer"] = entry["step_s"] / row["models"][anchor]["step_s"]
                entry["forward_ratio_over_transformer"] = entry["forward_s"] / row["models"][anchor]["forward_s"]
        rows.append(row)
        print(f"T={T} (kv {kv}, batch {args.batch}):", flush=True)
        for name, entry in row["models"].items():
            ratio = entry.get("step_ratio_over_transformer")
            print(f"  {name:32s} step {entry['step_s'] * 1e3:9.1f} ms"
                  + (f" ({ratio:.2f}x transformer)" if ratio is not None else "")
                  + f" | forward {entry['forward_s'] * 1e3:8.1f} ms | pairs "
                  + ("-" if entry["attended_fraction"] is None else f"{entry['attended_fraction']:.3f}")
                  + f" | state floats {entry['state_floats']:,}", flush=True)
    record = {
        "shapes": {"seq_lens": args.seq_lens, "batch": args.batch, "d_model": args.d_model, "n_layers": 2,
                   "vocab_size": 8192, "num_kv_pairs": "T / 16", "models": {n: MODELS[n] for n in args.models}},
        "rows": rows,
        "anchor": "transformer (causal F.scaled_dot_product_attention, no MLP)",
        "torch_threads": args.threads,
        "command": "python experiments/bench/bench_recall_cost_cpu.py "
                   + " ".join(sys.argv[1:] if argv is None else argv),
    }
    out = write_result(args.name, record, out=args.out)
    print(f"-> {out}, {plot(record, out.with_suffix('.png'))}")
    return record


if __name__ == "__main__":
    main()
