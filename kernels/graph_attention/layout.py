"""``GraphLayout``: the kernels' own view of one graph, built once and reused by every layer.

Built from the contract's neighbour tensor ``[B, T, Kn]`` (key positions, ``-1`` padded,
self excluded). Building validates the index values (one host-device sync) and makes:

- ``neighbors``: int32 ``[B, T, Kc]``, the attended set ``A(i) = {i} ∪ neighbours(i)`` of each
  query, ascending, unique, ``-1`` padded at the end (``Kc`` = the largest ``|A(i)|``).
  Duplicate entries and an explicit self entry in the input are merged, so the kernels
  compute exactly the dense reference's set semantics;
- ``counts``: int32 ``[B, T]``, ``|A(i)| >= 1``;
- ``rev_ptr`` int64 ``[B*T + 1]`` and ``rev_idx`` int32 ``[E]``: the transposed (key-side) list
  in CSR form — the queries ``b*T + i`` that attend to key ``b*T + j`` are
  ``rev_idx[rev_ptr[b*T+j] : rev_ptr[b*T+j+1]]``, ascending. The Triton backward computes
  dk, dv per key from it, without atomics (deterministic). Built on first access and kept
  (the CPU paths never read it: a third of the build's time at B=12, T=64).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .reference import INDEX_DTYPES


@dataclass(frozen=True, repr=False)
class GraphLayout:
    neighbors: torch.Tensor  # int32 [B, T, Kc], self included, ascending, -1 padded at the end
    counts: torch.Tensor  # int32 [B, T], entries of A(i), >= 1
    input_width: int  # Kn of the neighbour tensor it was built from
    _reverse: dict = field(default_factory=dict, compare=False)  # rev_ptr / rev_idx once built

    @property
    def rev_ptr(self) -> torch.Tensor:
        """int64 ``[B*T + 1]``: CSR row pointers of the key-side list (built on first access)."""
        return self._key_side()[0]

    @property
    def rev_idx(self) -> torch.Tensor:
        """int32 ``[E]``: query ``b*T + i`` of each edge, grouped by key, ascending (built on first access)."""
        return self._key_side()[1]

    def _key_side(self) -> tuple[torch.Tensor, torch.Tensor]:
        if "ptr" not in self._reverse:
            batch, seq_len, _ = self.neighbors.shape
            device = self.neighbors.device
            valid = self.neighbors >= 0
            offset = torch.arange(batch, device=device)[:, None, None] * seq_len
            key_global = (self.neighbors.long() + offset)[valid]
            query = offset[..., 0] + torch.arange(seq_len, device=device)  # [B, T]
            query_global = query[..., None].expand_as(self.neighbors)[valid]
            key_sorted, order = torch.sort(key_global, stable=True)  # row-major input: queries ascend
            rev_ptr = torch.zeros(batch * seq_len + 1, dtype=torch.int64, device=device)
            rev_ptr[1:] = torch.cumsum(torch.bincount(key_sorted, minlength=batch * seq_len), 0)
            self._reverse["idx"] = query_global[order].to(torch.int32).contiguous()
            self._reverse["ptr"] = rev_ptr
        return self._reverse["ptr"], self._reverse["idx"]

    @property
    def batch(self) -> int:
        return self.neighbors.shape[0]

    @property
    def seq_len(self) -> int:
        return self.neighbors.shape[1]

    @property
    def width(self) -> int:
        return self.neighbors.shape[2]

    @property
    def num_edges(self) -> int:
        """Attended (query, key) pairs, self pairs included (one host-device sync)."""
        return int(self.counts.sum())

    @property
    def device(self) -> torch.device:
        return self.neighbors.device

    def __repr__(self) -> str:
        dense = self.batch * self.seq_len * self.seq_len
        return (f"GraphLayout(B={self.batch}, T={self.seq_len}, width={self.width}, "
                f"edges={self.num_edges}, density={self.num_edges / max(dense, 1):.4g}, "
                f"device={self.device})")

    @classmethod
    def build(cls, neighbors: torch.Tensor) -> "GraphLayout":
        """Validate and canonicalise ``neighbors`` ``[B, T, Kn]`` (syncs host and device once).

        Raises:
            TypeError: ``neighbors`` not an int32/int64 tensor.
            ValueError: not 3-D, or an entry outside ``[-1, T)``.

        Example:
            >>> GraphLayout.build(torch.tensor([[[-1, -1], [0, 0], [1, 0]]]))
            GraphLayout(B=1, T=3, width=3, edges=6, density=0.6667, device=cpu)
        """
        if not isinstance(neighbors, torch.Tensor) or neighbors.dtype not in INDEX_DTYPES:
            raise TypeError("neighbors must be an int32 or int64 tensor, got "
                            f"{getattr(neighbors, 'dtype', type(neighbors).__name__)}")
        if neighbors.dim() != 3 or neighbors.shape[0] < 1 or neighbors.shape[1] < 1:
            raise ValueError(f"neighbors must be [B, T, Kn] with B, T >= 1, "
                             f"got shape {tuple(neighbors.shape)}")
        batch, seq_len, input_width = neighbors.shape
        device = neighbors.device
        if input_width:
            low, high = torch.aminmax(neighbors)
            low, high = int(low), int(high)
            if low < -1 or high >= seq_len:
                raise ValueError(f"neighbors entries must lie in [-1, T={seq_len}) (-1 = padding), "
                                 f"got min {low}, max {high}")
        positions = torch.arange(seq_len, device=device)
        entries = torch.cat([neighbors.long(), positions.expand(batch, seq_len)[..., None]], -1)
        entries = torch.where(entries < 0, seq_len, entries)  # padding sorts last
        entries = entries.sort(-1).values
        repeated = torch.zeros_like(entries, dtype=torch.bool)
        repeated[..., 1:] = entries[..., 1:] == entries[..., :-1]
        entries = torch.where(repeated, seq_len, entries).sort(-1).values
        valid = entries < seq_len
        counts = valid.sum(-1)
        width = int(counts.max())
        entries, valid = entries[..., :width], valid[..., :width]
        canonical = torch.where(valid, entries, -1).to(torch.int32).contiguous()
        return cls(canonical, counts.to(torch.int32).contiguous(), input_width)

    def check_matches(self, neighbors: torch.Tensor) -> None:
        """ValueError unless this layout fits ``neighbors`` (shape and device; values unchecked)."""
        if neighbors.shape[:2] != self.neighbors.shape[:2] or neighbors.shape[2] != self.input_width:
            raise ValueError(f"layout was built for neighbors of shape "
                             f"{(self.batch, self.seq_len, self.input_width)}, got "
                             f"{tuple(neighbors.shape)}; rebuild it with GraphLayout.build")
        if neighbors.device != self.device:
            raise ValueError(f"layout is on {self.device} but neighbors are on {neighbors.device}")
