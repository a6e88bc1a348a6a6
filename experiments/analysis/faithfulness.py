"""Faithfulness of token attributions: deletion curves of DePass, gradient x input, Integrated Gradients, random.

Loads a checkpoint trained by ``sosm train``, takes ``--windows`` windows of its validation
split (never trained on), explains the model's top prediction at the last position of each,
and deletes tokens in the order each method ranks them (see ``sosm.analysis.faithfulness``).
Writes the mean curves and AUCs as JSON and a markdown table.

Usage (the committed results):
    python experiments/analysis/faithfulness.py --checkpoint runs/analysis_tiny_hybrid \
        --windows 24 --out experiments/results/faithfulness
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from sosm.analysis.attribution import METHODS, resolve_target, token_attribution
from sosm.analysis.faithfulness import deletion_curve, resample
from sosm.analysis.recording import record_forward
from sosm.train.components import build_splits
from sosm.train.loading import load_trained


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--windows", type=int, default=24)
    parser.add_argument("--length", type=int, default=0, help="window length (0: the run's block size)")
    parser.add_argument("--ig-steps", type=int, default=32)
    parser.add_argument("--random-orders", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output path without suffix (.json and .md are written)")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    trained = load_trained(args.checkpoint)
    model = trained.model
    length = args.length or trained.config.data.block_size
    val = build_splits(trained.config.data, trained.tokenizer)[1].val
    generator = torch.Generator().manual_seed(args.seed)
    starts = torch.randint(0, len(val) - length, (args.windows,), generator=generator).tolist()
    names = list(METHODS) + ["random"]
    curves = {name: [] for name in names}
    timings = {name: 0.0 for name in METHODS}
    for start in starts:
        ids = val[start: start + length][None]
        record = record_forward(model, ids)
        position, target = resolve_target(record.logits, None, None)
        for method in METHODS:
            t0 = time.perf_counter()
            scores = token_attribution(model, ids, method=method, position=position, target=target,
                                       ig_steps=args.ig_steps)
            timings[method] += time.perf_counter() - t0
            curves[method].append(deletion_curve(model, ids, scores, position, target, record))
        for _ in range(args.random_orders):
            scores = torch.rand(length, generator=generator)
            curves["random"].append(deletion_curve(model, ids, scores, position, target, record))
    summary = {}
    for name in names:
        runs = curves[name]
        drop = [c["auc_logit_drop"] for c in runs]
        prob = [c["auc_prob"] for c in runs]
        summary[name] = {
            "auc_logit_drop_mean": statistics.fmean(drop), "auc_logit_drop_sem": statistics.stdev(drop) / len(drop) ** 0.5,
            "auc_prob_mean": statistics.fmean(prob), "auc_prob_sem": statistics.stdev(prob) / len(prob) ** 0.5,
            "mean_logit_drop_curve": [statistics.fmean(v) for v in zip(*[
                resample([c["logits"][0] - x for x in c["logits"]]) for c in runs])],
            "mean_prob_curve": [statistics.fmean(v) for v in zip(*[resample(c["probs"]) for c in runs])],
            "curves": len(runs),
        }
        if name in timings:
            summary[name]["seconds_per_window"] = timings[name] / len(starts)
    command = "python experiments/analysis/faithfulness.py " + " ".join(sys.argv[1:] if argv is None else argv)
    result = {"command": command, "checkpoint": str(trained.checkpoint.path), "step": trained.checkpoint.step,
              "model": trained.model.config.to_dict(), "windows": len(starts), "length": length,
              "ig_steps": args.ig_steps, "torch": torch.__version__, "python": platform.python_version(),
              "deletion": "zero the token's row of the stack input; graph, positions, structure held fixed",
              "target": "the model's top prediction at the last position", "methods": summary}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))
    return 0


def markdown(result: dict) -> str:
    lines = ["| method | AUC logit drop ↑ | AUC target prob ↓ | s / window |", "|---|---:|---:|---:|"]
    for name, s in result["methods"].items():
        seconds = f"{s['seconds_per_window']:.2f}" if "seconds_per_window" in s else "-"
        lines.append(f"| {name} | {s['auc_logit_drop_mean']:.3f} ± {s['auc_logit_drop_sem']:.3f} | "
                     f"{s['auc_prob_mean']:.4f} ± {s['auc_prob_sem']:.4f} | {seconds} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
