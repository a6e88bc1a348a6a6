"""``sosm eval``: loss, perplexity, bits per byte, the causality leak check and the i.i.d. canary of a checkpoint.

A mask-predict run (a bidirectional model) reports the masked-token loss at fixed ratios instead
(:data:`MASK_RATIOS`, deterministic masks by ``--mask-seed``); the leak check and the canary do not
apply to it (it reads both sides by design) and are not run.
"""
from __future__ import annotations

import argparse
import json

EXIT_LEAK = 1
#: masking ratios at which a mask-predict run is scored
MASK_RATIOS = (0.15, 0.5)


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "eval", help="evaluate a checkpoint: loss, perplexity, bits per byte, leak check",
        description="Loss (nats/token), perplexity and bits per byte of a trained checkpoint on a UTF-8 text file, "
                    "or on the validation split of its training data. --leak-check takes two consecutive windows "
                    "of the text as batched evaluation lays them out, resamples everything after every position "
                    "and each other window in turn, and checks that no earlier logit changes, bit for bit (a "
                    "memory model reads a memory pre-filled with the whole text). --canary trains a fresh model "
                    "of the checkpoint's config on uniform i.i.d. tokens and checks that its loss on fresh tokens "
                    f"stays at ln V. The exit status is {EXIT_LEAK} when either finds a leak. A mask-predict run "
                    f"(bidirectional model) is scored by its masked-token loss at ratios {MASK_RATIOS} instead; the "
                    "leak check and the canary do not apply to it.")
    parser.add_argument("--checkpoint", required=True, metavar="PATH",
                        help="a run folder (its newest checkpoint is used) or a checkpoint folder")
    parser.add_argument("--text-file", metavar="FILE", help="UTF-8 text to score (default: the run's validation split)")
    parser.add_argument("--max-tokens", type=int, metavar="N", help="score only the first N tokens")
    parser.add_argument("--batch-size", type=int, default=16, metavar="B", help="windows per forward pass (default 16)")
    parser.add_argument("--leak-check", action="store_true", help="also run the causality leak check")
    parser.add_argument("--leak-atol", type=float, default=0.0, metavar="X",
                        help="largest logit change the leak check allows (default 0: bit for bit; raise it only on "
                             "a device whose kernels are not bit-reproducible)")
    parser.add_argument("--canary", action="store_true",
                        help="also train a fresh model of this config on uniform i.i.d. tokens: its held-out loss "
                             "must stay at ln V (a model that sees its targets learns to beat it)")
    parser.add_argument("--canary-steps", type=int, default=200, metavar="N",
                        help="training steps of the canary (default 200)")
    parser.add_argument("--mask-seed", type=int, default=0, metavar="S",
                        help="mask-predict runs: seed of the masked positions (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
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
    from ..common.progress import progress_bar
    from ..stream import format_table, stream_evaluate

    if args.stream_windows is not None and args.stream_windows < 1:
        raise ValueError(f"--stream-windows={args.stream_windows} is invalid; accepted: an int >= 1")
    modes = [m.strip() for m in args.stream_modes.split(",") if m.strip()]
    if args.max_tokens is not None:
        ids = ids[: args.max_tokens + 1]
    block = trained.config.data.block_size
    windows = len(range(0, len(ids) - 1, block))
    windows = windows if args.stream_windows is None else min(windows, args.stream_windows)
    with progress_bar(total=windows * len(modes), desc="stream", unit="window", disable=args.no_progress) as bar:
        result = stream_evaluate(trained.model, ids, block, modes=modes, max_windows=args.stream_windows,
                                 memory_k=args.memory_k, memory_threshold=args.memory_threshold, device=args.device,
                                 progress=lambda mode, index, loss: bar.update(1))
    report["stream"] = result.to_dict()
    print(f"{trained.label} (step {trained.checkpoint.step}) streamed over {report['source']}: {result.windows} windows "
          f"of {result.window} tokens ({result.tokens:,} tokens), memory_k={args.memory_k}, "
          f"threshold={args.memory_threshold}")
    print(format_table(result))
    write_json(report, args.json)
    return 0


LEAK_NOT_APPLICABLE = ("leak check: does not apply: this model is bidirectional by design (causal=false, trained by "
                       "mask-predict), so every position reads later tokens; it is not run")


def _run_mask_predict(args, trained, ids, report) -> int:
    """A mask-predict run: the masked-token loss at each of :data:`MASK_RATIOS`; no leak check, no canary."""
    from ..common.progress import progress_bar
    from ..evaluate.masked import masked_token_loss

    if getattr(args, "stream", False):
        raise ValueError("--stream applies to causal models (carried state, memory); this checkpoint is a "
                         "bidirectional mask-predict model")
    scored = len(ids) if args.max_tokens is None else min(len(ids), args.max_tokens)
    report["objective"] = "mask_predict"
    report["masked"] = []
    for ratio in MASK_RATIOS:
        with progress_bar(total=scored, desc=f"masked {ratio}", unit="tok", unit_scale=True,
                          disable=args.no_progress) as bar:
            result = masked_token_loss(trained.model, ids, trained.config.data.block_size, ratio, trained.mask_id,
                                       seed=args.mask_seed, batch_size=args.batch_size, device=args.device,
                                       max_tokens=args.max_tokens, progress=bar.update)
        report["masked"].append(result.to_dict())
        print(f"{trained.label} (step {trained.checkpoint.step}) on {report['source']}: masked-token loss at ratio "
              f"{ratio}: {result.loss:.4f} nats/token (perplexity {result.perplexity:.3f}) over "
              f"{result.masked_tokens:,} masked tokens, mask seed {args.mask_seed}")
    print(LEAK_NOT_APPLICABLE)
    report["leak_check"] = {"applies": False, "reason": LEAK_NOT_APPLICABLE}
    if args.canary:
        print("canary: does not apply to a bidirectional mask-predict model; it is not run")
    write_json(report, args.json)
    return 0


def leak_input(ids, block_size: int, windows: int = 2):
    """The first ``windows`` consecutive windows of the scored text, ``[W, block_size]``, as batched
    evaluation lays them out (one shorter window for a text shorter than one window)."""
    count = min(windows, len(ids) // block_size)
    if count == 0:
        return ids[:block_size].unsqueeze(0)
    return ids[:count * block_size].view(count, block_size)


def _canary(args, trained):
    """``--canary``: a fresh model of the checkpoint's config, trained on uniform tokens (:func:`canary_check`)."""
    import torch

    from ..common.progress import progress_bar
    from ..evaluate import canary_check
    from ..train.components import sosm_model_factory

    torch.manual_seed(0)
    model = sosm_model_factory(trained.config.model, trained.tokenizer.vocab_size, trained.config.data.block_size)
    # (only next-token runs get here: the canary does not apply to a mask-predict run)
    with progress_bar(total=args.canary_steps, desc="canary", unit="step", disable=args.no_progress) as bar:
        return canary_check(model.to(args.device), trained.tokenizer.vocab_size, trained.config.data.block_size,
                            steps=args.canary_steps, device=args.device, label=trained.label,
                            progress=lambda step, loss: bar.update(1))


def run(args) -> int:
    import torch

    from ..common.progress import progress_bar
    from ..data import read_text_file
    from ..evaluate import evaluate_ids, leak_check
    from ..evaluate.leak import has_memory
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
    if not args.leak_atol >= 0:
        raise ValueError(f"--leak-atol={args.leak_atol} is invalid; accepted: a float >= 0 (0: bit for bit)")
    if args.canary_steps < 1:
        raise ValueError(f"--canary-steps={args.canary_steps} is invalid; accepted: an int >= 1")
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
    if len(ids) < 2:
        raise ValueError(f"{report['source']} has {len(ids)} token(s); accepted: a text of at least 2 tokens")
    if trained.mask_predict:
        return _run_mask_predict(args, trained, ids, report)
    if getattr(args, "stream", False):
        return _run_stream(args, trained, ids, report)
    scored = len(ids) - 1 if args.max_tokens is None else min(len(ids) - 1, args.max_tokens)
    with progress_bar(total=scored, desc="eval", unit="tok", unit_scale=True, disable=args.no_progress) as bar:
        result = evaluate_ids(trained.model, trained.tokenizer, ids, block, batch_size=args.batch_size,
                              device=args.device, max_tokens=args.max_tokens, progress=bar.update)
    report.update(result.to_dict())
    print(f"{trained.label} (step {trained.checkpoint.step}) on {report['source']}: loss {result.loss:.4f} nats/token, "
          f"perplexity {result.perplexity:.3f}, bits/byte {result.bits_per_byte:.4f} over {result.tokens:,} tokens{tag}")
    status = 0
    if args.leak_check:
        windows = leak_input(ids, block).to(args.device)
        checks = windows.numel() - 1 + (windows.shape[0] if windows.shape[0] > 1 and not has_memory(trained.model) else 0)
        with progress_bar(total=checks, desc="leak check", unit="cut", disable=args.no_progress) as bar:
            leak = leak_check(trained.model, windows, atol=args.leak_atol, label=trained.label, progress=bar.update)
        report["leak_check"] = leak.to_dict()
        print(leak)
        status = status if leak.passed else EXIT_LEAK
    if args.canary:
        canary = _canary(args, trained)
        report["canary"] = canary.to_dict()
        print(canary)
        status = status if canary.passed else EXIT_LEAK
    write_json(report, args.json)
    return status


def write_json(report: dict, path) -> None:
    """``--json FILE``: the report, written atomically (checked before any evaluation by :func:`run`)."""
    from ..common.files import atomic_write
    from .checks import writing

    if path:
        with writing(path, "--json"):
            atomic_write(path, json.dumps(report, indent=2) + "\n")
