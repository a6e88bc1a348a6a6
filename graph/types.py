"""`SemanticGraph`: the columnar graph every room exchanges (docs/CONTRACTS.md).

Nodes are numbered ``b * T + t`` over a batch. ``edge_index[0]`` is the source (the key,
the attended-to token j) and ``edge_index[1]`` the target (the query token i). Edge
attributes and provenance are columnar tensors of length E: no Python object per edge.

Self-loops are never stored: attention always adds "self" on its own. There is at most
one stored edge per (source, target) pair; when two stages propose the same pair the
higher-priority type wins (sequential > semantic > shortcut > memory > successor).

In causal mode every stored token-to-token edge satisfies ``source position < target
position`` within one sample, and no edge crosses samples.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

import torch

from ..common.blocks import N_BLOCKS

EDGE_TYPES: tuple[str, ...] = ("sequential", "semantic", "shortcut", "memory", "successor")
EDGE_TYPE_ID: dict[str, int] = {name: i for i, name in enumerate(EDGE_TYPES)}

#: the stage that created or kept an edge (provenance column ``stage``)
STAGES: tuple[str, ...] = (
    "window",         # sequential window edge
    "topk",           # semantic top-k (fixed K)
    "adaptive_k",     # semantic top-k with entropy-adaptive K
    "mutual",         # kept by mutual k-NN filtering
    "threshold",      # kept by the similarity threshold
    "temporal_gate",  # accepted by the temporal gate
    "betweenness",    # bridging shortcut from betweenness centrality
    "fibonacci",      # Fibonacci-distance shortcut
    "memory",         # retrieved from long-term memory
    "successor",      # the token after a semantic neighbour (j + 1 -> i for a semantic edge j -> i)
)
STAGE_ID: dict[str, int] = {name: i for i, name in enumerate(STAGES)}

#: Landmark distance for a node that a landmark cannot reach (or a landmark slot that is
#: not available to that position in causal mode). The one place this value is defined.
UNREACHABLE: int = 32767


@dataclass
class SemanticGraph:
    """A batch of token graphs with typed edges and columnar provenance.

    Args:
        edge_index: ``LongTensor[2, E]``; row 0 source (key j), row 1 target (query i),
            global node ids ``b * T + t``. Memory edges use source ids ``>= B * T``
            (``B * T + m`` for memory entry m).
        edge_type: ``LongTensor[E]``, index into :data:`EDGE_TYPES`.
        edge_weight: ``FloatTensor[E]``; may carry gradient (the discrete choice does not).
        block_similarity: ``FloatTensor[E, 16]`` per-block cosine similarity of the pair.
        dominant_block: ``LongTensor[E]`` argmax of the weighted per-block contribution.
        similarity: ``FloatTensor[E]`` total similarity used for ranking.
        gate_score: ``FloatTensor[E]`` temporal-gate score (NaN where no gate ran).
        stage: ``LongTensor[E]``, index into :data:`STAGES`.
        batch_size, seq_len: B and T.
        causal: whether the graph was built in causal mode.
        padding_mask: ``BoolTensor[B, T]``, True for real tokens (None: all real).
        landmarks: ``LongTensor[B, L]`` landmark positions (within a sample), or None.
        landmark_distances: ``LongTensor[B, T, L]`` hop distances, :data:`UNREACHABLE`
            where unreachable, or None.
        tokens: optional display labels, one list of T strings per sample.
        memory_meta: optional provenance of memory edges (free-form, one dict per memory source).
    """

    edge_index: torch.Tensor
    edge_type: torch.Tensor
    edge_weight: torch.Tensor
    block_similarity: torch.Tensor
    dominant_block: torch.Tensor
    similarity: torch.Tensor
    gate_score: torch.Tensor
    stage: torch.Tensor
    batch_size: int
    seq_len: int
    causal: bool = True
    padding_mask: Optional[torch.Tensor] = None
    landmarks: Optional[torch.Tensor] = None
    landmark_distances: Optional[torch.Tensor] = None
    tokens: Optional[list[list[str]]] = None
    memory_meta: Optional[list[dict]] = field(default=None, repr=False)

    @property
    def num_nodes(self) -> int:
        return self.batch_size * self.seq_len

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])

    @property
    def device(self) -> torch.device:
        return self.edge_index.device

    def validate(self) -> "SemanticGraph":
        """Check shapes, dtypes and (in causal mode) edge direction; returns self."""
        E = self.num_edges
        if self.edge_index.dim() != 2 or self.edge_index.shape[0] != 2 or self.edge_index.dtype != torch.long:
            raise ValueError(f"edge_index must be LongTensor[2, E], got {tuple(self.edge_index.shape)} {self.edge_index.dtype}")
        for name, want in (("edge_type", (E,)), ("edge_weight", (E,)), ("dominant_block", (E,)),
                           ("similarity", (E,)), ("gate_score", (E,)), ("stage", (E,)),
                           ("block_similarity", (E, N_BLOCKS))):
            got = tuple(getattr(self, name).shape)
            if got != want:
                raise ValueError(f"{name} must have shape {want}, got {got}")
        if E:
            tok = self.edge_index[0] < self.num_nodes
            src, dst = self.edge_index[0][tok], self.edge_index[1][tok]
            if (self.edge_index[1] >= self.num_nodes).any():
                raise ValueError("edge targets must be token nodes (< B*T)")
            if (src // self.seq_len != dst // self.seq_len).any():
                raise ValueError("an edge crosses samples: one graph per sample")
            if (src == dst).any():
                raise ValueError("self-loops are implicit and must not be stored")
            if self.causal and (src % self.seq_len >= dst % self.seq_len).any():
                raise ValueError("causal graph has an edge from a later (or same) position")
        return self

    def select(self, keep: torch.Tensor) -> "SemanticGraph":
        """A new graph with only the edges where ``keep`` (BoolTensor[E]) is True."""
        cols = {name: getattr(self, name)[keep] for name in _EDGE_COLUMNS}
        cols["edge_index"] = self.edge_index[:, keep]
        return replace(self, **cols)

    def to(self, device) -> "SemanticGraph":
        moved = {name: getattr(self, name).to(device) for name in (*_EDGE_COLUMNS, "edge_index")}
        for name in ("padding_mask", "landmarks", "landmark_distances"):
            value = getattr(self, name)
            moved[name] = None if value is None else value.to(device)
        return replace(self, **moved)

    def edges_of_type(self, name: str) -> "SemanticGraph":
        if name not in EDGE_TYPE_ID:
            raise ValueError(f"unknown edge type {name!r}; valid types are {list(EDGE_TYPES)}")
        return self.select(self.edge_type == EDGE_TYPE_ID[name])

    def __repr__(self) -> str:
        counts = torch.bincount(self.edge_type, minlength=len(EDGE_TYPES)).tolist() if self.num_edges else [0] * len(EDGE_TYPES)
        by_type = ", ".join(f"{n}={c}" for n, c in zip(EDGE_TYPES, counts) if c)
        lm = "" if self.landmarks is None else f", landmarks={self.landmarks.shape[1]}"
        mode = "causal" if self.causal else "bidirectional"
        return f"SemanticGraph(B={self.batch_size}, T={self.seq_len}, edges={self.num_edges} [{by_type}], {mode}{lm})"


_EDGE_COLUMNS = ("edge_type", "edge_weight", "block_similarity", "dominant_block", "similarity", "gate_score", "stage")


def empty_edge_columns(num_edges: int = 0, device=None) -> dict[str, torch.Tensor]:
    """Default-filled provenance columns for ``num_edges`` edges (gate NaN, similarity 0)."""
    return dict(
        edge_type=torch.zeros(num_edges, dtype=torch.long, device=device),
        edge_weight=torch.ones(num_edges, device=device),
        block_similarity=torch.zeros(num_edges, N_BLOCKS, device=device),
        dominant_block=torch.zeros(num_edges, dtype=torch.long, device=device),
        similarity=torch.zeros(num_edges, device=device),
        gate_score=torch.full((num_edges,), float("nan"), device=device),
        stage=torch.zeros(num_edges, dtype=torch.long, device=device),
    )
