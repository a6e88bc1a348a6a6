"""DePass: an exact decomposition of the logits into components of the input (decomposed forward pass).

The stack input ``x0 [B, T, d]`` is split into components (per token, per MU block, ...) that
sum to it, and the components are propagated through the network in *linear mode*
(each mixer's :meth:`~sosm.model.mixers.Mixer.linear_mode`): attention probabilities, normalisation scales, the
activation ratios ``act(a)/a``, Mamba's Δ, B, C and ``silu(z)`` are frozen from the original
pass, so every layer is linear in the components and they sum to the real logits (to fp32
rounding). Biases land in the extra component ``"bias"``.

Partitions (``by``):

- ``"token"``: one component per input position (``"token_<t>"``); token t's component is its
  full stack input row (token and position features).
- ``"block"`` (graph-based models only): the stack input is ``W_s semantic + W_t temporal``;
  block b's component is ``W_s[:, slice_b] semantic[..., slice_b]`` for the 16 MU blocks, plus
  ``"temporal"`` (``W_t temporal``, its position bias included).
- ``"edge_type"``: the whole input starts in ``"self"``. At each attention layer the mass that
  query i takes from key j != i is moved into the component of the edge type of (j -> i)
  (``sequential``, ``semantic``, ``shortcut``, ``memory``; ``dense`` for the Transformer's
  dense attention); the self term keeps its component. So a component holds what reached the
  output most recently through that kind of edge; Mamba scans and MLPs keep the labels
  (a model without attention layers has only ``"self"`` and ``"bias"``).
- ``"landmark_group"``: tokens grouped by their nearest landmark slot (``"landmark_<l>"``, ties
  to the lower slot; ``"unreachable"`` for tokens no landmark reaches).
- a ``LongTensor [B, T]`` of group ids in ``[0, G)`` (custom token partition, ``"group_<g>"``,
  or ``group_names``).

Example:
    >>> from sosm.model import SOSMConfig, SOSMModel
    >>> model = SOSMModel(SOSMConfig(model="transformer", d_model=32, n_heads=2, vocab_size=50)).eval()
    >>> ids = torch.randint(0, 50, (1, 10))
    >>> parts = DePass(model).decompose(ids, by="token")
    >>> total = sum(parts.values())
    >>> bool((total - model(ids)[0]).abs().max() < 1e-4)
    True
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

from ..common.blocks import BLOCK_NAMES, block_slice
from ..graph.types import EDGE_TYPES, UNREACHABLE
from ..model.mixers import AttentionBlock
from ..model.mixers.linear import norm_linear
from .recording import ForwardRecord, check_model, record_forward

PARTITIONS = ("token", "block", "edge_type", "landmark_group")


@dataclass
class DePassResult:
    """A full decomposition.

    Args:
        names: component names, ``C`` of them (the last is ``"bias"``).
        logits: ``[C, B, T, V]`` component logits; ``logits.sum(0)`` equals ``record.logits``.
        hidden: residual stream components after the input and after every layer, each
            ``[C, B, T, d]`` (before the final norm).
        attention: per attention layer ``(layer index, frozen probs [B, H, T, T])``.
        record: the original pass.
    """

    names: list
    logits: torch.Tensor
    hidden: list
    attention: list
    record: ForwardRecord

    def as_dict(self) -> dict:
        return {name: self.logits[i] for i, name in enumerate(self.names)}

    def completeness_error(self) -> float:
        """``max |sum_c logits_c - logits| / max |logits|`` (relative error of the decomposition)."""
        ref = self.record.logits
        return float((self.logits.sum(0) - ref).abs().max() / ref.abs().max().clamp_min(1e-12))


def edge_type_map(graph, batch: int, seq_len: int, device=None, causal: bool = True) -> tuple[torch.Tensor, list]:
    """``[B, T, T]`` long map of the edge type of key j for query i, and the type names.

    With a ``SemanticGraph``: index into ``EDGE_TYPES`` (edges among the frame's first T
    positions). Without one (the Transformer): ``"dense"`` for every j < i (``causal=False``, a
    bidirectional model: every j != i). ``-1`` where there is no edge; the diagonal (self) is
    ``-1`` too: the router keeps self terms in place.
    """
    B, T = batch, seq_len
    types = torch.full((B, T, T), -1, dtype=torch.long, device=device)
    if graph is None:
        dense = torch.ones(T, T, dtype=torch.bool, device=device)
        types[:, dense.tril(-1) if causal else ~torch.eye(T, dtype=torch.bool, device=device)] = 0
        return types, ["dense"]
    frame = graph.seq_len
    src, dst = graph.edge_index
    keep = (src < graph.num_nodes) & (dst % frame < T) & (src % frame < T)
    src, dst, etype = src[keep], dst[keep], graph.edge_type[keep]
    types[dst // frame, dst % frame, src % frame] = etype.to(device)
    return types, list(EDGE_TYPES)


def make_edge_router(types: torch.Tensor, n_types: int, first_type_index: int):
    """Router moving the mass of key j -> query i (j != i) into component ``first_type_index + type``."""
    T = types.shape[-1]
    eye = torch.eye(T, dtype=torch.bool, device=types.device)
    masks = [(types == e).float()[:, None] for e in range(n_types)]  # [B, 1, T, T] each

    def router(probs: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        off_edges = (probs * ~eye).sum() - sum((probs * m).sum() for m in masks)
        if off_edges.abs() > 1e-4 * probs.sum():
            raise RuntimeError("attention mass on a key with no typed edge: the graph and the neighbours disagree")
        out = torch.einsum("bhij,cbjhd->cbihd", probs * eye, values)  # self terms stay in place
        total = values.sum(0)  # [B, T, H, hd]
        for e, mask in enumerate(masks):
            out[first_type_index + e] += torch.einsum("bhij,bjhd->bihd", probs * mask, total)
        return out

    return router


def _token_groups(record: ForwardRecord, groups: torch.Tensor, names: Sequence[str]):
    """Components of ``x0`` by a ``[B, T]`` group id per token."""
    onehot = F.one_hot(groups, len(names)).permute(2, 0, 1).to(record.x0.dtype)  # [G, B, T]
    return list(names), onehot[..., None] * record.x0[None]


def _landmark_groups(record: ForwardRecord) -> tuple[torch.Tensor, list]:
    graph = record.state.graph
    if graph is None or graph.landmark_distances is None:
        raise ValueError('by="landmark_group" needs a model with landmarks (a graph-based model with num_landmarks >= 1)')
    T = record.input_ids.shape[1]
    dist = graph.landmark_distances[:, :T]  # [B, T, L]
    L = dist.shape[-1]
    nearest = dist.argmin(-1)  # ties to the lower slot
    unreachable = (dist >= UNREACHABLE).all(-1)
    return torch.where(unreachable, torch.full_like(nearest, L), nearest), [f"landmark_{l}" for l in range(L)] + ["unreachable"]


def _block_components(model, record: ForwardRecord):
    if record.state.semantic is None:
        raise ValueError(f'by="block" needs a graph-based model (hybrid, graph_attention) with the MU semantic state; '
                         f"model={model.config.model!r} has none")
    sem, temporal = record.state.semantic.float(), record.state.temporal.float()
    w_s = model.front.project_semantic.weight  # [d, 64]
    parts = [F.linear(sem[..., block_slice(name)], w_s[:, block_slice(name)]) for name in BLOCK_NAMES]
    parts.append(model.front.project_temporal(temporal))
    return list(BLOCK_NAMES) + ["temporal"], torch.stack(parts)


class DePass:
    """Decomposed forward pass over an ``SOSMModel`` (hybrid and every baseline).

    Args:
        model: an ``SOSMModel`` in eval mode (``model.eval()``).

    Shapes: ``decompose(input_ids [B, T], by) -> {name: logits component [B, T, V]}``.
    """

    def __init__(self, model):
        self.model = check_model(model)

    def partition(self, record: ForwardRecord, by, group_names: Optional[Sequence[str]] = None):
        """Initial components ``(names, [C, B, T, d])`` of ``record.x0`` (without ``"bias"``)."""
        B, T = record.input_ids.shape
        if isinstance(by, torch.Tensor):
            if by.shape != (B, T) or by.dtype not in (torch.long, torch.int32):
                raise ValueError(f"by as a tensor must be integer group ids [B={B}, T={T}], got "
                                 f"{tuple(by.shape)} {by.dtype}")
            n = int(by.max()) + 1
            if int(by.min()) < 0:
                raise ValueError(f"by group ids must be >= 0, got min {int(by.min())}")
            names = list(group_names) if group_names is not None else [f"group_{g}" for g in range(n)]
            if len(names) < n:
                raise ValueError(f"group_names has {len(names)} names; the group ids need {n}")
            return _token_groups(record, by.long().to(record.x0.device), names)
        if by == "token":
            return _token_groups(record, torch.arange(T, device=record.x0.device).expand(B, T),
                                 [f"token_{t}" for t in range(T)])
        if by == "block":
            return _block_components(self.model, record)
        if by == "edge_type":
            return ["self"], record.x0[None].clone()
        if by == "landmark_group":
            return _token_groups(record, *_landmark_groups(record))
        raise ValueError(f"by={by!r} is invalid; accepted: one of {PARTITIONS} or a LongTensor [B, T] of group ids")

    @torch.no_grad()
    def run(self, input_ids: torch.Tensor, by: Union[str, torch.Tensor] = "token",
            group_names: Optional[Sequence[str]] = None) -> DePassResult:
        """Decompose and keep everything (components of the logits and of the hidden states, frozen attention)."""
        model = self.model
        record = record_forward(model, input_ids)
        names, xc = self.partition(record, by, group_names)
        router = None
        if by == "edge_type":
            causal = getattr(getattr(model, "config", None), "causal", True)  # bidirectional models: dense both ways
            types, type_names = edge_type_map(record.state.graph, *input_ids.shape, record.x0.device, causal=causal)
            if not any(isinstance(module, AttentionBlock) for module in model.stack.modules()):  # wrapped ones too
                type_names = []  # no attention layer: nothing is routed along edges
            names = names + type_names
            xc = torch.cat([xc, xc.new_zeros(len(type_names), *xc.shape[1:])])
            router = make_edge_router(types, len(type_names), 1)
        names = names + ["bias"]
        xc = torch.cat([xc, torch.zeros_like(xc[:1])]).float()
        bias_index = len(names) - 1
        x, ctx = record.x0, record.ctx
        hidden, attention = [xc], []
        for index, layer in enumerate(model.stack.layers):
            x, xc, probs = layer.linear_mode(x, xc, ctx, bias_index, router)  # the mixer's own DePass mode
            hidden.append(xc)
            if probs is not None:
                attention.append((index, probs))
        final = norm_linear(model.stack.norm, x, xc)  # [C, B, T, d]
        C, B, T, d = final.shape
        logits = model.logits_from_hidden(final.reshape(C * B, T, d)).reshape(C, B, T, -1)
        return DePassResult(names=names, logits=logits, hidden=hidden, attention=attention, record=record)

    def decompose(self, input_ids: torch.Tensor, by: Union[str, torch.Tensor] = "token",
                  group_names: Optional[Sequence[str]] = None) -> dict:
        """``{component name: [B, T, V] logits}``; the values sum to ``model(input_ids)[0]`` (fp32 rounding).

        Args:
            input_ids: ``[B, T]`` token ids.
            by: ``"token"``, ``"block"``, ``"edge_type"``, ``"landmark_group"``, or a ``[B, T]`` LongTensor
                of group ids (custom token partition).
            group_names: names of the custom groups (default ``group_<g>``).
        """
        return self.run(input_ids, by, group_names).as_dict()

