"""``sosm serve``: an HTTP server over a checkpoint (OpenAI-style completions, graph, inspect, metrics)."""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    from ..serve.limits import ServeLimits

    defaults = ServeLimits()
    parser = subparsers.add_parser(
        "serve", help="serve a checkpoint over HTTP (completions, graph, inspect, metrics)",
        description="Serve a checkpoint with FastAPI + uvicorn: POST /v1/completions (OpenAI's subset: prompt, "
                    "max_tokens, temperature, top_k, seed, stream), POST /v1/graph, POST /v1/inspect, GET /healthz, "
                    "GET /metrics (Prometheus). Requests run one at a time on the model behind a bounded queue "
                    "(beyond --queue-size waiting: 429); limits are answered with a 4xx naming them; SIGTERM stops "
                    "accepting, lets in-flight requests finish (up to --drain-seconds), then exits 143 (Ctrl-C: 130).")
    parser.add_argument("--checkpoint", required=True, metavar="PATH",
                        help="a run folder (its newest checkpoint is used) or a checkpoint folder (INT8 ones too)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port, printed)")
    parser.add_argument("--queue-size", type=int, default=defaults.queue_size, metavar="N",
                        help=f"requests that may wait for the model (default {defaults.queue_size})")
    parser.add_argument("--max-body-bytes", type=int, default=defaults.max_body_bytes, metavar="N",
                        help=f"largest request body (default {defaults.max_body_bytes})")
    parser.add_argument("--max-prompt-tokens", type=int, default=None, metavar="N",
                        help="longest prompt in tokens (default and upper bound: the model's context)")
    parser.add_argument("--max-tokens", type=int, default=defaults.max_tokens, metavar="N",
                        help=f"most new tokens per completion (default {defaults.max_tokens})")
    parser.add_argument("--max-text-tokens", type=int, default=defaults.max_text_tokens, metavar="N",
                        help=f"longest /v1/graph text in tokens (default {defaults.max_text_tokens})")
    parser.add_argument("--drain-seconds", type=float, default=defaults.drain_seconds, metavar="S",
                        help=f"after SIGTERM, time given to in-flight requests (default {defaults.drain_seconds:g})")
    parser.add_argument("--threads", type=int, default=None, metavar="N", help="torch intra-op threads (default: torch's)")
    parser.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"),
                        help="uvicorn's log level (default warning)")
    return parser


def graph_json(trained, text: str, nodes: str, options: dict) -> dict:
    """What ``sosm graph --text TEXT --states CHECKPOINT --nodes NODES --out G.json`` writes, as a dict."""
    from ..graph.io import to_json
    from .graph import CONFIG_OVERRIDES
    from .pipeline import build_graph, checkpoint_states, load_graph_config

    unknown = sorted(set(options) - set(CONFIG_OVERRIDES))
    if unknown:
        raise ValueError(f"graph options {unknown} are not accepted; accepted: {list(CONFIG_OVERRIDES)}")
    config = load_graph_config(None, options)
    states = checkpoint_states(trained, text, progress=False)
    states = states.word_level() if nodes == "word" else states
    return to_json(build_graph(config, states.states, states.temporal, states.labels, progress=False))


def run(args) -> int:
    import time

    import torch

    from ..serve.limits import ServeLimits
    from ..serve.server import serve
    from ..train.loading import load_trained
    from .inspect_cmd import inspect_text

    limits = ServeLimits(queue_size=args.queue_size, max_body_bytes=args.max_body_bytes,
                         max_prompt_tokens=args.max_prompt_tokens, max_tokens=args.max_tokens,
                         max_text_tokens=args.max_text_tokens, drain_seconds=args.drain_seconds)
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port={args.port} is invalid; accepted: 0..65535")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads={args.threads} is invalid; accepted: an int >= 1")
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    trained = load_trained(args.checkpoint, device="cpu")
    load_seconds = time.perf_counter() - start
    return serve(trained, host=args.host, port=args.port, limits=limits, load_seconds=load_seconds,
                 graph_fn=lambda text, nodes, options: graph_json(trained, text, nodes, options),
                 inspect_fn=lambda text, ablations: inspect_text(trained, text, ablations=ablations)[0],
                 log_level=args.log_level)
