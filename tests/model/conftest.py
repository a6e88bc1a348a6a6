"""Tiny model configs for the model tests; graph-based cases skip until sosm.graph ships GraphBuilder."""
import importlib

import pytest
import torch

from sosm.model import SOSMConfig, SOSMModel

VOCAB = 40
SEQ = 16
#: knobs that make a mixer's own limits bind at SEQ (a window shorter than SEQ, buckets that split it, ...)
MIXER_KNOBS = {"performer": {"performer_features": 16}, "sw_attention": {"attention_window": 5},
               "lsh_attention": {"lsh_buckets": 4, "lsh_rounds": 2, "lsh_window": 3},
               "triple": {"triple_window": 3},  # its global branch: the default, cosformer
               "linformer": {"linformer_k": 5}}


def graph_available() -> bool:
    try:
        graph = importlib.import_module("sosm.graph")
        importlib.import_module("sosm.graph.convert")
    except ImportError:
        return False
    return hasattr(graph, "GraphBuilder")


#: (model, positional) pairs covering every layer type and every positional encoding
CASES = [
    ("transformer", "rope"),
    ("transformer", "none"),
    ("mamba", "rope"),
    ("graph_attention", "rope"),
    ("graph_attention", "graph_rope"),
    ("graph_attention", "graph_alibi"),
    ("graph_attention", "none"),
    ("hybrid", "rope"),
    ("hybrid", "graph_rope"),
    ("hybrid", "graph_alibi"),
]
CASE_IDS = [f"{m}-{p}" for m, p in CASES]
#: random-walk graph coordinates instead of landmark distances (tests/model/test_structure_rwpe.py)
RWPE = {"structure": "rwpe", "rwpe_steps": 5}
#: the MQAR recall setting (experiments/results/recall.md): successor edges, one semantic neighbour
RECALL_GRAPH = {"graph": {"k": 1, "window": 1, "max_distance": 16, "successor_edges": True}}


def tiny_config(model="hybrid", positional="rope", num_landmarks=4, **overrides) -> SOSMConfig:
    graph = overrides.pop("graph", {"k": 4, "window": 1, "max_distance": 16})
    settings = dict(model=model, positional=positional, vocab_size=VOCAB, max_seq_len=32, d_model=32, n_heads=2,
                    n_layers=3, layer_pattern="AMA" if model == "hybrid" else "AMMM", d_state=8,
                    struct_dim=8, graph={**graph, "num_landmarks": num_landmarks})
    settings.update(overrides)
    return SOSMConfig(**settings)


def tiny_model(model="hybrid", positional="rope", seed=0, **overrides) -> SOSMModel:
    config = tiny_config(model, positional, **overrides)
    if config.uses_graph and not graph_available():
        pytest.skip("sosm.graph.GraphBuilder / sosm.graph.convert not available yet")
    torch.manual_seed(seed)
    return SOSMModel(config).eval()


def random_ids(batch=2, seq=SEQ, seed=0):
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))
