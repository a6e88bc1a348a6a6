"""Long-term memory inside graph attention: a K/V bank beside an HNSW index, and the exact merge.

**What is stored** (:class:`ModelMemory`). Per past token, one entry with a stable id m:

- the retrieval key: its 64-d semantic state, in an :class:`~sosm.memory.HNSWMemory` (cosine),
  with its write position in the global stream (causal retrieval);
- per graph-attention layer a (key, value) pair ``[H, d]`` each, as that layer computed them
  when the token was processed: the key **before** rotary positions (memory keys have no
  position inside the current window). Row m of the bank belongs to HNSW id m.

**How it is read.** ``integrate_into_graph`` adds memory edges (retrieval by semantic state,
only entries written before the query's stream position); :func:`memory_slots` turns the
memory edges of each query into ``[B, T, Km]`` bank ids (-1 padded). Each graph-attention
layer then attends over its graph keys (self + neighbours) **and** its memory keys in one
softmax, computed exactly as two parts merged by log-sum-exp (:func:`merge_attention`)::

    out = (Z_g * out_g + Z_m * out_m) / (Z_g + Z_m),   Z = sum of exp(scores) of the part

Memory scores: ``scale * q_i . k_m`` with the query and key both unrotated (equivalently, RoPE
at relative distance 0: the memory key is rotated by the query's own angles); under
Graph-ALiBi a memory key gets the largest landmark penalty ``slope * (max_distance + 1)``.

Example:
    >>> import torch
    >>> bank = ModelMemory(n_layers=1, n_heads=2, head_dim=4)
    >>> _ = bank.write(torch.randn(5, 64), [torch.randn(5, 2, 4)], [torch.randn(5, 2, 4)], positions=torch.arange(5))
    >>> len(bank), bank.keys[0].shape
    (5, torch.Size([5, 2, 4]))
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from ..common.blocks import SEMANTIC_DIM


class ModelMemory:
    """HNSW index of semantic states plus a per-layer (key, value) bank, one row per memory id.

    Args:
        n_layers: graph-attention layers of the model (>= 1); bank list index = the layer's
            order among the model's ``A`` layers.
        n_heads, head_dim: H and d of those layers.
        index: an existing empty :class:`~sosm.memory.HNSWMemory` of dim 64 (default: a new one).

    Shapes: ``keys[l], values[l]: [N, H, d]`` float32 (N entries written so far).
    """

    def __init__(self, n_layers: int, n_heads: int, head_dim: int, index=None):
        from ..memory import HNSWMemory

        for name, value in (("n_layers", n_layers), ("n_heads", n_heads), ("head_dim", head_dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r} is invalid; accepted: an int >= 1")
        if index is None:
            index = HNSWMemory(dim=SEMANTIC_DIM)
        if not isinstance(index, HNSWMemory) or index.dim != SEMANTIC_DIM or index.count != 0:
            raise ValueError(f"index must be an empty HNSWMemory of dim {SEMANTIC_DIM}, got {index!r}")
        self.index = index
        self.n_layers, self.n_heads, self.head_dim = n_layers, n_heads, head_dim
        self.keys = [torch.zeros(0, n_heads, head_dim) for _ in range(n_layers)]
        self.values = [torch.zeros(0, n_heads, head_dim) for _ in range(n_layers)]

    @classmethod
    def for_model(cls, model, **index_kwargs) -> "ModelMemory":
        """An empty memory shaped for ``model`` (an ``SOSMModel`` with graph-attention layers)."""
        from ..memory import HNSWMemory

        n_attention = model.config.layer_types.count("graph_attention")
        if n_attention == 0:
            raise ValueError("model has no graph_attention layer to read memory; accepted: a hybrid or graph_attention "
                             "model with graph_attention layers")
        return cls(n_attention, model.config.n_heads, model.config.head_dim,
                   HNSWMemory(dim=SEMANTIC_DIM, **index_kwargs))

    def __len__(self) -> int:
        return self.index.count

    def write(self, semantic: torch.Tensor, keys: Sequence[torch.Tensor], values: Sequence[torch.Tensor],
              positions: torch.Tensor, metadata: Optional[list] = None) -> torch.Tensor:
        """Append N entries; returns their ids ``LongTensor[N]``.

        Args:
            semantic: ``[N, 64]`` retrieval keys (semantic states).
            keys, values: one ``[N, H, d]`` tensor per graph-attention layer (keys unrotated).
            positions: ``LongTensor[N]`` write positions in the global stream (>= 0).
            metadata: optional N dicts (``"document"``, ``"offset"``, ...), kept by the index.
        """
        if len(keys) != self.n_layers or len(values) != self.n_layers:
            raise ValueError(f"keys and values must hold one tensor per graph-attention layer "
                             f"({self.n_layers}), got {len(keys)} and {len(values)}")
        n = semantic.shape[0]
        want = (n, self.n_heads, self.head_dim)
        for name, group in (("keys", keys), ("values", values)):
            for i, tensor in enumerate(group):
                if tuple(tensor.shape) != want:
                    raise ValueError(f"{name}[{i}] must have shape {want}, got {tuple(tensor.shape)}")
        ids = self.index.add(semantic.detach().float().cpu(), metadata, positions=positions.cpu())
        if n and int(ids[0]) != self.keys[0].shape[0]:
            raise RuntimeError("memory ids and K/V bank rows disagree (was the index written to directly?)")
        for layer in range(self.n_layers):
            self.keys[layer] = torch.cat([self.keys[layer], keys[layer].detach().float().cpu()])
            self.values[layer] = torch.cat([self.values[layer], values[layer].detach().float().cpu()])
        return ids

    def gather(self, layer: int, slots: torch.Tensor):
        """Bank K/V of ``slots [B, T, Km]`` (-1: none): ``(k [B, T, Km, H, d], v [B, T, Km, H, d])``, zeros at -1."""
        safe = slots.clamp_min(0).cpu()
        k = self.keys[layer][safe].to(slots.device)
        v = self.values[layer][safe].to(slots.device)
        return k, v


def memory_slots(graph, batch_size: int, seq_len: int) -> torch.Tensor:
    """Memory ids per query from the memory edges of ``graph``: ``LongTensor[B, T, Km]``, -1 padded.

    ``graph`` may be built over a longer frame (``graph.seq_len >= seq_len``); rows past
    ``seq_len`` are dropped. Slots are in edge order (best first per query).
    """
    from ..graph.types import EDGE_TYPE_ID

    frame = graph.seq_len
    src, dst = graph.edge_index
    keep = (graph.edge_type == EDGE_TYPE_ID["memory"]) & (src >= graph.num_nodes)
    src, dst = src[keep].cpu(), dst[keep].cpu()
    node_ids = torch.tensor([m["memory_id"] for m in (graph.memory_meta or [])], dtype=torch.long)
    ids = node_ids[src - graph.num_nodes] if src.numel() else src
    b, t = dst // frame, dst % frame
    inside = t < seq_len
    b, t, ids = b[inside], t[inside], ids[inside]
    row = b * seq_len + t
    counts = torch.bincount(row, minlength=batch_size * seq_len) if row.numel() else torch.zeros(batch_size * seq_len, dtype=torch.long)
    width = int(counts.max()) if counts.numel() else 0
    slots = torch.full((batch_size * seq_len, max(width, 0)), -1, dtype=torch.long)
    if row.numel():
        order = torch.argsort(row, stable=True)
        row, ids = row[order], ids[order]
        first = torch.cumsum(counts, 0) - counts
        rank = torch.arange(row.numel()) - first[row]
        slots[row, rank] = ids
    return slots.view(batch_size, seq_len, -1)


def memory_attention(q, mem_k, mem_v, slots, scale: float, angles=None, penalty=None):
    """Attention of each query over its memory keys only: ``(out [B, T, H, d] f32, lse [B, T, H] f32)``.

    Args:
        q: ``[B, T, H, d]`` queries (rotated when ``angles`` is given).
        mem_k, mem_v: ``[B, T, Km, H, d]`` gathered memory keys (unrotated) and values.
        slots: ``[B, T, Km]`` memory ids, -1 where empty (masked out).
        angles: the queries' rotary angles ``[B or 1, T, d/2]``; memory keys are rotated by
            them so that ``q_rot . k_rot = q . k`` (relative distance 0).
        penalty: ``[H]`` subtracted from every memory score (Graph-ALiBi), or None.

    A query with no memory key gets ``lse = -inf`` and ``out = 0``.
    """
    from .positional import apply_rotary

    B, T, Km, H, d = mem_k.shape
    if angles is not None and Km:
        mem_k = apply_rotary(mem_k.reshape(B, T, Km * H, d), angles).view(B, T, Km, H, d)
    scores = torch.einsum("bthd,btnhd->btnh", q.float(), mem_k.float()) * scale  # [B, T, Km, H]
    if penalty is not None:
        scores = scores - penalty.float()
    scores = scores.masked_fill(~(slots >= 0)[..., None], float("-inf"))
    lse = torch.logsumexp(scores, dim=2) if Km else scores.new_full((B, T, H), float("-inf"))
    probs = torch.exp(scores - lse[:, :, None].clamp_min(torch.finfo(torch.float32).min))
    probs = probs.masked_fill(~(slots >= 0)[..., None], 0.0)
    out = torch.einsum("btnh,btnhd->bthd", probs, mem_v.float())
    return out, lse


def merge_attention(out_g, lse_g, out_m, lse_m) -> torch.Tensor:
    """Exact softmax over the union of two disjoint key sets from each part's output and log-sum-exp.

    ``out = w * out_g + (1 - w) * out_m`` with ``w = Z_g / (Z_g + Z_m) = sigmoid(lse_g - lse_m)``.
    Shapes: ``out [B, T, H, d]``, ``lse [B, T, H]``; ``lse_m = -inf`` gives ``out_g`` exactly.
    """
    w = torch.sigmoid(lse_g - lse_m)[..., None]  # lse_m = -inf -> w = 1
    return w * out_g.float() + (1.0 - w) * out_m


def alibi_memory_penalty(slopes: torch.Tensor, max_distance: int) -> torch.Tensor:
    """Graph-ALiBi penalty of a memory key: ``slopes * (max_distance + 1)`` (``[H]``), the farthest coordinate gap."""
    return slopes * float(max_distance + 1)


def default_scale(head_dim: int) -> float:
    return 1.0 / math.sqrt(head_dim)
