"""Text -> tokens -> states -> graph -> files: the steps shared by ``sosm graph`` and ``sosm demo``."""
from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence

import torch

#: a text longer than this many nodes is cut into windows of this many nodes, one sample each
DEFAULT_CHUNK = 1024


def make_tokenizer(spec: str, corpus: str, bpe_vocab: int = 1024):
    """``"byte"``, ``"bpe"`` (trained on ``corpus`` with ``bpe_vocab`` ids) or a saved tokenizer directory."""
    from ..tokenizers import BPETokenizer, ByteTokenizer, load_tokenizer

    if spec == "byte":
        return ByteTokenizer()
    if spec == "bpe":
        return BPETokenizer.train(corpus, vocab_size=bpe_vocab)
    if Path(spec).is_dir():
        return load_tokenizer(spec)
    raise ValueError(f"--tokenizer {spec!r} is invalid; accepted: 'byte', 'bpe' or a directory written by save()")


def load_corpus(spec: str) -> str:
    """``"default"`` (embedded), ``"tinyshakespeare"`` or a UTF-8 text file path."""
    from ..data import default_corpus, load_tinyshakespeare, read_text_file

    if spec == "default":
        return default_corpus()
    if spec == "tinyshakespeare":
        return load_tinyshakespeare()
    return read_text_file(spec)


def is_checkpoint(spec: str) -> bool:
    """``--states``: True for a checkpoint (or run) directory, False for ``corpus`` or a StateModel directory.

    Raises ``ValueError`` for anything else.
    """
    if spec == "corpus" or Path(spec, "state_model.json").is_file():
        return False
    if not Path(spec).is_dir():
        raise ValueError(f"--states {spec!r} is invalid; accepted: 'corpus', a StateModel directory "
                         f"(with state_model.json) or a checkpoint directory")
    return True


def load_graph_config(path: Optional[str], overrides: dict):
    """A ``GraphConfig`` from a YAML/JSON file (unknown keys rejected) with command-line overrides."""
    from ..graph import GraphConfig

    data = {}
    if path is not None:
        data = _read_config_file(Path(path))
    data.update({key: value for key, value in overrides.items() if value is not None})
    try:
        return GraphConfig.from_dict(data)
    except (TypeError, ValueError) as err:  # a value of the wrong type in the file reaches a comparison
        raise ValueError(f"{path}: {err}" if path is not None else str(err)) from None


def _read_config_file(path: Path) -> dict:
    """The mapping in a YAML or JSON (``.json``) file; every error names the file."""
    import yaml

    if path.is_dir():
        raise ValueError(f"--config {path} is a directory; accepted: a YAML or JSON file of GraphConfig keys")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"--config {path} is not UTF-8 text (byte 0x{raw[err.start]:02x} at byte offset {err.start}); "
                         f"accepted: a YAML or JSON file of GraphConfig keys") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        kind = "JSON" if path.suffix == ".json" else "YAML"
        detail = " ".join(str(err).split())
        raise ValueError(f"--config {path} is not valid {kind}: {detail}") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: a graph config must be a mapping of GraphConfig keys, got "
                         f"{type(data).__name__}")
    return data


def chunk_states(states: torch.Tensor, temporal: torch.Tensor, chunk: int):
    """Cut ``[N, 64]`` / ``[N, 32]`` into ``[B, C, .]`` windows; the last is padded (mask False)."""
    n = states.shape[0]
    if chunk < 1:
        raise ValueError(f"--chunk {chunk} is invalid; accepted: an int >= 1")
    size = min(chunk, n)
    batches = -(-n // size)
    pad = batches * size - n
    mask = torch.ones(batches * size, dtype=torch.bool)
    if pad:
        mask[n:] = False
        states = torch.cat([states, states.new_zeros(pad, states.shape[1])])
        temporal = torch.cat([temporal, temporal.new_zeros(pad, temporal.shape[1])])
    return (states.view(batches, size, -1), temporal.view(batches, size, -1), mask.view(batches, size))


def build_graph(config, states: torch.Tensor, temporal: torch.Tensor, labels: Sequence[str],
                chunk: int = DEFAULT_CHUNK, progress: bool = True):
    """Build the graph of one text (``states [N, 64]``), one window of ``chunk`` nodes per sample.

    Windows are built one at a time (with a progress bar when there are several) and
    stacked into one ``SemanticGraph`` of B samples; a padded last window carries a
    ``padding_mask``.
    """
    from tqdm import tqdm

    from ..graph import GraphBuilder

    builder = GraphBuilder(config)
    batched, batched_temporal, mask = chunk_states(states, temporal, chunk)
    batches, size = mask.shape
    if batches == 1:
        padding = None if bool(mask.all()) else mask
        graph = builder.build(batched, temporal=batched_temporal, padding_mask=padding)
        return replace(graph, tokens=[list(labels)])
    parts = []
    for b in tqdm(range(batches), desc="graph windows", unit="window", file=sys.stderr, disable=not progress):
        padding = None if bool(mask[b].all()) else mask[b:b + 1]
        parts.append(builder.build(batched[b:b + 1], temporal=batched_temporal[b:b + 1], padding_mask=padding))
    tokens = [list(labels[b * size:(b + 1) * size]) + [""] * max(0, (b + 1) * size - len(labels))
              for b in range(batches)]
    return _stack(parts, size, mask, tokens)


def _stack(parts, size: int, mask: torch.Tensor, tokens):
    """One ``SemanticGraph`` of B samples from B single-sample graphs of equal length."""
    columns = ("edge_type", "edge_weight", "block_similarity", "dominant_block", "similarity", "gate_score", "stage")
    stacked = {name: torch.cat([getattr(p, name) for p in parts]) for name in columns}
    stacked["edge_index"] = torch.cat([p.edge_index + b * size for b, p in enumerate(parts)], dim=1)
    for name in ("landmarks", "landmark_distances"):
        values = [getattr(p, name) for p in parts]
        stacked[name] = None if any(v is None for v in values) else torch.cat(values)
    return replace(parts[0], **stacked, batch_size=len(parts), seq_len=size,
                   padding_mask=None if bool(mask.all()) else mask, tokens=tokens)


def write_outputs(graph, out: str, html: Optional[str] = None, png: Optional[str] = None,
                  graphml: Optional[str] = None, view_start: Optional[int] = None) -> list[str]:
    """Write the graph as JSON (always) and as HTML / PNG / GraphML when asked; returns the paths.

    The views show sample 0, at most ``sosm.graph.view.VIEW_MAX_NODES`` nodes of it from ``view_start``.
    """
    from ..graph import io, view
    from .checks import writing

    def html_writer(g, path):
        return view.to_html(g, path, start=view_start)

    def png_writer(g, path):
        return view.to_png(g, path, start=view_start)

    written = []
    for option, path, writer in (("--out", out, io.save_json), ("--html", html, html_writer),
                                 ("--png", png, png_writer), ("--graphml", graphml, io.save_graphml)):
        if path is None:
            continue
        with writing(path, option):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            writer(graph, path)
        written.append(str(path))
    return written


def checkpoint_states(path, text: str, progress: bool = True):
    """``TextStates`` from a trained model's MU semantic and temporal states.

    ``path`` is a checkpoint (or run) directory readable by ``sosm.train.load_trained``, or
    a model it loaded (``sosm serve`` keeps one); its own tokenizer is used. Texts longer
    than the model's context are run in consecutive windows of ``block_size`` tokens.
    """
    from tqdm import tqdm

    from ..text_states import TextStates
    from ..tokenizers import word_spans
    from ..train.loading import TrainedModel, load_trained

    trained = path if isinstance(path, TrainedModel) else load_trained(path)
    path = trained.checkpoint.path
    tokenizer = trained.tokenizer
    spans = word_spans(text, tokenizer)
    ids = torch.tensor(spans.ids, dtype=torch.long)
    window = int(trained.config.data.block_size)
    semantic, temporal = [], []
    starts = range(0, len(ids), window)
    with torch.no_grad():
        for start in tqdm(starts, desc="model states", unit="window", file=sys.stderr,
                          disable=not progress or len(starts) == 1):
            _, state = trained.model(ids[None, start:start + window])
            if getattr(state, "semantic", None) is None:
                raise ValueError(f"--states {path}: this model ({trained.label}) has no MU semantic state; "
                                 f"accepted: a checkpoint of a graph-based model, 'corpus', or a StateModel directory")
            semantic.append(state.semantic[0].float())
            temporal.append(state.temporal[0].float())
    return TextStates(spans.ids, torch.cat(semantic), torch.cat(temporal), tokenizer.token_labels(spans.ids),
                      spans.words, spans.token_word)
