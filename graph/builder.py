"""`GraphBuilder`: composes the graph stages into one validated :class:`SemanticGraph`.

Stages, in order (each a small function in its own file):

1. sequential window edges (``sequential.py``);
2. semantic top-k over ``featurize(states)`` (``topk.py``; or the ``topk_fn`` hook, e.g.
   ``sosm.kernels.topk_similarity``), with entropy-adaptive K (``adaptive.py``);
3. filters on the semantic edges: mutual k-NN (``mutual.py``), similarity threshold and
   temporal-gated acceptance (``filters.py``, ``gate.py``). A kept semantic edge's ``stage`` is
   the last stage that decided it: ``topk``/``adaptive_k``, then ``mutual``, ``threshold``,
   ``temporal_gate`` when enabled;
4. successor edges ``j + 1 -> i`` of the kept semantic edges ``j -> i`` (``successor.py``), when
   ``successor_edges``;
5. shortcuts (Fibonacci, betweenness) and landmarks (``shortcuts.py``, ``landmarks.py``).

One edge per (source, target): sequential > semantic > shortcut > memory > successor. Edges are
ordered by target, then source. Provenance is filled for every edge by gathering (O(E * 64)):
``similarity`` is the exact pair score, ``block_similarity``/``dominant_block`` per
``similarity.block_similarity``, ``gate_score`` NaN where no gate ran; ``edge_weight`` is the
similarity for semantic edges, the similarity of the semantic edge it follows for a successor
edge, and 1 otherwise. The discrete choice runs under
``torch.no_grad()``; inputs are never modified.

Example:
    >>> import torch
    >>> from sosm.graph import GraphBuilder, GraphConfig
    >>> g = GraphBuilder(GraphConfig(k=2, window=1)).build(torch.randn(1, 8, 64))
    >>> g.causal, g.batch_size, g.seq_len
    (True, 1, 8)
"""
from __future__ import annotations

import warnings
from typing import Callable, Optional

import torch

from .adaptive import adaptive_k
from .config import GraphConfig
from .filters import gated_acceptance, threshold_filter
from .gate import TemporalGate
from .mutual import mutual_filter
from .sequential import sequential_edges
from ..common.features import has_direction, rescale
from .similarity import (block_similarity, block_weight_vector, drop_zero_columns, featurize, pair_scores,
                         pair_scores_feature_major, projection_matrix)
from .topk import streaming_topk
from .types import EDGE_TYPE_ID, STAGE_ID, SemanticGraph
from .validation import check_padding_mask, check_states, check_temporal


class GraphBuilder:
    """Builds one graph per sample from semantic states.

    Args:
        config: :class:`GraphConfig` (validated again here).
        topk_fn: optional drop-in for the semantic top-k with the signature of
            ``sosm.kernels.topk_similarity(x, k, *, similarity, block_weights, projection,
            causal, window) -> (indices [B, T, k], similarities, block_similarities)``, following
            the contract's candidate rule (docs/CONTRACTS.md, zero states included: padded tokens
            are handed to it as zero states, so it is asked for exactly ``k``, or ``k_max``); only
            its indices are used (similarities are recomputed exactly). Default: ``streaming_topk``.
        gate: optional :class:`TemporalGate` (or any module mapping two ``[E, 32]`` temporal
            states to ``[E]`` scores in (0, 1)); default ``TemporalGate(seed=config.sample_seed)`` when
            ``config.temporal_gate``.
    """

    def __init__(self, config: Optional[GraphConfig] = None, topk_fn: Optional[Callable] = None,
                 gate: Optional[torch.nn.Module] = None):
        self.config = (config or GraphConfig()).validate()
        self.topk_fn = topk_fn
        self.gate = gate if gate is not None or not self.config.temporal_gate else TemporalGate(seed=self.config.sample_seed)

    def build(self, states: torch.Tensor, temporal: Optional[torch.Tensor] = None,
              padding_mask: Optional[torch.Tensor] = None) -> SemanticGraph:
        """Graph of ``states [B, T, 64]`` (``temporal [B, T, 32]``, ``padding_mask [B, T]`` bool True=real).

        Syncs host and device a few times (edge counts) when the states live on a GPU.
        """
        cfg = self.config
        check_states(states, cfg)
        check_temporal(temporal, states, cfg)
        check_padding_mask(padding_mask, states)
        batch, length, _ = states.shape
        with torch.no_grad():
            x = rescale(states.detach())  # float32, a power of two per row: every cosine's bits, any finite scale
            mask = None if padding_mask is None or bool(padding_mask.all()) else padding_mask.to(x.device)
            features = drop_zero_columns(featurize(x, cfg))  # [B, T, d'] minus all-zero columns (same scores)
            parts = [self._sequential(batch, length, mask, x.device)]
            parts.append(self._semantic(x, features, temporal, _without_zero_states(features, mask, cfg)))
            if cfg.successor_edges:
                parts.append(self._successors(parts[-1], length, mask))
            if cfg.betweenness_shortcuts > 0:  # the only stage that reads the token edges so far
                token_edges = _merge_parts(parts, batch * length)["edge_index"]
            else:
                token_edges = None
            parts.append(self._shortcuts(token_edges, batch, length, mask, x.device))
            edges = _merge_parts(parts, batch * length)
            graph = self._assemble(edges, x, features, batch, length, padding_mask)
            if cfg.num_landmarks > 0:
                self._landmarks(graph, mask)
        return graph.validate()

    def _sequential(self, batch, length, mask, device):
        edge_index = sequential_edges(batch, length, self.config.window, self.config.causal, mask, device)
        return _part(edge_index, "sequential", "window")

    def _topk(self, x, features, k_run, mask):
        cfg = self.config
        if self.topk_fn is None:
            return streaming_topk(features, k_run, causal=cfg.causal, window=cfg.window, padding_mask=mask,
                                  tile=cfg.topk_tile)
        if mask is not None:  # padded tokens (and zero states) as zero states: the hook skips them both ways
            x = x.masked_fill(~mask[..., None], 0.0)
        idx = self.topk_fn(x, k_run, similarity=cfg.similarity,
                           block_weights=block_weight_vector(cfg).tolist() if cfg.similarity == "blocks" else None,
                           projection=projection_matrix(cfg, x.device) if cfg.similarity == "projection" else None,
                           causal=cfg.causal, window=cfg.window)[0].long()
        batch, length, _ = idx.shape
        safe = idx.clamp_min(0)
        scores = pair_scores(features[:, :, None, :], torch.gather(
            features, 1, safe.reshape(batch, -1, 1).expand(-1, -1, features.shape[2])).reshape(*idx.shape, -1))
        usable = idx >= 0
        if mask is not None:
            usable &= torch.gather(mask, 1, safe.reshape(batch, -1)).reshape(idx.shape) & mask[..., None]
        order = torch.sort((~usable).long(), dim=-1, stable=True).indices[..., :k_run]  # usable first, rank kept
        idx, scores, usable = idx.gather(-1, order), scores.gather(-1, order), usable.gather(-1, order)
        return idx.masked_fill(~usable, -1), scores.masked_fill(~usable, 0.0)

    def _semantic(self, x, features, temporal, mask):
        cfg = self.config
        batch, length, _ = x.shape
        if cfg.adaptive_k:
            k_node, k_run, stage = adaptive_k(x, cfg.k, cfg.alpha, cfg.k_min, cfg.k_max), cfg.k_max, "adaptive_k"
        else:
            k_node, k_run, stage = torch.full((batch, length), cfg.k, device=x.device), cfg.k, "topk"
        idx, scores = self._topk(x, features, k_run, mask)
        slot = torch.arange(k_run, device=x.device)
        keep = (idx >= 0) & (slot < k_node[..., None])
        stages = torch.full_like(idx, STAGE_ID[stage])
        if cfg.mutual:
            keep &= mutual_filter(features, idx, scores, k_node, causal=cfg.causal, window=cfg.window,
                                  padding_mask=mask, tile=cfg.topk_tile)
            stages.fill_(STAGE_ID["mutual"])
        b, i, s = keep.nonzero(as_tuple=True)
        src, dst, sim = b * length + idx[b, i, s], b * length + i, scores[b, i, s]
        gate_score = torch.full_like(sim, float("nan"))
        stage_e = stages[b, i, s]
        ok = torch.ones_like(sim, dtype=torch.bool)
        if cfg.threshold is not None:
            ok &= threshold_filter(sim, cfg.threshold)
            stage_e = torch.full_like(stage_e, STAGE_ID["threshold"])
        if cfg.temporal_gate:
            t = temporal.detach().float().reshape(batch * length, -1).to(x.device)
            gate_score = self._gate_scores(t, src, dst, b, batch)
            ok &= gated_acceptance(sim, gate_score, cfg.tau_mu, cfg.tau_t, cfg.tau_high)
            stage_e = torch.full_like(stage_e, STAGE_ID["temporal_gate"])
        part = _part(torch.stack([src[ok], dst[ok]]), "semantic", None)
        part.update(stage=stage_e[ok], gate_score=gate_score[ok], weight=sim[ok].float())
        return part

    def _successors(self, semantic: dict, length: int, mask):
        from .successor import successor_edges
        edge_index, weight = successor_edges(semantic["edge_index"], semantic["weight"], length, self.config.causal,
                                             padding_mask=mask)
        part = _part(edge_index, "successor", "successor")
        part["weight"] = weight
        return part

    def _gate_scores(self, temporal, src, dst, sample, batch):
        """Gate scores ``[E]`` of the edges (``sample [E]`` ascending), evaluated one sample at a time.

        One call over the whole batch's edges would make a sample's scores depend on its batch-mates:
        a matmul over a batch-dependent number of rows, or an activation's vectorised body versus its
        scalar tail, can round a row differently (1 ulp), and an edge at ``tau_t`` would flip. A
        sample's edge rows are the same tensor alone or in any batch, so its scores are the same bits.
        """
        counts = torch.bincount(sample, minlength=batch).tolist()
        scores = [self.gate(temporal[s], temporal[d]).float()
                  for s, d, n in zip(src.split(counts), dst.split(counts), counts) if n]
        return torch.cat(scores) if scores else torch.zeros(0, device=src.device)

    def _shortcuts(self, token_edge_index, batch, length, mask, device):
        cfg = self.config
        found = []
        if cfg.fibonacci_shortcuts:
            from .shortcuts import fibonacci_shortcuts
            ei = fibonacci_shortcuts(batch, length, cfg.window, cfg.fibonacci_max, cfg.causal, padding_mask=mask)
            found.append(_part(ei.to(device), "shortcut", "fibonacci"))
        if cfg.betweenness_shortcuts > 0:
            from .shortcuts import betweenness_shortcuts
            ei = betweenness_shortcuts(token_edge_index, batch, length, cfg.betweenness_shortcuts,
                                       cfg.betweenness_chunk, cfg.betweenness_samples, cfg.sample_seed, cfg.causal,
                                       padding_mask=mask)
            found.append(_part(ei.to(device), "shortcut", "betweenness"))
        if not found:
            return _part(torch.empty(2, 0, dtype=torch.long, device=device), "shortcut", "fibonacci")
        return {key: torch.cat([p[key] for p in found], -1) for key in found[0]}

    def _landmarks(self, graph, mask):
        from .landmarks import landmark_distances, select_landmarks
        cfg = self.config
        rule = cfg.landmark_rule if cfg.landmark_rule != "auto" else ("stride" if cfg.causal else "degree")
        landmarks = select_landmarks(graph.edge_index, graph.batch_size, graph.seq_len, cfg.num_landmarks,
                                     rule, cfg.causal, padding_mask=mask)
        graph.landmarks = landmarks
        graph.landmark_distances = landmark_distances(graph.edge_index, graph.batch_size, graph.seq_len,
                                                      landmarks, cfg.max_distance, cfg.causal)

    def _assemble(self, edges, x, features, batch, length, padding_mask):
        src, dst = edges["edge_index"]
        flat_x = x.reshape(batch * length, -1)
        flat_f = features.reshape(batch * length, -1)
        block_sims, dominant = block_similarity(flat_x, src, dst, self.config)
        f_t = flat_f.T.contiguous()  # [d', N] feature-major: contiguous per-feature gathers
        similarity = pair_scores_feature_major(f_t.index_select(1, dst), f_t.index_select(1, src))
        semantic = edges["edge_type"] == EDGE_TYPE_ID["semantic"]
        weight = torch.where(semantic, similarity, torch.ones_like(similarity))
        successor = edges["edge_type"] == EDGE_TYPE_ID["successor"]
        weight = torch.where(successor, edges["weight"], weight)  # the similarity of the edge it follows
        return SemanticGraph(edge_index=edges["edge_index"], edge_type=edges["edge_type"], edge_weight=weight,
                             block_similarity=block_sims, dominant_block=dominant, similarity=similarity,
                             gate_score=edges["gate_score"], stage=edges["stage"], batch_size=batch,
                             seq_len=length, causal=self.config.causal,
                             padding_mask=None if padding_mask is None else padding_mask.clone())


def _without_zero_states(features: torch.Tensor, mask, config: GraphConfig):
    """The semantic stage's mask: ``mask`` minus the zero states (docs/CONTRACTS.md), with one warning.

    A real token whose features are all zero has no direction: it is no candidate and gets no
    semantic neighbours (its sequential and shortcut edges stay).
    """
    zero = ~has_direction(features)  # [B, T]
    if mask is not None:
        zero &= mask
    count = int(zero.sum())
    if count == 0:
        return mask
    where = " in every weighted block" if config.similarity == "blocks" else ""
    warnings.warn(f"{count} {'state is' if count == 1 else 'states are'} zero{where} (e.g. out-of-vocabulary "
                  f"text or zero tensors): a zero vector has no direction, so {'it gets' if count == 1 else 'they get'} "
                  "no semantic edges (sequential and shortcut edges are kept)", RuntimeWarning, stacklevel=3)
    return ~zero if mask is None else mask & ~zero


def _part(edge_index: torch.Tensor, edge_type: str, stage: Optional[str]) -> dict:
    n = edge_index.shape[1]
    dev = edge_index.device
    return dict(edge_index=edge_index.long(),
                edge_type=torch.full((n,), EDGE_TYPE_ID[edge_type], dtype=torch.long, device=dev),
                stage=torch.full((n,), STAGE_ID[stage] if stage else 0, dtype=torch.long, device=dev),
                gate_score=torch.full((n,), float("nan"), device=dev),
                weight=torch.full((n,), float("nan"), device=dev))  # set by stages whose weight is not 1


def _merge_parts(parts: list, num_nodes: int) -> dict:
    """Concatenate stage outputs; one edge per (src, dst) by type priority; order by (dst, src).

    Two stages of the same type proposing one pair: the one listed first in ``parts`` wins.
    """
    cat = {key: torch.cat([p[key] for p in parts], -1) for key in parts[0]}
    src, dst = cat["edge_index"]
    src_span = num_nodes + 1 + int(src.max()) if src.numel() else 1  # memory sources may exceed B*T
    pair = dst * src_span + src
    key = pair * len(EDGE_TYPE_ID) + cat["edge_type"]
    key, order = torch.sort(key, stable=True)  # same type: the earlier stage wins (fibonacci before betweenness)
    pair = pair[order]
    first = torch.ones_like(pair, dtype=torch.bool)
    first[1:] = pair[1:] != pair[:-1]
    pick = order[first]
    return {name: value[..., pick] for name, value in cat.items()}

