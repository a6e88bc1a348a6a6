"""``sosm recall``: train and score models on synthetic recall (MQAR, ...) over a resumable grid of cells."""
from __future__ import annotations

import argparse

MODELS = ("transformer", "mamba", "hybrid", "graph_attention")

#: the CI cell: every model at a toy size, a few seconds each
TINY = dict(shapes=[(16, 2)], widths=[32], lrs=[3e-3], seeds=[0], steps=30, batch_size=16, vocab_size=64,
            num_train=256, num_test=64)


def _shape(text: str) -> tuple:
    try:
        seq_len, kv = (int(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not T:KV (for example 64:4)") from None
    return seq_len, kv


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "recall", help="train and score models on MQAR / induction-head / selective-copying cells",
        description="Train every (shape, width, model, lr, seed) cell of a grid on a synthetic recall task and "
                    "score exact-match accuracy at the answer positions of a held-out test set. Cells run one "
                    "by one; each row is written to --out as it finishes, and cells already there are skipped, "
                    "so a stopped grid resumes. Prints the best lr per (model, T, kv, d_model), as Zoology reports.")
    parser.add_argument("--tiny", action="store_true",
                        help="a toy grid (T=16, 2 pairs, vocabulary 64, width 32, 30 steps) for CI; the explicit "
                             "options below still override it")
    parser.add_argument("--task", default="mqar", choices=("mqar", "induction_head", "selective_copying"))
    parser.add_argument("--models", nargs="+", default=list(MODELS), metavar="MODEL",
                        help=f"models to train (default all: {' '.join(MODELS)}); any model kind is accepted, "
                             "e.g. lsh_attention (content-addressed like graph attention; knobs via --set "
                             "lsh_buckets=8)")
    parser.add_argument("--shapes", nargs="+", type=_shape, metavar="T:KV",
                        help="(sequence length, kv pairs) pairs (default 64:4)")
    parser.add_argument("--widths", nargs="+", type=int, metavar="D", help="d_model values (default 64 128)")
    parser.add_argument("--lrs", nargs="+", type=float, metavar="LR",
                        help="learning rates (default Zoology's four, 1e-4..1e-2 log-spaced)")
    parser.add_argument("--seeds", nargs="+", type=int, metavar="S", help="model seeds (default 0)")
    parser.add_argument("--steps", type=int, help="optimiser steps per cell (default 2000)")
    parser.add_argument("--batch-size", type=int, help="rows per step (default 64)")
    parser.add_argument("--vocab-size", type=int, help="vocabulary (default 8192, Zoology)")
    parser.add_argument("--num-train", type=int, help="fixed training rows (default 100000)")
    parser.add_argument("--num-test", type=int, help="held-out test rows (default 1000)")
    parser.add_argument("--fresh-data", action="store_true", help="a new batch every step instead of epochs")
    parser.add_argument("--zero-filler", action="store_true",
                        help="MQAR filler 0 instead of random tokens (Zoology's figure-2 configs)")
    parser.add_argument("--layer-pattern", default="MA", help="hybrid layer pattern (default MA)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="an SOSMConfig field for every model of the grid, dotted for the graph "
                             "(e.g. --set graph.successor_edges=true --set graph.k=4); VALUE is read as YAML; repeatable")
    parser.add_argument("--label", default="", help="name of these models in tables and plots (default: the model)")
    parser.add_argument("--mlp-ratio", type=float, metavar="R",
                        help="MLP width of the attention layers as a multiple of d_model; 0: no MLP, as Zoology's "
                             "MQAR models (default: the model's own, 4)")
    parser.add_argument("--eval-every", type=int, default=0, metavar="N",
                        help="score eval rows every N steps (curve in the row; default only at the end)")
    parser.add_argument("--stop-at", type=float, default=1.1, metavar="ACC",
                        help="end a cell early once an interim accuracy reaches ACC (Zoology: 0.99; default off)")
    parser.add_argument("--out", default="recall.json", metavar="JSON", help="results file (default recall.json)")
    parser.add_argument("--inspect", metavar="DIR",
                        help="write each trained cell's inspect report on a test row (graph, attribution, and the "
                             "recall table: per query, whether the graph links its key and its value) into DIR")
    parser.add_argument("--save", metavar="DIR",
                        help="save each trained cell's model (save_pretrained) and its cell.json into DIR/<cell>/, "
                             "to load with SOSMModel.from_pretrained for analysis")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def model_overrides(args) -> dict:
    """``--mlp-ratio`` and every ``--set KEY=VALUE`` as a nested dict of SOSMConfig fields."""
    import yaml

    overrides: dict = {} if args.mlp_ratio is None else {"mlp_ratio": args.mlp_ratio}
    for item in args.overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r} is invalid; accepted: KEY=VALUE, e.g. graph.successor_edges=true")
        *parents, leaf = key.split(".")
        target = overrides
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = yaml.safe_load(text)
    return overrides


def run(args) -> int:
    import torch

    from ..train.recall_grid import ZOOLOGY_LRS, best_lr_summary, cell_key, format_summary, grid_cells, run_grid

    from .checks import check_output_dir, check_output_file

    if args.threads < 1:
        raise ValueError(f"--threads={args.threads} is invalid; accepted: an int >= 1")
    check_output_file(args.out, "--out")  # before any cell trains: a cell's minutes are not lost to a bad path
    for option, folder in (("--inspect", args.inspect), ("--save", args.save)):
        if folder is not None:
            check_output_dir(folder, option)
    torch.set_num_threads(args.threads)
    defaults = dict(TINY) if args.tiny else dict(shapes=[(64, 4)], widths=[64, 128], lrs=list(ZOOLOGY_LRS),
                                                 seeds=[0])
    grid = {name: getattr(args, name) or defaults.get(name) for name in ("shapes", "widths", "lrs", "seeds")}
    common = {name: getattr(args, name) for name in ("steps", "batch_size", "vocab_size", "num_train", "num_test")}
    common = {name: value if value is not None else defaults.get(name) for name, value in common.items()}
    common = {name: value for name, value in common.items() if value is not None}
    cells = grid_cells(args.models, grid["shapes"], grid["widths"], grid["lrs"], grid["seeds"], task=args.task,
                       fresh_data=args.fresh_data, random_non_queries=not args.zero_filler,
                       layer_pattern=args.layer_pattern, eval_every=args.eval_every, stop_at=args.stop_at,
                       model_overrides=model_overrides(args), label=args.label,
                       progress=not args.no_progress, **common)
    print(f"sosm recall: {len(cells)} cells ({args.task}; models {' '.join(args.models)}) -> {args.out}")
    rows = run_grid(cells, args.out, inspect_dir=args.inspect, save_dir=args.save)
    wanted = {cell.key() for cell in cells}
    print(format_summary(best_lr_summary([row for row in rows if cell_key(row) in wanted])))
    return 0
