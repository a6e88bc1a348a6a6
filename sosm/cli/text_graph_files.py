"""Files and views of a whole-text graph (:mod:`sosm.cli.large_graph`): ``.npz`` arrays, JSON lines, a window to draw.

``.npz`` (:func:`write_arrays`, read back by :func:`load_arrays`): ``neighbours [N, k]`` int32 (-1:
none), ``similarity [N, k]`` float32, ``dominant_block [N, k]`` uint8 (index into ``BLOCK_NAMES``),
``token_ids [N]`` int32 (-1 for word nodes), ``spans [N, 2]`` int32 character spans into ``text``
(UTF-8 bytes) and ``meta`` (UTF-8 JSON: format, config, method, recall, timings). ``.jsonl``
(:func:`write_jsonl`): the meta line, then one line per node. :func:`view_window` cuts a window of
at most ``VIEW_MAX_NODES`` nodes into a :class:`~sosm.graph.SemanticGraph` for the HTML/PNG views.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np
import torch

from ..graph.view import VIEW_MAX_NODES

if TYPE_CHECKING:
    from .large_graph import TextGraph

FORMAT = "sosm.text_graph_arrays"
VERSION = 1


def write_arrays(graph: TextGraph, path) -> Path:
    """``.npz`` of the arrays listed in the module docstring (one atomic write)."""
    from ..common.files import atomic_write

    meta = json.dumps(full_meta(graph)).encode("utf-8")
    arrays = {"neighbours": graph.neighbours.numpy(), "similarity": graph.similarity.numpy(),
              "dominant_block": graph.dominant_block.numpy(), "token_ids": graph.nodes.token_ids,
              "spans": graph.nodes.spans, "text": np.frombuffer(graph.nodes.text.encode("utf-8"), dtype=np.uint8),
              "meta": np.frombuffer(meta, dtype=np.uint8)}
    return atomic_write(path, lambda handle: np.savez(handle, **arrays))


def load_arrays(path) -> dict:
    """Read a file of :func:`write_arrays`: the arrays, ``text`` as str and ``meta`` as a dict."""
    with np.load(path) as data:
        out = {name: data[name] for name in data.files}
    out["meta"] = json.loads(out["meta"].tobytes().decode("utf-8"))
    out["text"] = out["text"].tobytes().decode("utf-8")
    if out["meta"].get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} file")
    return out


def write_jsonl(graph: TextGraph, path, chunk: int = 65536) -> Path:
    """JSON lines: the meta, then ``{"node", "label", "neighbours", "similarity", "block"}`` per node."""
    from ..common.blocks import BLOCK_NAMES
    from ..common.files import atomic_write

    def write(handle):
        handle.write((json.dumps(full_meta(graph)) + "\n").encode("utf-8"))
        for start in range(0, graph.nodes.num_nodes, chunk):
            stop = min(graph.nodes.num_nodes, start + chunk)
            labels = graph.nodes.labels(start, stop)
            nb, sim, dom = (t[start:stop].tolist() for t in (graph.neighbours, graph.similarity, graph.dominant_block))
            lines = []
            for i, (label, n_row, s_row, d_row) in enumerate(zip(labels, nb, sim, dom)):
                keep = [c for c, j in enumerate(n_row) if j >= 0]
                lines.append(json.dumps({"node": start + i, "label": label, "neighbours": [n_row[c] for c in keep],
                                         "similarity": [round(s_row[c], 5) for c in keep],
                                         "block": [BLOCK_NAMES[d_row[c]] for c in keep]}, ensure_ascii=False))
            handle.write(("\n".join(lines) + "\n").encode("utf-8"))

    return atomic_write(path, write)


def full_meta(graph: TextGraph) -> dict:
    from ..common.blocks import BLOCK_NAMES

    return {"format": FORMAT, "version": VERSION, "nodes": graph.nodes.kind, "states": graph.nodes.states,
            "tokenizer": getattr(graph.nodes.tokenizer, "name", "?"), "config": graph.config.to_dict(),
            "block_names": list(BLOCK_NAMES), **graph.meta}


def view_window(graph: TextGraph, start: Optional[int] = None, count: int = VIEW_MAX_NODES):
    """``(SemanticGraph of nodes start .. start + count - 1, window info)`` for the HTML/PNG views.

    The info dict holds ``window_start``, ``window_nodes``, ``text_nodes`` and ``edges_outside_window``:
    semantic edges whose source lies before ``start`` cannot be drawn and are counted there. Default ``start``: the window of ``count`` nodes with the
    most semantic edges inside it among 64 evenly spaced candidates (readable, not the title page).
    """
    from ..graph.similarity import block_similarity, pair_scores
    from ..graph.types import EDGE_TYPE_ID, STAGE_ID, SemanticGraph

    n, config = graph.nodes.num_nodes, graph.config
    count = min(count, n)
    if start is None:
        candidates = np.linspace(0, n - count, num=min(64, n - count + 1)).astype(np.int64)
        inside = [int(((graph.neighbours[s:s + count] >= s) & (graph.neighbours[s:s + count] >= 0)).sum())
                  for s in candidates]
        start = int(candidates[int(np.argmax(inside))])
    if not 0 <= start <= n - count:
        raise ValueError(f"--view-start {start} is invalid; accepted: 0..{n - count}")
    nb = graph.neighbours[start:start + count].long()
    dst = torch.arange(count)[:, None].expand_as(nb)
    keep = nb >= start
    src_sem, dst_sem = nb[keep] - start, dst[keep]
    seq_dst = torch.cat([torch.arange(d, count) for d in range(1, config.window + 1)] or [torch.zeros(0, dtype=torch.long)])
    seq_src = torch.cat([torch.arange(0, count - d) for d in range(1, config.window + 1)] or [torch.zeros(0, dtype=torch.long)])
    src, dst_all = torch.cat([seq_src, src_sem]), torch.cat([seq_dst, dst_sem])
    is_sem = torch.cat([torch.zeros(seq_src.numel(), dtype=torch.bool), torch.ones(src_sem.numel(), dtype=torch.bool)])
    duplicate = torch.zeros_like(is_sem)
    if config.window:  # one edge per pair: sequential wins
        seq_pairs = set(zip(seq_src.tolist(), seq_dst.tolist()))
        duplicate[seq_src.numel():] = torch.tensor([(s, d) in seq_pairs for s, d in zip(src_sem.tolist(), dst_sem.tolist())],
                                                   dtype=torch.bool)
    src, dst_all, is_sem = src[~duplicate], dst_all[~duplicate], is_sem[~duplicate]
    order = torch.argsort(dst_all * count + src)
    src, dst_all, is_sem = src[order], dst_all[order], is_sem[order]
    rows = graph.nodes.inverse[start:start + count]
    x = graph.nodes.table[rows]
    from ..graph.similarity import featurize

    f = featurize(x[None], config)[0]
    sims, dominant = block_similarity(x, src, dst_all, config)
    similarity = pair_scores(f[dst_all], f[src])
    edge_type = torch.where(is_sem, EDGE_TYPE_ID["semantic"], EDGE_TYPE_ID["sequential"])
    stage = torch.where(is_sem, STAGE_ID["threshold" if config.threshold is not None else "topk"], STAGE_ID["window"])
    outside = int(((graph.neighbours[start:start + count] >= 0) & (graph.neighbours[start:start + count] < start)).sum())
    window = SemanticGraph(edge_index=torch.stack([src, dst_all]), edge_type=edge_type,
                           edge_weight=torch.where(is_sem, similarity, torch.ones_like(similarity)),
                           block_similarity=sims, dominant_block=dominant, similarity=similarity,
                           gate_score=torch.full_like(similarity, math.nan), stage=stage, batch_size=1, seq_len=count,
                           causal=config.causal, tokens=[graph.nodes.labels(start, start + count)]).validate()
    return window, {"window_start": start, "window_nodes": count, "text_nodes": n, "edges_outside_window": outside}


def write_text_outputs(text_graph, out: str, html: Optional[str] = None, png: Optional[str] = None,
                       view_start: Optional[int] = None) -> list[str]:
    """Write a whole-text graph (``.npz`` or ``.jsonl``) and its windowed HTML / PNG views; returns the paths."""
    from ..graph import view

    Path(out).parent.mkdir(parents=True, exist_ok=True)
    (write_jsonl if out.lower().endswith(".jsonl") else write_arrays)(text_graph, out)
    written = [str(out)]
    if html or png:
        window, meta = view_window(text_graph, view_start)
        stop = meta["window_start"] + meta["window_nodes"] - 1
        note = (f"nodes {meta['window_start']:,}..{stop:,} of {meta['text_nodes']:,} (a view shows at most "
                f"{view.VIEW_MAX_NODES} consecutive nodes; --view-start picks them); {meta['edges_outside_window']:,} "
                f"semantic edges from earlier nodes are not drawn")
        for path, writer in ((html, view.to_html), (png, view.to_png)):
            if path:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                writer(window, path, note=note)
                written.append(str(path))
        print(f"view: {note}")
    return written
