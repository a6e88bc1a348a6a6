"""The MQAR pilot's diagnosis runs (experiments/results/recall_pilot.md), one named variant at a time.

Every variant is the pilot cell (vocabulary 512, T = 64, 4 pairs, d_model 64, two layers, batch 64,
2,000 steps, lr 3e-3 with warmup + cosine, random filler, the SOSM Transformer) with a few fields
changed; each finished row (with its accuracy curve every 250 steps) is appended to ``--out``.

Usage::

    OMP_NUM_THREADS=1 python experiments/recall_pilot.py --variants A_pilot K1_no_mlp \\
        --out experiments/results/recall_pilot.jsonl
"""
from __future__ import annotations

import argparse
import json

import torch

from sosm.data.recall import answer_sources, mqar
from sosm.train.recall import RecallCell, train_cell

PILOT = dict(vocab_size=512, seq_len=64, num_kv_pairs=4, d_model=64, batch_size=64, steps=2000, lr=3e-3,
             eval_every=250, stop_at=0.99, model="transformer")

VARIANTS = {
    "A_pilot": {},
    "D_one_head": {"model_overrides": {"n_heads": 1}},
    "B_zero_filler": {"random_non_queries": False},
    "C_no_positions": {"model_overrides": {"positional": "none"}},
    "H_vocab_64": {"vocab_size": 64},
    "E_lr_1e-2": {"lr": 1e-2},
    "I_induction_head_v16": {"task": "induction_head", "vocab_size": 16, "steps": 1000},
    "J_vocab_64_mlp_hidden_1": {"vocab_size": 64, "steps": 1000, "model_overrides": {"mlp_ratio": 0.02}},
    "K1_no_mlp": {"model_overrides": {"mlp_ratio": 0}},
    "K2_no_mlp_vocab_8192": {"vocab_size": 8192, "steps": 3000, "model_overrides": {"mlp_ratio": 0}},
}


def check_data(rows: int = 3000) -> None:
    """Print whether every MQAR answer is recoverable from the input, per vocabulary and filler."""
    for vocab in (512, 8192):
        for random_filler in (True, False):
            x, y = mqar(rows, 64, 4, vocab, seed=11, random_non_queries=random_filler)
            row, query, key_pos, value_pos = answer_sources(x, y)
            first = float((x[row, value_pos] == y[row, query]).float().mean())
            T = x.shape[1]
            same = (x[row] == x[row, query][:, None]) & (torch.arange(T)[None] < query[:, None])  # [A, T]
            last = T - 1 - same.flip(1).int().argmax(1)  # most recent earlier occurrence
            recent = float((x[row, last + 1] == y[row, query]).float().mean())
            values = float(((x[row] >= vocab // 2) & (torch.arange(T)[None] < query[:, None])).sum(1).float().mean())
            print(f"| {vocab:,} | {'random' if random_filler else '0'} | {first:.4f} | {recent:.4f} | {values:.1f} | "
                  f"{float(query.float().mean()):.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check-data", action="store_true", help="only print the data check table")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=sorted(VARIANTS))
    parser.add_argument("--out", default="recall_pilot.jsonl", help="JSON-lines file the rows are appended to")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.check_data:
        return check_data()
    for name in args.variants:
        row = train_cell(RecallCell.from_dict({**PILOT, **VARIANTS[name], "progress": False}))
        row["variant"] = name
        with open(args.out, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        print(f"{name}: accuracy {row['accuracy']:.4f}, test loss {row['loss']:.3f}, steps {row['steps_run']}, "
              f"CPU {row['cpu_s']:.0f} s, curve {[round(c['accuracy'], 3) for c in row['curve']]}", flush=True)


if __name__ == "__main__":
    main()
