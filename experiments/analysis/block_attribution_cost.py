"""Step cost of the sampled gradient block attribution (``GradientBlockAttributionCallback``) beside plain training steps.

Trains the analysis config for ``--steps`` steps twice in one process: without the callback,
then with it every ``--every`` steps; times each step (callback included) and reports the
mean plain step, the mean cost of one attribution and the amortised overhead at the chosen N.

Usage (the committed results):
    python experiments/analysis/block_attribution_cost.py --config experiments/analysis/tiny_hybrid.yaml \
        --steps 12 --every 3 --out experiments/results/block_attribution_cost.json
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from sosm.analysis import GradientBlockAttributionCallback
from sosm.train import TrainConfig, Trainer


def timed_run(config: TrainConfig, callback) -> list:
    times = []
    state = {"t": time.perf_counter()}

    def on_step(trainer, step, loss):
        if callback is not None:
            callback(trainer, step, loss)
        now = time.perf_counter()
        times.append((step, now - state["t"]))
        state["t"] = now

    with tempfile.TemporaryDirectory() as out:
        Trainer(config, out, step_callback=on_step).train()
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--every", type=int, default=3)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    config = TrainConfig.from_yaml(args.config).replace(max_steps=args.steps, eval_interval=10 ** 6,
                                                        checkpoint_interval=0, progress_bar=False, tensorboard=False)
    plain = timed_run(config, None)
    callback = GradientBlockAttributionCallback(every=args.every, samples=args.samples)
    with_cb = timed_run(config, callback)
    inner = lambda step: 1 < step < args.steps  # noqa: E731  (the first step warms up, the last one evaluates)
    base = statistics.fmean([t for step, t in plain if inner(step)])
    attributed = statistics.fmean([t for step, t in with_cb if inner(step) and step % args.every == 0])
    others = statistics.fmean([t for step, t in with_cb if inner(step) and step % args.every])
    cost = attributed - others
    result = {"command": "python experiments/analysis/block_attribution_cost.py " + " ".join(
                  sys.argv[1:] if argv is None else argv),
              "device": "cpu", "torch": torch.__version__, "python": platform.python_version(),
              "threads": torch.get_num_threads(), "steps": args.steps, "every": args.every, "samples": args.samples,
              "plain_step_s": base, "step_with_attribution_s": attributed, "attribution_cost_s": cost,
              "relative_cost_per_attribution": cost / base, "amortised_overhead": cost / base / args.every,
              "last_shares": callback.history[-1]["shares"] if callback.history else None,
              "note": "shared 2-core CPU with other jobs running: timings are noisy"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k != "last_shares"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
