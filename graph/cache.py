"""``GraphCache``: a thread-safe LRU of built graphs keyed on token ids (+ config).

Keys are SHA-256 digests of the id tensor's shape, dtype and bytes plus an optional
config string (e.g. ``GraphConfig.to_json()``), so equal inputs hit and any change of ids
or config misses. Cached graphs are shared objects: treat them as read-only (every
conversion in ``sosm.graph`` copies).

Example:
    >>> import torch
    >>> from sosm.graph.cache import GraphCache
    >>> cache = GraphCache(max_entries=2)
    >>> ids = torch.tensor([[1, 2, 3]])
    >>> cache.get_or_build(ids, lambda: "graph A")
    'graph A'
    >>> cache.get_or_build(ids, lambda: "rebuilt")
    'graph A'
    >>> cache.stats()["hit_rate"]
    0.5
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any, Callable, Optional, Sequence, Union

import torch


def cache_key(token_ids: Union[torch.Tensor, Sequence[int]], config: Optional[str] = None) -> str:
    """Hex digest of ``token_ids`` (tensor or int sequence) and ``config`` (any string, or None)."""
    if not isinstance(token_ids, torch.Tensor):
        token_ids = torch.tensor(list(token_ids), dtype=torch.long)
    if token_ids.is_floating_point() or token_ids.is_complex():
        raise TypeError(f"token_ids must hold integers, got {token_ids.dtype}")
    ids = token_ids.detach().to("cpu", torch.long).contiguous()
    digest = hashlib.sha256()
    digest.update(repr(tuple(ids.shape)).encode())
    digest.update(ids.numpy().tobytes())
    digest.update(b"\0" + (config or "").encode("utf-8"))
    return digest.hexdigest()


class GraphCache:
    """Least-recently-used cache of graphs with hit statistics.

    Args:
        max_entries: capacity (``>= 1``); the least recently used entry is evicted beyond it.
    """

    def __init__(self, max_entries: int = 128):
        if not isinstance(max_entries, int) or max_entries < 1:
            raise ValueError(f"max_entries={max_entries!r} is invalid; accepted: an int >= 1")
        self.max_entries = max_entries
        self._entries: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _key(self, token_ids, config) -> str:
        return token_ids if isinstance(token_ids, str) else cache_key(token_ids, config)

    def get(self, token_ids, config: Optional[str] = None):
        """The cached graph for these ids (or a key from :func:`cache_key`), else None; counts a hit or miss."""
        key = self._key(token_ids, config)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                return self._entries[key]
            self.misses += 1
            return None

    def put(self, token_ids, graph, config: Optional[str] = None) -> None:
        """Store ``graph``; evicts the least recently used entry when full."""
        key = self._key(token_ids, config)
        with self._lock:
            self._entries[key] = graph
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
                self.evictions += 1

    def get_or_build(self, token_ids, build: Callable[[], Any], config: Optional[str] = None):
        """Cached graph, or ``build()`` stored and returned (build runs outside the lock)."""
        key = self._key(token_ids, config)
        graph = self.get(key)
        if graph is None:
            graph = build()
            self.put(key, graph)
        return graph

    def clear(self) -> None:
        """Drop every entry and reset the statistics."""
        with self._lock:
            self._entries.clear()
            self.hits = self.misses = self.evictions = 0

    def stats(self) -> dict:
        """``{"hits", "misses", "hit_rate", "size", "max_entries", "evictions"}`` (hit_rate 0.0 before any lookup)."""
        with self._lock:
            lookups = self.hits + self.misses
            return {"hits": self.hits, "misses": self.misses, "hit_rate": self.hits / lookups if lookups else 0.0,
                    "size": len(self._entries), "max_entries": self.max_entries, "evictions": self.evictions}
