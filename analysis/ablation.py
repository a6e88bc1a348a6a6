"""Ablations at inference: drop an MU block, an edge type, the memory edges or a layer; report the change in loss.

Each ablation is a temporary hook on the model (removed afterwards; weights are never touched):

- ``block:<name>``: the block's 4 dims of the semantic state are zeroed at the output of the
  semantic front end, so both the projection into the residual stream and the graph built from
  the state see the block as absent.
- ``edge_type:<type>``: the neighbours reached by edges of that type are removed from the
  attention neighbour lists (self is kept); landmarks and the structural encoding are those of
  the full graph.
- ``memory``: the memory edges, when the graph has any (else the row says so).
- ``layer:<i>``: the layer's residual branch is skipped (its output is its input).

Loss is the mean next-token cross-entropy of ``input_ids`` (predict ``ids[:, 1:]`` from ``ids[:, :-1]``
positions); ``delta_loss = loss(ablated) - loss(full)``.

Example:
    >>> from sosm.model import SOSMConfig, SOSMModel
    >>> model = SOSMModel(SOSMConfig(model="transformer", d_model=32, n_heads=2, n_layers=2, vocab_size=50)).eval()
    >>> rows = run_ablations(model, torch.randint(0, 50, (2, 16)))
    >>> rows[0]["ablation"], rows[0]["delta_loss"]
    ('none', 0.0)
"""
from __future__ import annotations

import contextlib
from dataclasses import replace

import torch
import torch.nn.functional as F

from ..common.blocks import BLOCK_NAMES, block_slice
from ..graph.types import EDGE_TYPE_ID, EDGE_TYPES
from .depass import edge_type_map
from .recording import check_model, record_forward


def next_token_loss(model, input_ids: torch.Tensor) -> float:
    """Mean cross-entropy of ``input_ids[:, 1:]`` given the logits at ``[:, :-1]`` (nats/token)."""
    with torch.no_grad():
        logits, _ = model(input_ids)
    return float(F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), input_ids[:, 1:].reshape(-1)))


@contextlib.contextmanager
def drop_block(model, name: str):
    """Zero MU block ``name`` of the semantic state while the context is open."""
    sl = block_slice(name)

    def hook(module, args, output):
        emb, sem = output
        sem = sem.clone()
        sem[..., sl] = 0
        return emb, sem

    handle = model.front.semantic.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def drop_neighbors(model, keep_mask_fn):
    """Replace ``ctx.neighbors`` by ``where(keep_mask_fn(neighbors), neighbors, -1)`` while the context is open."""
    from ..kernels import GraphLayout

    def hook(module, args):
        x, ctx, *rest = args
        neighbors = torch.where(keep_mask_fn(ctx.neighbors), ctx.neighbors, torch.full_like(ctx.neighbors, -1))
        return (x, replace(ctx, neighbors=neighbors, layout=GraphLayout.build(neighbors)), *rest)

    handle = model.stack.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def skip_layer(model, index: int):
    """Make layer ``index`` return its input (skip its residual branch) while the context is open."""
    handle = model.stack.layers[index].register_forward_hook(lambda module, args, output: args[0])
    try:
        yield
    finally:
        handle.remove()


def _neighbor_types(record) -> torch.Tensor:
    """Edge type id of every entry of ``ctx.neighbors [B, T, Kn]`` (-1 for padding)."""
    types, _ = edge_type_map(record.state.graph, *record.input_ids.shape, record.x0.device)
    nbrs = record.ctx.neighbors.long()
    gathered = types.gather(2, nbrs.clamp_min(0))
    return torch.where(nbrs >= 0, gathered, torch.full_like(gathered, -1))


def run_ablations(model, input_ids: torch.Tensor, blocks: bool = True, edge_types: bool = True,
                  layers: bool = True) -> list:
    """Loss change of every ablation, as a list of rows.

    Args:
        model: ``SOSMModel`` in eval mode.
        input_ids: ``[B, T]`` with T >= 2.
        blocks, edge_types, layers: which families to run (blocks and edge types only for graph models).

    Returns:
        ``[{"ablation", "kind", "loss", "delta_loss", "note"}]``; the first row is ``"none"`` (delta 0).
    """
    check_model(model)
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.shape[1] < 2:
        raise ValueError("input_ids must be [B, T] with T >= 2 (the loss needs a next token)")
    base = next_token_loss(model, input_ids)
    rows = [{"ablation": "none", "kind": "none", "loss": base, "delta_loss": 0.0, "note": ""}]

    def add(name, kind, ctx, note=""):
        with ctx:
            loss = next_token_loss(model, input_ids)
        rows.append({"ablation": name, "kind": kind, "loss": loss, "delta_loss": loss - base, "note": note})

    graph_model = model.config.uses_graph
    if blocks and graph_model:
        for name in BLOCK_NAMES:
            add(f"block:{name}", "block", drop_block(model, name))
    if edge_types and graph_model:
        record = record_forward(model, input_ids)
        nbr_types = _neighbor_types(record)
        present = set(record.state.graph.edge_type.unique().tolist())
        for etype in EDGE_TYPES:
            if etype == "memory":
                continue
            type_id = EDGE_TYPE_ID[etype]
            if type_id not in present:
                continue
            add(f"edge_type:{etype}", "edge_type",
                drop_neighbors(model, lambda nbrs, t=type_id: nbr_types.to(nbrs.device) != t))
        if EDGE_TYPE_ID["memory"] in present:
            add("memory", "memory", drop_neighbors(model, lambda nbrs: nbr_types != EDGE_TYPE_ID["memory"]))
        else:
            rows.append({"ablation": "memory", "kind": "memory", "loss": base, "delta_loss": 0.0,
                         "note": "no memory edges in this graph"})
    if layers:
        for index, name in enumerate(model.stack.layer_types):
            add(f"layer:{index}({name})", "layer", skip_layer(model, index))
    return rows


def ablation_markdown(rows: list) -> str:
    """The rows as a markdown table (sorted as given)."""
    lines = ["| ablation | loss | Δ loss | note |", "|---|---:|---:|---|"]
    lines += [f"| {r['ablation']} | {r['loss']:.4f} | {r['delta_loss']:+.4f} | {r['note']} |" for r in rows]
    return "\n".join(lines)
