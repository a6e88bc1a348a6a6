"""``sosm inspect``: an offline HTML report (token graph, attributions, provenance, ablations) of a checkpoint on a text."""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "inspect", help="explain a checkpoint's predictions on a text: HTML report, PNG plots, JSON",
        description="Run DePass (exact decomposition of the logits), block and edge-type attribution, edge provenance "
                    "statistics and inference ablations of a trained checkpoint on a text, and write OUT/index.html "
                    "(standalone, opens offline), OUT/report.json and PNG plots. The text is cut to the model's "
                    "context (the run's block size); a notice says so when that happens.")
    parser.add_argument("--checkpoint", required=True, metavar="PATH",
                        help="a run folder (its newest checkpoint is used) or a checkpoint folder")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", help="the text to inspect")
    source.add_argument("--text-file", metavar="FILE", help="UTF-8 file with the text to inspect")
    parser.add_argument("--out", default="report", metavar="DIR", help="output folder (default ./report)")
    parser.add_argument("--max-tokens", type=int, metavar="N",
                        help="inspect at most N tokens (default and upper bound: the run's block size)")
    parser.add_argument("--no-ablations", action="store_true", help="skip the ablation table (faster)")
    return parser


def run(args) -> int:
    from ..analysis.report import write_report
    from ..data import read_text_file
    from ..train.loading import load_trained
    from .checks import check_output_dir

    check_output_dir(args.out, "--out")
    text = read_text_file(args.text_file) if args.text_file else args.text
    if not text or not text.strip():
        raise ValueError("the text to inspect is empty; pass a non-empty --text or --text-file")
    trained = load_trained(args.checkpoint, device="cpu")
    report, graph = inspect_text(trained, text, max_tokens=args.max_tokens, ablations=not args.no_ablations,
                                 notice=print)
    path = write_report(report, args.out, graph=graph)
    print(f"wrote {path} (+ report.json and PNG plots in {args.out}); loss on the text {report['loss']:.4f} nats/token")
    return 0


def inspect_text(trained, text: str, *, max_tokens=None, ablations: bool = True, notice=None):
    """``(report dict, graph or None)`` of a loaded checkpoint on ``text`` (shared with ``sosm serve``'s /v1/inspect).

    The text is cut to the model's context (``notice`` is called with a sentence saying so).
    """
    import torch

    from ..analysis.report import build_report

    limit = min(trained.config.data.block_size, trained.model.config.max_seq_len)
    if max_tokens is not None:
        if not 2 <= max_tokens <= limit:
            raise ValueError(f"--max-tokens={max_tokens} is invalid; accepted: 2..{limit} (the model's context)")
        limit = max_tokens
    ids = trained.tokenizer.encode(text)
    if len(ids) < 2:
        raise ValueError(f"the text has {len(ids)} token(s); inspect needs at least 2")
    if len(ids) > limit:
        if notice is not None:
            notice(f"note: the text has {len(ids)} tokens; inspecting the first {limit} (the model's context)")
        ids = ids[:limit]
    labels = ["␣" if label == " " else label for label in trained.tokenizer.token_labels(ids)]
    input_ids = torch.tensor([ids], dtype=torch.long)
    meta = {"checkpoint": str(trained.checkpoint.path), "step": trained.checkpoint.step, "name": trained.label,
            "leaky": trained.leaky, "text": trained.tokenizer.decode(ids)}
    report = build_report(trained.model, input_ids, labels, ablations=ablations, meta=meta,
                          label_of=lambda i: trained.tokenizer.token_labels([i])[0])
    graph = None
    if trained.model.config.uses_graph:
        _, state = trained.model(input_ids)
        graph = state.graph
    return report, graph
