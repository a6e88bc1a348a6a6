"""The inspect report: every number about one text in one dict, written as JSON, PNG plots and a standalone HTML page.

:func:`build_report` runs the analyses on ``input_ids [1, T]``:

- next-token loss and the top-3 predictions at each position;
- the token graph (nodes with their dominant MU block = the block of largest norm in the
  token's semantic state; edges with type, similarity, dominant block, stage);
- token attribution heat map: row i is the DePass token decomposition of the logit of the
  next token of the text at position i (the top prediction at the last position), as shares
  ``c_ij / sum_j |c_ij|`` (signed, bias excluded);
- block attribution: DePass ``"block"`` shares of those logits (``|c| / sum |c|`` over the 16
  blocks, temporal and bias), per position and their mean;
- edge-type attribution: DePass ``"edge_type"`` shares of the same logits, mean over positions;
- provenance statistics with the attention mass per layer and edge type;
- inference ablations (Δ loss);
- routing (models with MoE feed-forwards or Mixture-of-Depths layers): per token, the experts
  each MoE layer sent it to (heaviest first, with combine weights) or whether each
  Mixture-of-Depths layer took it through its block, beside its dominant MU block; per MoE layer,
  the expert load and how many tokens of each dominant block went to each expert.

:func:`write_report` writes ``report.json``, the PNGs of :data:`sosm.analysis.plots.PLOTS` and
``index.html`` (the PNGs are also inlined, so the page opens offline on its own).

Example:
    >>> report = build_report(model, ids, labels)                 # doctest: +SKIP
    >>> write_report(report, "report/")                           # doctest: +SKIP
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from ..common.blocks import BLOCK_DIM, BLOCK_NAMES, N_BLOCKS
from ..common.files import atomic_write
from ..graph.types import EDGE_TYPES, STAGES
from ..model.routing import routing_layers, token_routes
from .ablation import next_token_loss, run_ablations
from .depass import DePass
from .provenance import provenance_report, real_token_edges
from .recording import check_model


def _targets(ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Per position: the next token of the text, or the top prediction at the last position. ``[T]``."""
    nxt = torch.empty_like(ids[0])
    nxt[:-1] = ids[0, 1:]
    nxt[-1] = logits[0, -1].argmax()
    return nxt


def _shares(values: torch.Tensor) -> torch.Tensor:
    """``values [C, T]`` -> ``|v| / sum_c |v|`` per position."""
    return values.abs() / values.abs().sum(0, keepdim=True).clamp_min(1e-30)


def _graph_section(state, labels: Sequence[str], T: int) -> Optional[dict]:
    graph = state.graph
    if graph is None:
        return None
    norms = state.semantic[0].float().view(-1, N_BLOCKS, BLOCK_DIM).norm(dim=-1)  # [T, 16]
    dominant = norms.argmax(-1).tolist()
    g = graph.select(real_token_edges(graph, T) & (graph.edge_index[1] // graph.seq_len == 0))
    src, dst = (g.edge_index % graph.seq_len).tolist()
    edges = [{"s": s, "t": t, "type": EDGE_TYPES[int(k)], "similarity": round(float(sim), 4),
              "block": BLOCK_NAMES[int(b)], "stage": STAGES[int(st)]}
             for s, t, k, sim, b, st in zip(src, dst, g.edge_type, g.similarity, g.dominant_block, g.stage)]
    nodes = [{"position": t, "label": labels[t], "dominant_block": BLOCK_NAMES[dominant[t]],
              "in_degree": dst.count(t), "out_degree": src.count(t)} for t in range(T)]
    landmarks = [] if graph.landmarks is None else [int(p) for p in graph.landmarks[0].tolist() if p < T]
    return {"nodes": nodes, "edges": edges, "landmarks": landmarks}


def _dominant_blocks(state) -> Optional[list]:
    """Name of the block of largest norm in each token's semantic state (sequence 0), or None without MU state."""
    if state.semantic is None:
        return None
    norms = state.semantic[0].float().view(-1, N_BLOCKS, BLOCK_DIM).norm(dim=-1)  # [T, 16]
    return [BLOCK_NAMES[int(b)] for b in norms.argmax(-1)]


@torch.no_grad()
def _routing_section(model, input_ids: torch.Tensor, labels: Sequence[str]) -> Optional[dict]:
    """Where each token went in every routing layer, beside its dominant MU block (None: no routing layer)."""
    if not routing_layers(model):
        return None
    _, state = model(input_ids)  # the routes of this text
    dominant = _dominant_blocks(state)
    layers, tokens = [], [{"position": t, "label": label, "dominant_block": dominant[t] if dominant else None,
                           "routes": {}} for t, label in enumerate(labels)]
    for route in token_routes(model):
        name = route["layer"]
        if route["kind"] == "moe":
            experts, weights = route["experts"][0], route["weights"][0]
            n_experts = route["n_experts"]
            load = [sum(row.count(e) for row in experts) for e in range(n_experts)]
            by_block = {}
            if dominant:
                for t, row in enumerate(experts):
                    counts = by_block.setdefault(dominant[t], [0] * n_experts)
                    for e in row:
                        counts[e] += 1
            layers.append({"layer": name, "kind": "moe", "routing": route["routing"], "experts": n_experts,
                           "load": load, "by_block": by_block})
            for t, token in enumerate(tokens):
                token["routes"][name] = [[e, w] for e, w in zip(experts[t], weights[t])]
        else:
            through = route["through"][0]
            layers.append({"layer": name, "kind": "mod", "through": sum(through), "of": len(through)})
            for t, token in enumerate(tokens):
                token["routes"][name] = {"through": bool(through[t]), "gate": route["gate"][0][t]}
    return {"layers": layers, "tokens": tokens}


def build_report(model, input_ids: torch.Tensor, labels: Optional[Sequence[str]] = None,
                 ablations: bool = True, meta: Optional[dict] = None,
                 label_of: Optional[Callable[[int], str]] = None) -> dict:
    """All numbers of the report for one sequence (see the module docstring).

    Args:
        model: ``SOSMModel`` in eval mode.
        input_ids: ``[1, T]`` token ids, T >= 2.
        labels: display label of each token (default ``"#t"``).
        ablations: run the inference ablations (one forward pass per ablation).
        meta: extra fields for the ``meta`` section (checkpoint path, text, ...).
        label_of: token id -> display label, for predictions (default ``"id <n>"``).

    Returns:
        a JSON-serialisable dict.
    """
    check_model(model)
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.shape[0] != 1 \
            or input_ids.shape[1] < 2:
        raise ValueError(f"input_ids must be one sequence [1, T] with T >= 2, got "
                         f"{tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__}")
    T = input_ids.shape[1]
    labels = list(labels) if labels is not None else [f"#{t}" for t in range(T)]
    if len(labels) != T:
        raise ValueError(f"labels has {len(labels)} entries; input_ids has T={T}")
    depass = DePass(model)
    tokens = depass.run(input_ids, by="token")
    logits = tokens.record.logits
    targets = _targets(input_ids, logits)
    at = torch.arange(T)
    token_contrib = tokens.logits[:-1, 0, at, targets]  # [T sources, T positions]
    matrix = (token_contrib / token_contrib.abs().sum(0, keepdim=True).clamp_min(1e-30)).T  # [position, source]
    label_of = label_of or (lambda i: f"id {i}")
    probs = torch.softmax(logits[0], -1)
    top = probs.topk(3, dim=-1)
    report = {
        "meta": {"model": model.config.model, "layer_types": model.config.layer_types, "seq_len": T,
                 "parameters": sum(p.numel() for p in model.parameters()), **(meta or {})},
        "tokens": labels,
        "loss": next_token_loss(model, input_ids),
        "predictions": [{"position": t, "target": int(targets[t]), "target_label": label_of(int(targets[t])),
                         "target_prob": float(probs[t, targets[t]]),
                         "top": [[label_of(int(i)), float(p)] for p, i in zip(top.values[t], top.indices[t])]}
                        for t in range(T)],
        "token_attribution": {"matrix": [[round(float(v), 5) for v in row] for row in matrix],
                              "note": "row i: DePass token shares of the logit of the next text token at position i"},
        "graph": _graph_section(tokens.record.state, labels, T),
    }
    edges = depass.run(input_ids, by="edge_type")
    edge_shares = _shares(edges.logits[:, 0, at, targets])  # [C, T]
    report["edge_type_attribution"] = {"names": edges.names, "mean_shares": edge_shares.mean(1).tolist()}
    if model.config.uses_graph:
        blocks = depass.run(input_ids, by="block")
        block_shares = _shares(blocks.logits[:, 0, at, targets])  # [18, T]
        report["block_attribution"] = {"names": blocks.names, "mean_shares": block_shares.mean(1).tolist(),
                                       "per_position": block_shares.T.tolist()}
        report["provenance"] = provenance_report(tokens.record.state.graph, tokens=labels, seq_len=T,
                                                 attention=edges.attention)
    else:
        report["block_attribution"] = report["provenance"] = None
    report["routing"] = _routing_section(model, input_ids, labels)
    report["ablations"] = run_ablations(model, input_ids) if ablations else []
    return report


def write_report(report: dict, out_dir, graph=None) -> Path:
    """Write ``report.json``, the PNG plots and ``index.html`` into ``out_dir``; returns the HTML path.

    Args:
        report: from :func:`build_report`.
        out_dir: folder (created).
        graph: optionally the ``SemanticGraph``; then ``graph.html`` (``sosm.graph.view``) is written too.
    """
    from .html_report import render_html
    from .plots import PLOTS

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "report.json", (json.dumps(report, indent=1) + "\n").encode("utf-8"))
    pngs = {}
    if report.get("provenance") is not None:
        for name, plot in PLOTS.items():
            pngs[name] = plot(report)
            atomic_write(out / name, pngs[name])
    if graph is not None:
        from dataclasses import replace

        from ..graph.view import to_html

        frame = graph.seq_len  # the model's frame may be longer than the text: those positions are padding
        labels = [list(report["tokens"][:frame]) + [""] * max(0, frame - len(report["tokens"]))] * graph.batch_size
        to_html(replace(graph, tokens=labels), out / "graph.html",
                title="the model's semantic graph of the text: every edge with its provenance")
    path = out / "index.html"
    atomic_write(path, render_html(report, pngs, graph_page="graph.html" if graph is not None else None)
                  .encode("utf-8"))
    return path
