"""INT8 (``sosm quantize``) beside the float checkpoint it came from: size, CPU latency, loss, logits.

For each run given (Tiny Shakespeare checkpoints, ``SOSM_DATA_DIR`` for the text): the weight file
sizes (``model.safetensors``), the loss over the first ``--eval-tokens`` tokens of the validation
split, the logits' largest difference on validation windows (absolute, relative to the largest
|logit|, and how often the argmax agrees), and CPU latency on ``--threads`` threads, float and
INT8 taken in turn: a batched forward ``[--batch, block_size]`` and ``model.generate`` of
``--new-tokens`` tokens from a short prompt.

Usage:
    SOSM_DATA_DIR=shared/data python experiments/bench/bench_quantize.py --runs runs/transformer runs/mamba runs/hybrid
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from experiments.bench.common import interleaved_times, write_result  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, help="run or checkpoint folders")
    parser.add_argument("--eval-tokens", type=int, default=50_000, help="validation tokens scored")
    parser.add_argument("--batch", type=int, default=12, help="batch of the timed forward")
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens of the timed generate")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="JSON file (default experiments/bench/results/quantize_int8_cpu.json)")
    return parser.parse_args(argv)


def measure(run: str, args) -> dict:
    import torch

    from sosm.evaluate import evaluate_ids
    from sosm.train.components import build_splits
    from sosm.train.loading import load_trained
    from sosm.train.quantize import quantize_checkpoint

    fp32 = load_trained(run)
    out = Path(tempfile.mkdtemp(prefix="int8_")) / "run"
    written = quantize_checkpoint(fp32, out)
    int8 = load_trained(out)
    block = fp32.config.data.block_size
    val = build_splits(fp32.config.data, fp32.tokenizer)[1].val
    losses = {name: evaluate_ids(t.model, t.tokenizer, val, block, batch_size=16, max_tokens=args.eval_tokens).loss
              for name, t in (("fp32", fp32), ("int8", int8))}
    windows = torch.stack([val[i * block:(i + 1) * block] for i in range(args.batch)])  # [batch, block]
    with torch.no_grad():
        want, got = fp32.model(windows)[0], int8.model(windows)[0]
    prompt = torch.tensor([fp32.tokenizer.encode("ROMEO:")])

    def forward(model):
        return lambda: model(windows)

    def generate(model):
        return lambda: model.generate(prompt, args.new_tokens, seed=0)

    with torch.no_grad():
        times, _ = interleaved_times({"forward_fp32": forward(fp32.model), "forward_int8": forward(int8.model),
                                      "generate_fp32": generate(fp32.model), "generate_int8": generate(int8.model)},
                                     repeats=args.repeats, warmup=1)
    median = {name: t["median_s"] for name, t in times.items()}
    return {
        "run": str(fp32.checkpoint.path), "model": fp32.label, "layer_types": list(fp32.model.config.layer_types),
        "quantized_linears": len(written.modules),
        "weights_bytes": {"fp32": written.fp32_bytes, "int8": written.int8_bytes,
                          "ratio": round(written.int8_bytes / written.fp32_bytes, 4)},
        "val_loss": {"fp32": round(losses["fp32"], 5), "int8": round(losses["int8"], 5),
                     "delta": round(losses["int8"] - losses["fp32"], 5), "tokens": args.eval_tokens},
        "logits": {"max_abs_diff": float((got - want).abs().max()),
                   "max_rel_diff": float((got - want).abs().max() / want.abs().max()),
                   "argmax_agreement": float((got.argmax(-1) == want.argmax(-1)).float().mean()),
                   "windows": [args.batch, block]},
        "latency_ms": {name: round(1e3 * value, 3) for name, value in median.items()},
        "speedup": {"forward": round(median["forward_fp32"] / median["forward_int8"], 3),
                    "generate": round(median["generate_fp32"] / median["generate_int8"], 3)},
        "samples_s": {name: t["samples_s"] for name, t in times.items()},
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    rows = [measure(run, args) for run in args.runs]
    record = {"shapes": {"forward_batch": args.batch, "new_tokens": args.new_tokens, "threads": args.threads,
                         "repeats": args.repeats, "eval_tokens": args.eval_tokens},
              "method": "torch.ao.quantization.quantize_dynamic, per-channel qint8 (sosm.train.quantize)",
              "rows": rows}
    path = write_result("quantize_int8_cpu", record, args.out)
    for row in rows:
        print(f"{row['model']:12s} weights x{row['weights_bytes']['ratio']:.2f}  loss {row['val_loss']['fp32']:.4f} -> "
              f"{row['val_loss']['int8']:.4f} ({row['val_loss']['delta']:+.4f})  max|dlogit| "
              f"{row['logits']['max_abs_diff']:.3f} (rel {row['logits']['max_rel_diff']:.3f}, argmax "
              f"{row['logits']['argmax_agreement']:.3f})  forward x{row['speedup']['forward']:.2f}  generate "
              f"x{row['speedup']['generate']:.2f}")
    print(f"wrote {path}")
    return record


if __name__ == "__main__":
    main()
