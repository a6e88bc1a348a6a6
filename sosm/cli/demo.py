"""``sosm demo``: offline, on a fresh machine, the whole text -> graph path in a few seconds.

The embedded default corpus (the standard library's ``pydoc_data`` topics) gives word
states (PPMI + SVD); a sample passage is tokenized into bytes, each byte takes its
word's state, the bytes are pooled into one node per word, and ``GraphBuilder`` links
each word to its most similar earlier words (causal) plus its predecessor.
"""
from __future__ import annotations

import argparse
from pathlib import Path

#: an original passage in the vocabulary of the default corpus
SAMPLE_PASSAGE = (
    "A function returns a value to its caller. A method is a function defined inside a class, "
    "and calling the method on an instance passes that instance as the first argument. "
    "When the function raises an exception, the handler of the try statement catches the exception, "
    "and the loop continues with the next item of the list or tuple. "
    "An integer or a floating point number can be converted to a string, "
    "and a dictionary maps each key to a value."
)

#: function words left out of the demo picture (they are similar to almost everything)
STOP_WORDS = frozenset("a an the of to and or as on in is be can its that with each when first next".split())

#: the demo's graph: causal, predecessor edge, up to 3 semantic neighbours by full 64-d cosine above 0.45
DEMO_GRAPH = {"causal": True, "window": 1, "k": 3, "similarity": "full", "threshold": 0.45}


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "demo", help="offline demo: default corpus -> states -> graph of a sample passage",
        description="Fits word states on the embedded default corpus, builds the graph of a sample passage and "
                    "writes DIR/graph.json, DIR/graph.html and DIR/graph.png.")
    parser.add_argument("--out", default="out/demo", metavar="DIR", help="output folder (default ./out/demo)")
    return parser


def run(args) -> int:
    from ..graph import GraphConfig
    from ..text_states import default_state_model
    from ..tokenizers import ByteTokenizer
    from .checks import check_output_dir
    from .graph import print_report
    from .pipeline import build_graph, write_outputs

    out = check_output_dir(Path(args.out), "--out")
    model = default_state_model()
    words = model.encode(SAMPLE_PASSAGE, ByteTokenizer()).word_level()
    states = words.subset([i for i, w in enumerate(words.labels) if w.isalpha() and w.lower() not in STOP_WORDS])
    graph = build_graph(GraphConfig(**DEMO_GRAPH), states.states, states.temporal, states.labels, progress=False)
    written = write_outputs(graph, str(out / "graph.json"), html=str(out / "graph.html"), png=str(out / "graph.png"))
    print(f"sosm demo: {len(SAMPLE_PASSAGE)} characters -> {len(words.ids)} words -> {len(states.ids)} content-word "
          f"nodes (function words and punctuation left out); states from {len(model.vocab)} words of the "
          f"embedded pydoc corpus (PPMI + SVD, 16 blocks x 4)")
    print_report(graph, written)
    return 0
