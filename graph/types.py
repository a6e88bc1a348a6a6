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
        """Check every invariant of a graph; returns self. Built and loaded graphs go through this alike.

        Shapes and dtypes of every column; ``B, T >= 1``; node ids (targets and token sources in
        ``[0, B*T)``, memory sources in ``[B*T, B*T + len(memory_meta))``, the edge type saying
        which); type, stage and dominant block ids in range; finite weights, similarities and block
        similarities (gate scores may be NaN); one edge per (source, target); no edge across samples,
        no self-loop, none touching a padded token, none from a later position in causal mode;
        ``padding_mask [B, T]``, ``landmarks [B, L]`` in ``[0, T)``, ``landmark_distances [B, T, L]`` in
        ``[0, UNREACHABLE]``, ``tokens`` B lists of T strings. ValueError naming the first bad edge.
        All the edge checks cost one host-device sync; the detail is computed only on failure.
        """
        for name in ("batch_size", "seq_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} {value!r} is invalid; accepted: an int >= 1")
        E = self.num_edges
        if self.edge_index.dim() != 2 or self.edge_index.shape[0] != 2 or self.edge_index.dtype != torch.long:
            raise ValueError(f"edge_index must be LongTensor[2, E], got {tuple(self.edge_index.shape)} {self.edge_index.dtype}")
        for name, want in (("edge_type", (E,)), ("edge_weight", (E,)), ("dominant_block", (E,)),
                           ("similarity", (E,)), ("gate_score", (E,)), ("stage", (E,)),
                           ("block_similarity", (E, N_BLOCKS))):
            got = tuple(getattr(self, name).shape)
            if got != want:
                raise ValueError(f"{name} must have shape {want}, got {got}")
        for name in ("edge_type", "dominant_block", "stage"):
            if getattr(self, name).dtype != torch.long:
                raise ValueError(f"{name} must be a LongTensor, got {getattr(self, name).dtype}")
        self._validate_extras()
        if E and bool(self._edge_faults().any()):
            raise ValueError(self._first_fault())
        return self

    def _validate_extras(self) -> None:
        """padding_mask, landmarks, landmark_distances, tokens, memory_meta: shapes, dtypes and value ranges."""
        B, T = self.batch_size, self.seq_len
        if self.padding_mask is not None and (self.padding_mask.dtype != torch.bool or tuple(self.padding_mask.shape) != (B, T)):
            raise ValueError(f"padding_mask must have shape ({B}, {T}) and dtype bool, got "
                             f"{tuple(self.padding_mask.shape)} {self.padding_mask.dtype}")
        L = None
        if self.landmarks is not None:
            if self.landmarks.dim() != 2 or self.landmarks.shape[0] != B or self.landmarks.dtype != torch.long:
                raise ValueError(f"landmarks must have shape ({B}, L) and dtype long, got "
                                 f"{tuple(self.landmarks.shape)} {self.landmarks.dtype}")
            L = self.landmarks.shape[1]
            if self.landmarks.numel() and (int(self.landmarks.min()) < 0 or int(self.landmarks.max()) >= T):
                raise ValueError(f"landmarks must be positions in [0, T={T}), got min {int(self.landmarks.min())}, "
                                 f"max {int(self.landmarks.max())}")
        if self.landmark_distances is not None:
            d = self.landmark_distances
            want = (B, T, L if L is not None else (d.shape[2] if d.dim() == 3 else -1))
            if tuple(d.shape) != want or d.dtype != torch.long:
                raise ValueError(f"landmark_distances must have shape {want} (B, T, L of landmarks) and dtype long, "
                                 f"got {tuple(d.shape)} {d.dtype}")
            if d.numel() and (int(d.min()) < 0 or int(d.max()) > UNREACHABLE):
                raise ValueError(f"landmark_distances must be hop counts in [0, {UNREACHABLE}] ({UNREACHABLE} = "
                                 f"unreachable), got min {int(d.min())}, max {int(d.max())}")
        if self.tokens is not None and not (
                isinstance(self.tokens, list) and len(self.tokens) == B
                and all(isinstance(row, list) and len(row) == T and all(isinstance(t, str) for t in row)
                        for row in self.tokens)):
            raise ValueError(f"tokens must be {B} lists of {T} strings (B lists of T) or None")
        if self.memory_meta is not None and not (isinstance(self.memory_meta, list)
                                                 and all(isinstance(m, dict) for m in self.memory_meta)):
            raise ValueError("memory_meta must be a list of dicts (one per memory node) or None")

    def _edge_faults(self) -> torch.Tensor:
        """BoolTensor[E]: True for an edge that breaks an invariant (see :meth:`validate`)."""
        T, N = self.seq_len, self.num_nodes
        src, dst = self.edge_index
        memory = self.edge_type == EDGE_TYPE_ID["memory"]
        n_memory = len(self.memory_meta) if self.memory_meta is not None else None
        bad = (dst < 0) | (dst >= N) | (src < 0)
        bad |= torch.where(memory, (src < N) if n_memory is None else (src < N) | (src >= N + n_memory), src >= N)
        bad |= (self.edge_type < 0) | (self.edge_type >= len(EDGE_TYPES)) | (self.stage < 0) | (self.stage >= len(STAGES))
        bad |= (self.dominant_block < 0) | (self.dominant_block >= N_BLOCKS)
        bad |= ~torch.isfinite(self.edge_weight.detach()) | ~torch.isfinite(self.similarity)
        bad |= ~torch.isfinite(self.block_similarity).all(1)
        token = ~memory & (src >= 0) & (src < N)
        safe_src, safe_dst = src.clamp(0, N - 1), dst.clamp(0, N - 1)
        bad |= token & ((safe_src // T != safe_dst // T) | (safe_src == safe_dst))
        if self.causal:
            bad |= token & (safe_src % T >= safe_dst % T)
        if self.padding_mask is not None:
            real = self.padding_mask.reshape(-1).to(src.device)
            bad |= ~real[safe_dst] | (token & ~real[safe_src])
        bad |= self._repeated_pairs()
        return bad

    def _repeated_pairs(self) -> torch.Tensor:
        """BoolTensor[E]: True for each edge whose (source, target) pair an earlier edge already has."""
        src, dst = self.edge_index
        span = int(src.max()) + 2 if src.numel() else 1
        pair = dst.clamp_min(0) * span + src.clamp_min(-1) + 1
        order = torch.sort(pair, stable=True).indices
        repeated = torch.zeros_like(pair, dtype=torch.bool)
        repeated[order[1:]] = pair[order[1:]] == pair[order[:-1]]
        return repeated

    def _first_fault(self) -> str:
        """The message for the first bad edge (only called when there is one)."""
        T, N = self.seq_len, self.num_nodes
        e = int(self._edge_faults().nonzero()[0, 0])
        s, d = (int(v) for v in self.edge_index[:, e])
        kind, stage, block = int(self.edge_type[e]), int(self.stage[e]), int(self.dominant_block[e])
        n_memory = len(self.memory_meta) if self.memory_meta is not None else None
        where = f"edge {e}: "
        if not 0 <= d < N:
            return where + f"target {d} is outside the B*T = {N} token nodes [0, {N})"
        if not 0 <= kind < len(EDGE_TYPES):
            return where + f"edge_type {kind} is invalid; accepted: [0, {len(EDGE_TYPES)}) {list(EDGE_TYPES)}"
        if not 0 <= stage < len(STAGES):
            return where + f"stage {stage} is invalid; accepted: [0, {len(STAGES)}) {list(STAGES)}"
        if not 0 <= block < N_BLOCKS:
            return where + f"dominant_block {block} is invalid; accepted: [0, {N_BLOCKS})"
        if s < 0:
            return where + f"source {s} is negative; accepted: token nodes [0, {N}) or memory nodes >= {N}"
        if kind == EDGE_TYPE_ID["memory"]:
            if s < N:
                return where + f"memory source {s} must be a memory node id >= B*T = {N}"
            if n_memory is not None and s >= N + n_memory:
                return where + (f"memory source {s} is memory node {s - N}, but memory_meta lists {n_memory} "
                                f"(accepted: [{N}, {N + n_memory}))")
        elif s >= N:
            return where + (f"source {s} is outside the B*T = {N} token nodes [0, {N}) of a "
                            f"{EDGE_TYPES[kind]} edge (only memory edges have sources >= B*T)")
        for name, value in (("weight", self.edge_weight[e]), ("similarity", self.similarity[e])):
            if not bool(torch.isfinite(value)):
                return where + f"{name} is {'NaN' if bool(value.isnan()) else float(value)}; accepted: a finite float (gate_score alone may be NaN)"
        if not bool(torch.isfinite(self.block_similarity[e]).all()):
            return where + "block_similarity has NaN/Inf entries; accepted: finite floats"
        if self.padding_mask is not None:
            real = self.padding_mask.reshape(-1)
            if not bool(real[d]) or (s < N and not bool(real[s])):
                return where + f"({s} -> {d}) touches a padded token; padded tokens have no edges"
        if s < N:
            if s // T != d // T:
                return where + f"({s} -> {d}) crosses samples {s // T} and {d // T}: one graph per sample"
            if s == d:
                return where + f"({s} -> {d}) is a self-loop; self-loops are implicit and must not be stored"
            if self.causal and s % T >= d % T:
                return where + (f"({s} -> {d}) goes from position {s % T} to position {d % T}: a causal graph has "
                                "no edge from a later (or the same) position")
        first = int(((self.edge_index[0] == s) & (self.edge_index[1] == d)).nonzero()[0, 0])
        return f"edges {first} and {e} have the same (source, target) pair ({s} -> {d}); one edge per pair"

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
