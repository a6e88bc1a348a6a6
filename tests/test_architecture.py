"""The shape of the house (docs/ARCHITECTURE.md): imports point one way, no cycles, a pinned public surface.

Every module's imports are parsed with ``ast`` (module level and inside functions alike), so a
lazy import cannot hide an upward dependency. Changing the public surface means changing
:data:`PUBLIC` here: a deliberate diff, reviewed like any other.
"""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: top-level folder -> import name (setup.py's ROOMS)
ROOMS = {"sosm": "sosm", "graph": "sosm.graph", "kernels": "sosm.kernels", "memory": "sosm.memory",
         "analysis": "sosm.analysis"}
#: layer of each room, lowest first; a module may import its own room and rooms of lower layers only
LAYERS = {
    "sosm.common": 0,
    "sosm.graph": 1, "sosm.kernels": 1, "sosm.tokenizers": 1, "sosm.data": 1,
    "sosm.memory": 2, "sosm.text_states": 2,
    "sosm.model": 3,
    "sosm.analysis": 4, "sosm.evaluate": 4, "sosm.stream": 4,
    "sosm.train": 5,
    "sosm.serve": 6,
    "sosm.cli": 7,
}

PUBLIC = {
    "sosm": ["SOSMConfig", "SOSMModel", "__version__"],
    "sosm.graph": ["EDGE_TYPES", "GraphBuilder", "GraphCache", "GraphConfig", "STAGES", "SemanticGraph",
                   "TemporalGate", "UNREACHABLE", "adaptive_k", "betweenness_shortcuts", "dense_topk",
                   "fibonacci_shortcuts", "format_summary", "from_json", "landmark_distances", "load_json",
                   "mutual_filter", "random_walk_encoding", "save_graphml", "save_json", "select_landmarks",
                   "sequential_edges", "streaming_topk", "summary", "to_block_mask", "to_dense_mask", "to_html",
                   "to_json", "to_neighbor_index", "to_networkx", "to_png", "to_pyg"],
    "sosm.kernels": ["GraphLayout", "causal_conv1d", "causal_conv1d_update", "graph_attention", "selective_scan",
                     "selective_state_update", "topk_similarity"],
    "sosm.memory": ["HNSWMemory", "RetrievalResult", "integrate_into_graph", "memory_node_states"],
    "sosm.analysis": ["BlockAttribution", "DePass", "DePassResult", "GradientBlockAttributionCallback", "PARTITIONS",
                      "block_attribution", "build_report", "compare_senses", "deletion_curve", "probe_sentence",
                      "provenance_report", "run_ablations", "token_attribution", "write_report"],
    "sosm.model": ["POSITIONALS", "SOSMConfig", "SOSMModel", "State", "matched_config", "mixers", "model_kinds",
                   "param_count"],
    "sosm.model.mixers": ["AttentionBlock", "DenseAttention", "GraphAttention", "Mamba2", "Mixer", "MixtureOfDepths",
                          "MoEFeedForward", "RWKV6", "RetNet",
                          "TopologicalMamba", "build_mixer", "get_mixer", "mixer_names", "register_mixer",
                          "resolve_mixer_name", "S4", "OscillatorySSM", "CfC", "Performer", "CosFormer",
                          "SlidingWindowSigmoidAttention", "DifferentialAttention", "LSHAttention", "FNet", "Linformer",
                          "MultiBlockAttention", "TripleHybrid"],
    "sosm.model.routing": ["Routing", "auxiliary_loss", "clip_to_capacity", "expert_choice", "load_balancing_loss",
                           "prefix_capacity", "rank_scores", "router_z_loss", "routing_layers", "routing_stats",
                           "soft_routing", "token_choice", "token_routes"],
    "sosm.common": ["BLOCK_DIM", "BLOCK_NAMES", "DEFAULT_BLOCK_WEIGHTS", "N_BLOCKS", "SEMANTIC_DIM", "TEMPORAL_DIM",
                    "atomic_dir", "atomic_path", "atomic_write", "block_index", "block_slice", "check", "fsync_dir",
                    "is_int", "is_number", "reject_unknown_keys", "rename_keys", "write_synced"],
    "sosm.data": ["Batch", "BatchSampler", "DATA_DIR_ENV", "DataUnavailableError", "IGNORE_INDEX", "RecallData",
                  "RecallSplits", "RecallTaskConfig", "TINYSHAKESPEARE_SHA256", "TINYSHAKESPEARE_SIZE", "TokenSplits",
                  "answer_sources", "decode_text", "default_corpus", "format_example", "get_batch", "induction_head",
                  "load_tinyshakespeare", "make_recall_splits", "mqar", "read_text_file", "selective_copying",
                  "split_ids", "verify_file"],
    "sosm.evaluate": ["CanaryReport", "EvalResult", "LN2", "LeakReport", "canary_check", "evaluate_ids",
                      "evaluate_text", "evaluate_tokens", "leak_check", "model_logits"],
    "sosm.tokenizers": ["BPETokenizer", "ByteTokenizer", "CONFIG_FILE", "TOKENIZERS", "Tokenizer", "WORD_PATTERN",
                        "WordSpans", "display_label", "find_words", "load_tokenizer", "word_spans"],
    "sosm.serve": ["APIError", "ExportError", "ModelQueue", "OnnxForward", "QueueFull", "SOSMClient", "ServeLimits",
                   "create_app", "export_onnx", "graph_inputs", "serve", "verify_onnx"],
    "sosm.train": ["Checkpoint", "CheckpointError", "DataConfig", "OptimConfig", "TrainConfig", "TrainResult",
                   "Trainer", "find_checkpoint", "lr_at", "read_checkpoint", "write_checkpoint"],
}
CLI_SUBCOMMANDS = ("demo", "graph", "train_cmd", "eval_cmd", "generate_cmd", "inspect_cmd", "recall_cmd", "finetune_cmd",
                   "distill_cmd", "quantize_cmd", "export_cmd", "serve_cmd")


def _modules() -> dict[str, tuple[Path, bool]]:
    """``{module name: (file, is a package __init__)}`` for every module of the distribution."""
    found = {}
    for folder, package in ROOMS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = [p for p in path.relative_to(REPO / folder).with_suffix("").parts if p != "__init__"]
            found[".".join([package, *parts])] = (path, path.name == "__init__.py")
    return found


MODULES = _modules()


def _imports(module: str, path: Path, is_package: bool) -> set[str]:
    """Our modules that ``module`` imports anywhere in its file (resolved to the longest known module name)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = module.split(".") if is_package else module.split(".")[:-1]
            if node.level:
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{alias.name}" if f"{target}.{alias.name}" in MODULES else target
                     for alias in node.names]
        else:
            continue
        for name in names:
            if name == "sosm" or not name.startswith("sosm."):
                continue  # the package root (``__version__``) and third-party code
            while name not in MODULES and "." in name:
                name = name.rsplit(".", 1)[0]
            if name != module:
                out.add(name)
    return out


GRAPH = {module: _imports(module, *where) for module, where in MODULES.items()}


def _room(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def test_every_module_belongs_to_a_layer():
    rooms = {_room(m) for m in MODULES} - {"sosm"}
    assert rooms <= set(LAYERS), f"rooms without a layer in LAYERS: {sorted(rooms - set(LAYERS))}"


def test_imports_point_down_the_layers():
    upward = []
    for module, targets in GRAPH.items():
        if module == "sosm":
            continue  # the package root's lazy facade (SOSMConfig, SOSMModel)
        source = _room(module)
        for target in targets:
            dest = _room(target)
            if dest != source and not LAYERS[dest] < LAYERS[source]:
                upward.append(f"{module} -> {target} ({source} layer {LAYERS[source]}, {dest} layer {LAYERS[dest]})")
    assert not upward, "imports that do not point to a lower layer:\n" + "\n".join(sorted(upward))


def test_the_leaf_imports_nothing_of_ours_but_itself():
    for module, targets in GRAPH.items():
        if _room(module) == "sosm.common":
            assert all(_room(t) == "sosm.common" for t in targets), (module, targets)


def test_no_import_cycles():
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []
    counter = [0]

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in GRAPH:
        if module not in index:
            visit(module)
    assert not cycles, f"import cycles: {cycles}"


def test_the_checker_sees_lazy_and_relative_imports():
    """The parser itself: a function-level relative import is found and resolved."""
    assert "sosm.model.generation" in GRAPH["sosm.model.model"]  # imported inside SOSMModel.decoder
    assert "sosm.common.files" in GRAPH["sosm.graph.io"]


@pytest.mark.parametrize("package", sorted(PUBLIC))
def test_public_surface_is_pinned(package):
    module = importlib.import_module(package)
    assert sorted(module.__all__) == sorted(PUBLIC[package]), (
        f"{package}.__all__ changed: added {sorted(set(module.__all__) - set(PUBLIC[package]))}, "
        f"removed {sorted(set(PUBLIC[package]) - set(module.__all__))}; update PUBLIC if this is deliberate")
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing, f"{package}.__all__ names that do not exist: {missing}"


def test_cli_subcommands_are_pinned():
    from sosm.cli import SUBCOMMANDS

    assert SUBCOMMANDS == CLI_SUBCOMMANDS
