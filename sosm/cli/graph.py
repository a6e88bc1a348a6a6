"""``sosm graph``: build the semantic graph of a text and write it as JSON (and HTML/PNG/GraphML)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..graph.view import VIEW_MAX_NODES
from .large_graph import EXACT_DISTINCT_MAX, LARGE_TEXT_NODES, RECALL_SAMPLE
from .pipeline import DEFAULT_CHUNK


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "graph", help="build the semantic graph of a text",
        description="Text -> tokens -> states -> sosm.graph.GraphBuilder -> JSON/HTML/PNG/GraphML, and a summary. "
                    "States come from corpus statistics (PPMI + SVD, no training) or a saved StateModel directory.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text-file", metavar="F", help="UTF-8 text file")
    source.add_argument("--text", metavar="S", help="the text itself")
    parser.add_argument("--states", default="corpus", metavar="corpus|DIR",
                        help="'corpus': fit states on --corpus (default); DIR: a saved StateModel directory, or a "
                             "training checkpoint (the model's semantic/temporal states and its own tokenizer)")
    parser.add_argument("--corpus", default="default", metavar="default|tinyshakespeare|PATH",
                        help="corpus for the states and the BPE tokenizer (default: the embedded pydoc topics)")
    parser.add_argument("--tokenizer", default="byte", metavar="byte|bpe|DIR",
                        help="byte (default), bpe (trained on --corpus), or a saved tokenizer directory")
    parser.add_argument("--bpe-vocab", type=int, default=1024, help="vocab size when --tokenizer bpe (default 1024)")
    parser.add_argument("--nodes", choices=("token", "byte", "word"), default="token",
                        help="one node per token (default; 'byte' says the same with the byte tokenizer) or per word "
                             "(mean state of its tokens)")
    parser.add_argument("--config", metavar="G.yaml", help="GraphConfig as YAML/JSON (unknown keys are rejected)")
    parser.add_argument("--k", type=int, help="semantic neighbours per node (GraphConfig.k)")
    parser.add_argument("--window", type=int, help="sequential window (GraphConfig.window)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--causal", dest="causal", action="store_true", default=None, help="causal graph (default)")
    mode.add_argument("--bidirectional", dest="causal", action="store_false", help="bidirectional (analysis) graph")
    parser.add_argument("--similarity", choices=("full", "blocks", "projection"), help="GraphConfig.similarity")
    parser.add_argument("--adaptive-k", action="store_true", default=None, help="entropy-adaptive K")
    parser.add_argument("--mutual", action="store_true", default=None, help="mutual k-NN filter")
    parser.add_argument("--threshold", type=float, help="keep semantic edges with similarity above this")
    parser.add_argument("--fibonacci-shortcuts", action="store_true", default=None, help="Fibonacci shortcuts")
    parser.add_argument("--betweenness-shortcuts", type=int, help="bridging hubs per chunk")
    parser.add_argument("--num-landmarks", type=int, help="landmarks L (0 disables)")
    parser.add_argument("--topk", choices=("auto", "window", "exact", "hnsw"), default="auto",
                        help=f"'window': GraphBuilder on windows of --chunk nodes (every option, JSON); 'exact' / "
                             f"'hnsw': the whole-text graph (every node's k best earlier nodes in the whole text; "
                             f"distinct states ranked exactly or by hnswlib), written as .npz or .jsonl with its "
                             f"measured recall; 'auto' (default): window up to {LARGE_TEXT_NODES:,} nodes, above it "
                             f"exact up to {EXACT_DISTINCT_MAX:,} distinct states, else hnsw")
    parser.add_argument("--chunk", type=int, default=DEFAULT_CHUNK,
                        help=f"nodes per window on the window path (default {DEFAULT_CHUNK}); each window is one sample")
    parser.add_argument("--recall-sample", type=int, default=RECALL_SAMPLE, metavar="N",
                        help=f"whole-text path: nodes whose exact top-k measures the recall (default {RECALL_SAMPLE})")
    parser.add_argument("--out", required=True, metavar="G.json|G.npz|G.jsonl",
                        help="window path: graph JSON (nodes, edges with provenance); whole-text path: .npz arrays "
                             "or .jsonl (one line per node)")
    parser.add_argument("--view-start", type=int, metavar="N",
                        help=f"first node of the HTML/PNG view when the graph has more than {VIEW_MAX_NODES} nodes "
                             f"(default: 0 on the window path, a window dense in semantic edges on the whole-text path)")
    parser.add_argument("--html", metavar="G.html", help="interactive HTML view")
    parser.add_argument("--png", metavar="G.png", help="static picture")
    parser.add_argument("--graphml", metavar="G.graphml", help="GraphML export")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


CONFIG_OVERRIDES = ("k", "window", "causal", "similarity", "adaptive_k", "mutual", "threshold",
                    "fibonacci_shortcuts", "betweenness_shortcuts", "num_landmarks")


def load_states(args, text: str):
    """``TextStates`` of ``text`` for ``--states`` / ``--corpus`` / ``--tokenizer``."""
    from ..text_states import StateModel, default_state_model
    from .pipeline import checkpoint_states, is_checkpoint, load_corpus, make_tokenizer

    if is_checkpoint(args.states):
        states = checkpoint_states(args.states, text, progress=not args.quiet)
        return states.word_level() if args.nodes == "word" else states
    corpus = load_corpus(args.corpus) if (args.corpus != "default" or args.tokenizer == "bpe") else None
    tokenizer = make_tokenizer(args.tokenizer, corpus or "", args.bpe_vocab)
    if args.states == "corpus":
        model = default_state_model() if corpus is None or args.corpus == "default" else StateModel.fit(corpus)
    else:
        model = StateModel.load(args.states)
    states = model.encode(text, tokenizer)
    return states.word_level() if args.nodes == "word" else states


def run(args) -> int:
    from ..data import read_text_file
    from .checks import check_output_file
    from .large_graph import Stopwatch, build_text_graph, choose_method, format_text_summary, text_nodes
    from .text_graph_files import write_text_outputs
    from .pipeline import build_graph, load_graph_config, write_outputs

    for option, path in (("--out", args.out), ("--html", args.html), ("--png", args.png), ("--graphml", args.graphml)):
        if path is not None:
            check_output_file(path, option)
    text = read_text_file(args.text_file) if args.text_file else args.text
    if not text or not text.strip():
        raise ValueError("--text is empty; accepted: at least one non-whitespace character")
    if args.nodes == "byte":
        if args.tokenizer != "byte":
            raise ValueError(f"--nodes byte needs --tokenizer byte, got --tokenizer {args.tokenizer!r}")
        args.nodes = "token"
    if args.recall_sample < 1:
        raise ValueError(f"--recall-sample {args.recall_sample} is invalid; accepted: an int >= 1")
    config = load_graph_config(args.config, {key: getattr(args, key) for key in CONFIG_OVERRIDES})
    method = "window"
    if args.topk != "window":
        stage = Stopwatch()
        nodes = text_nodes(args, text)
        states_time = stage.lap()
        method = choose_method(args.topk, nodes.num_nodes, int(nodes.table.shape[0]))
        if not args.quiet and method != "window":
            print(f"states: {nodes.num_nodes:,} {nodes.kind} nodes, {nodes.table.shape[0]:,} distinct "
                  f"({states_time['wall_s']:.1f} s)", file=sys.stderr)
    if method == "window":
        check_suffix(args.out, (".json",), "the window path")
        states = load_states(args, text)
        config = fit_to_length(config, states.states.shape[0], args.nodes, chunk=args.chunk)
        graph = build_graph(config, states.states, states.temporal, states.labels, chunk=args.chunk,
                            progress=not args.quiet)
        written = write_outputs(graph, args.out, args.html, args.png, args.graphml, view_start=args.view_start)
        print_report(graph, written)
        return 0
    check_suffix(args.out, (".npz", ".jsonl"), f"the whole-text path ({nodes.num_nodes:,} nodes, --topk {method})")
    if args.graphml:
        raise ValueError("--graphml is written on the window path only (--topk window); the whole-text graph is "
                         "arrays (.npz) or JSON lines (.jsonl)")
    text_graph = build_text_graph(config, nodes, method, progress=not args.quiet, recall_sample=args.recall_sample)
    text_graph.meta["timings"] = {"states": states_time, **text_graph.meta["timings"]}
    stage = Stopwatch()
    written = write_text_outputs(text_graph, args.out, args.html, args.png, view_start=args.view_start)
    spent = stage.lap()
    print(format_text_summary(text_graph))
    for path in written:
        print(f"wrote {path}")
    print(f"writing took {spent['wall_s']:.1f} s wall / {spent['cpu_s']:.1f} s CPU")
    sys.stdout.flush()
    return 0


def check_suffix(path: str, accepted: tuple, where: str) -> None:
    if Path(path).suffix.lower() not in accepted:
        raise ValueError(f"--out {path!r}: {where} writes {' or '.join(accepted)} files; accepted suffixes: "
                         f"{', '.join(accepted)}")


def fit_to_length(config, total: int, kind: str = "token", chunk: int = DEFAULT_CHUNK):
    """``config`` with K lowered to what a window of ``min(total, chunk)`` nodes allows (T >= K + 3), with a warning.

    A short text (a few words, a handful of BPE tokens) still gets its graph, with as many semantic
    neighbours as it can have; the warning says what was asked and what was used. Fewer than
    4 nodes (K = 1 needs T >= 4) raise ``ValueError``.
    """
    from dataclasses import replace

    nodes = min(total, chunk)
    if nodes >= config.min_seq_len:
        return config
    if nodes < 4:
        fix = f"--chunk >= 4 (now {chunk})" if chunk < total else "a longer text"
        raise ValueError(f"the text has {total} {kind} node(s){f' in windows of {chunk}' if chunk < total else ''}; "
                         f"a graph needs at least 4 (K = 1 semantic neighbour needs T >= K + 3); accepted: {fix}")
    most = nodes - 3
    if config.adaptive_k:
        fitted = replace(config, k_max=most, k=min(config.k, most), k_min=min(config.k_min, config.k, most))
        asked = f"k_max={config.k_max}"
    else:
        fitted = replace(config, k=most)
        asked = f"k={config.k}"
    where = f"the text has {nodes} {kind} nodes" if nodes == total else f"the windows have {nodes} nodes (--chunk)"
    print(f"warning: {where} and {asked} needs at least {config.min_seq_len} "
          f"(K + 3): building with {'k_max' if config.adaptive_k else 'k'}={most}, the most {nodes} nodes allow",
          file=sys.stderr)
    return fitted


def print_report(graph, written) -> None:
    from ..graph.view import format_summary

    print(format_summary(graph))
    for path in written:
        print(f"wrote {path}")
    sys.stdout.flush()
