"""``sosm eval``: loss, perplexity, bits per byte and the causality leak check of a checkpoint."""
from __future__ import annotations

import argparse
import json

EXIT_LEAK = 1


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "eval", help="evaluate a checkpoint: loss, perplexity, bits per byte, leak check",
        description="Loss (nats/token), perplexity and bits per byte of a trained checkpoint on a UTF-8 text file, "
                    "or on the validation split of its training data. --leak-check resamples the tokens after "
                    "several positions t and checks that logits at positions <= t do not change; the exit status "
                    f"is {EXIT_LEAK} when a leak is found.")
    parser.add_argument("--checkpoint", required=True, metavar="PATH",
                        help="a run folder (its newest checkpoint is used) or a checkpoint folder")
    parser.add_argument("--text-file", metavar="FILE", help="UTF-8 text to score (default: the run's validation split)")
    parser.add_argument("--max-tokens", type=int, metavar="N", help="score only the first N tokens")
    parser.add_argument("--batch-size", type=int, default=16, metavar="B", help="windows per forward pass (default 16)")
    parser.add_argument("--leak-check", action="store_true", help="also run the causality leak check")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device (default cpu)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    return parser


def _leak_input(ids, block_size):
    """Two windows of the scored text, ``[2, block_size]`` (one shorter window for a short text)."""
    import torch

    if len(ids) < 2 * block_size:
        return ids[: min(len(ids), block_size)].unsqueeze(0)
    return torch.stack([ids[:block_size], ids[len(ids) // 2: len(ids) // 2 + block_size]])


def run(args) -> int:
    import torch

    from ..data import read_text_file
    from ..evaluate import evaluate_ids, leak_check
    from ..train.components import build_splits
    from ..train.loading import load_trained

    if args.max_tokens is not None and args.max_tokens < 1:
        raise ValueError(f"--max-tokens={args.max_tokens} is invalid; accepted: an int >= 1")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size={args.batch_size} is invalid; accepted: an int >= 1")
    trained = load_trained(args.checkpoint, device=args.device)
    block = trained.config.data.block_size
    tag = " [LEAKY: non-causal graph]" if trained.leaky else ""
    report = {"checkpoint": str(trained.checkpoint.path), "step": trained.checkpoint.step, "name": trained.label,
              "leaky": trained.leaky, "block_size": block}
    if args.text_file:
        ids = torch.tensor(trained.tokenizer.encode(read_text_file(args.text_file)), dtype=torch.long)
        report["source"] = args.text_file
    else:
        ids = build_splits(trained.config.data, trained.tokenizer)[1].val
        report["source"] = "validation split"
    result = evaluate_ids(trained.model, trained.tokenizer, ids, block, batch_size=args.batch_size,
                          device=args.device, max_tokens=args.max_tokens)
    report.update(result.to_dict())
    print(f"{trained.label} (step {trained.checkpoint.step}) on {report['source']}: loss {result.loss:.4f} nats/token, "
          f"perplexity {result.perplexity:.3f}, bits/byte {result.bits_per_byte:.4f} over {result.tokens:,} tokens{tag}")
    status = 0
    if args.leak_check:
        leak = leak_check(trained.model, _leak_input(ids, block).to(args.device), label=trained.label)
        report["leak_check"] = leak.to_dict()
        print(leak)
        if not leak.passed:
            status = EXIT_LEAK
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
            handle.write("\n")
    return status
