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
    stream = parser.add_argument_group(
        "long-context streaming (--stream)",
        "Score the text in consecutive windows of the model's context, once per mode: plain (as above), carry "
        "(Mamba conv + SSM state carried from window to window; attention K/V are not carried), memory (each "
        "scored window is written into an HNSW long-term memory that later windows' graph-attention layers "
        "read along memory edges) and carry+memory. Reports the loss per window and per mode.")
    stream.add_argument("--stream", action="store_true", help="run the streaming evaluation instead")
    stream.add_argument("--stream-windows", type=int, metavar="N", help="score only the first N windows (default all)")
    stream.add_argument("--stream-modes", default="plain,carry,memory,carry+memory", metavar="LIST",
                        help="comma-separated modes (default plain,carry,memory,carry+memory)")
    stream.add_argument("--memory-k", type=int, default=8, metavar="K", help="memory entries per token (default 8)")
    stream.add_argument("--memory-threshold", type=float, default=0.0, metavar="S",
                        help="minimum retrieval cosine similarity of a memory edge (default 0.0)")
    return parser


def _run_stream(args, trained, ids, report) -> int:
    """``--stream``: :func:`sosm.stream.stream_evaluate` over the scored text; prints a table, writes JSON."""
    from ..stream import format_table, stream_evaluate

    if args.stream_windows is not None and args.stream_windows < 1:
        raise ValueError(f"--stream-windows={args.stream_windows} is invalid; accepted: an int >= 1")
    modes = [m.strip() for m in args.stream_modes.split(",") if m.strip()]
    if args.max_tokens is not None:
        ids = ids[: args.max_tokens + 1]
    result = stream_evaluate(trained.model, ids, trained.config.data.block_size, modes=modes,
                             max_windows=args.stream_windows, memory_k=args.memory_k,
                             memory_threshold=args.memory_threshold, device=args.device)
    report["stream"] = result.to_dict()
    print(f"{trained.label} (step {trained.checkpoint.step}) streamed over {report['source']}: {result.windows} windows "
          f"of {result.window} tokens ({result.tokens:,} tokens), memory_k={args.memory_k}, "
          f"threshold={args.memory_threshold}")
    print(format_table(result))
    write_json(report, args.json)
    return 0


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
    from .checks import check_device, check_output_file

    if args.json:
        check_output_file(args.json, "--json")
    check_device(args.device)
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
    if getattr(args, "stream", False):
        return _run_stream(args, trained, ids, report)
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
    write_json(report, args.json)
    return status


def write_json(report: dict, path) -> None:
    """``--json FILE``: the report, written atomically (checked before any evaluation by :func:`run`)."""
    from ..common.files import atomic_write
    from .checks import writing

    if path:
        with writing(path, "--json"):
            atomic_write(path, json.dumps(report, indent=2) + "\n")
