"""`HNSWMemory`: a long-term memory of states on hnswlib, with raw vectors, metadata,
write positions for causal retrieval, deletion, automatic resize and a reader-writer lock.

Ids are ``0, 1, 2, ...`` in write order, stable and never reused (a deleted id stays
retired); id ``m`` is also row ``m`` of the stored raw vectors.

Causal visibility: each entry has a write position ``p`` (a global stream offset given to
:meth:`HNSWMemory.add`; ``-1`` when none was given, i.e. "written before the stream").
A query with ``max_position=i`` sees exactly the entries with ``p < i``; entries at or
after ``i`` are never returned, and they cannot change what is returned either: a causal
query is answered by exact search over the entries visible to it (:func:`exact_top_k`, fixed
tiles of ids, ties to the lower id), never by a walk through the shared HNSW graph, whose nodes
and links depend on every entry written so far. So the hits, ids and similarities of a query
at ``i`` are a function of the entries before ``i`` alone: appending later entries, or writing
them in between, changes no bit (tests/memory/test_causal.py). Cost: ``O(visible * dim)`` per
query, BLAS-batched over queries. Measured side by side with the filtered hnswlib search it
replaced (``OPENBLAS_NUM_THREADS=1``, busy 2-core shared CPU, dim 64, k 10, limits in the upper
half): one query over 20k entries 1.2 ms (was 0.7), over 100k 13 ms (was 5.6); 256 queries over
100k 1.1 s (was 0.5 s). Unfiltered (non-causal) queries use the HNSW
graph; document-filtered ones use it with hnswlib's ``filter`` above ``exact_threshold`` matches.

Similarity: ``space="cosine"`` returns the cosine, ``"ip"`` the inner product and
``"l2"`` minus the squared Euclidean distance (larger is always closer). A cosine memory
rejects zero vectors in ``add`` and in ``retrieve`` alike (no direction: ValueError naming the
row) and normalises vectors of any float32 scale (a power-of-two rescaling first); a float64
value beyond float32's range is a ValueError, never an ``inf`` in the index.

Example:
    >>> import torch
    >>> mem = HNSWMemory(dim=8, seed=0)
    >>> ids = mem.add(torch.randn(5, 8), positions=torch.arange(5))
    >>> res = mem.retrieve(torch.randn(1, 8), k=3, max_position=2)
    >>> sorted(i for i in res.ids[0].tolist() if i >= 0)
    [0, 1]
"""
from __future__ import annotations

import itertools
import math
from typing import Any, Optional, Sequence, Union

import hnswlib
import numpy as np
import torch

from ._checks import as_float_matrix, as_positions, check_metadata, check_positive_int, directions, unit_rows
from ._rwlock import ReadWriteLock

SPACES: tuple[str, ...] = ("cosine", "ip", "l2")
_EMPTY_RECORD: dict = {}
UNPOSITIONED: int = -1  #: write position of an entry added without positions
EF_MIN: int = 128  #: smallest automatic query beam width
EF_PER_SQRT_N: float = 0.75  #: automatic ef = max(EF_MIN, ceil(EF_PER_SQRT_N * sqrt(count)))


def auto_ef(count: int) -> int:
    """The default query beam width for an index of ``count`` entries (``ef=None``).

    Recall at a fixed ef falls as the index grows, so the default grows with it:
    ``max(EF_MIN, ceil(EF_PER_SQRT_N * sqrt(count)))``: 128 up to 29k entries, 336 at 200k,
    750 at 1M. Calibrated on i.i.d. Gaussian 64-d vectors (the hard case for HNSW: real
    semantic states have a far lower intrinsic dimension) with M=32, ef_construction=200,
    to keep recall@10 >= 0.95 up to 1M entries. Measured (k=10, one query, 1 thread, 2-core
    CPU; ``experiments/bench/results/memory_hnsw_{200k,1m}.json``):

    ====== ======= =========== =================== ===========================
    n      ef      recall@10   hnswlib p50 (ms)    smaller ef
    ====== ======= =========== =================== ===========================
    20k    128     0.977       0.15                —
    200k   336     0.970       1.2                 ef 128 (old default): 0.819
    1M     750     0.963       3.0 (thread CPU)    ef 256: 0.784 at 1.0 ms
    ====== ======= =========== =================== ===========================

    The price is query time, about linear in ef: at 1M, ef 512 gives 0.923 in 1.9 ms and
    ef 1024 0.982 in 3.8 ms. Pass ``ef=`` to fix it instead.

    Example:
        >>> auto_ef(1_000), auto_ef(1_000_000)
        (128, 750)
    """
    return max(EF_MIN, math.ceil(EF_PER_SQRT_N * math.sqrt(max(int(count), 0))))


def _gather_rows(array: np.ndarray, ids: np.ndarray, fill) -> np.ndarray:
    """``array[ids]`` (a new array), with ``fill`` in the empty slots (``ids == -1``)."""
    if ids.size == 0 or ids.min() >= 0:  # every slot filled: the common case, one gather
        return array[ids]
    out = array[np.where(ids >= 0, ids, 0)]
    out[ids < 0] = fill
    return out


class RetrievalResult:
    """Nearest entries per query; slot j of query q is empty when ``ids[q, j] == -1``.

    Attributes:
        ids: ``LongTensor[Q, k]`` memory ids, best first, ``-1`` where fewer than k visible.
        similarities: ``FloatTensor[Q, k]`` (see the module docstring), ``-inf`` where empty.
        metadata: ``Q`` lists of ``k`` dicts (``None`` where empty), copies of the stored ones.
        states: ``FloatTensor[Q, k, dim]`` the stored raw vectors, zeros where empty.
        positions: ``LongTensor[Q, k]`` write positions (``-1``: unpositioned or empty).

    ``metadata``, ``states`` and ``positions`` are gathered on first access: most callers
    read a part only, and every extra numpy/torch call costs a single query ~5-10 us once
    the search has evicted the caches. This is exact because an entry's vector, position
    and metadata never change after ``add`` (resizing copies them into new arrays; the
    result keeps the arrays it was answered from).
    """

    __slots__ = ("ids", "similarities", "_metadata", "_states", "_positions", "_source", "_raw_ids")

    def __init__(self, ids: torch.Tensor, similarities: torch.Tensor, metadata: Optional[list] = None,
                 states: Optional[torch.Tensor] = None, positions: Optional[torch.Tensor] = None, *,
                 source: Optional[tuple] = None, raw_ids: Optional[np.ndarray] = None) -> None:
        self.ids, self.similarities = ids, similarities
        self._metadata, self._states, self._positions = metadata, states, positions
        self._source, self._raw_ids = source, raw_ids  # (vectors, positions, records) arrays of the store

    @property
    def metadata(self) -> list[list[Optional[dict]]]:
        if self._metadata is None:
            records = self._source[2]
            self._metadata = [[dict(records[i]) if i >= 0 else None for i in row] for row in self._raw_ids.tolist()]
        return self._metadata

    @property
    def states(self) -> torch.Tensor:
        if self._states is None:
            self._states = torch.from_numpy(_gather_rows(self._source[0], self._raw_ids, 0.0))
        return self._states

    @property
    def positions(self) -> torch.Tensor:
        if self._positions is None:
            self._positions = torch.from_numpy(_gather_rows(self._source[1], self._raw_ids, UNPOSITIONED))
        return self._positions

    def __repr__(self) -> str:
        return f"RetrievalResult(ids={self.ids!r}, similarities={self.similarities!r})"


class HNSWMemory:
    """An HNSW index of ``dim``-dimensional states with stable ids and causal retrieval.

    Args:
        dim: vector size (64 for the semantic state).
        space: ``"cosine"`` (default), ``"ip"`` or ``"l2"``.
        M: graph degree (default 32: on random 64-d vectors M=16 needs ef≈200 for
            recall@10 0.95 at 20k entries; M=32 reaches 0.97 at ef=128).
        ef_construction: build-time beam width (default 200).
        ef: query-time beam width; None (default) follows the index size, :func:`auto_ef`
            (128 up to 29k entries, 750 at 1M), re-set after each ``add``; an int fixes it.
            hnswlib raises it to k when k is larger.
        max_elements: initial capacity (default 1024); doubled automatically when full.
        seed: hnswlib's level-generator seed.
        num_threads: threads for ``add``/unfiltered batched queries (default 1, which
            keeps the graph deterministic for a fixed seed and input order).
        exact_threshold: document-filtered (non-causal) queries with at most this many matching
            entries use exact search (default 4096). Causal queries are always exact (module
            docstring). Saved and restored by ``save``/``load``, like every setting.
    """

    def __init__(self, dim: int, space: str = "cosine", M: int = 32, ef_construction: int = 200,
                 ef: Optional[int] = None, max_elements: int = 1024, seed: int = 0, num_threads: int = 1,
                 exact_threshold: int = 4096) -> None:
        self.dim = check_positive_int(dim, "dim")
        if space not in SPACES:
            raise ValueError(f"space must be one of {list(SPACES)}, got {space!r}")
        self.space = space
        self.M = check_positive_int(M, "M")
        self.ef_construction = check_positive_int(ef_construction, "ef_construction")
        self.ef_auto = ef is None  #: True when ef follows the index size (auto_ef)
        self.ef = auto_ef(0) if ef is None else check_positive_int(ef, "ef")  #: current query beam width
        self.seed = int(seed)
        self.num_threads = check_positive_int(num_threads, "num_threads")
        self.exact_threshold = int(exact_threshold)
        capacity = check_positive_int(max_elements, "max_elements")
        self._index = hnswlib.Index(space=space, dim=self.dim)
        self._index.init_index(max_elements=capacity, M=self.M, ef_construction=self.ef_construction,
                               random_seed=self.seed)
        self._index.set_ef(self.ef)
        self._vectors = np.zeros((capacity, self.dim), dtype=np.float32)
        self._units = np.zeros((capacity, self.dim), dtype=np.float32) if space == "cosine" else None  # rows / |row|
        self._positions = np.full(capacity, UNPOSITIONED, dtype=np.int64)
        self._deleted = np.zeros(capacity, dtype=bool)
        self._documents = np.full(capacity, -1, dtype=np.int64)
        self._document_codes: dict[Any, int] = {}
        self._metadata: list[dict] = []
        self._next_id = 0
        self._n_deleted = 0
        self._max_position = UNPOSITIONED  # largest write position ever given (deleted entries included)
        self._lock = ReadWriteLock()

    def __len__(self) -> int:
        """Number of live (not deleted) entries."""
        return self._next_id - self._n_deleted

    @property
    def count(self) -> int:
        """Number of ids ever issued (live + deleted); the next id to be issued."""
        return self._next_id

    @property
    def capacity(self) -> int:
        return self._vectors.shape[0]

    def __repr__(self) -> str:
        return (f"HNSWMemory(dim={self.dim}, space={self.space!r}, live={len(self)}, deleted={self._n_deleted}, "
                f"capacity={self.capacity}, M={self.M}, ef_construction={self.ef_construction}, "
                f"ef={self.ef}{' (auto)' if self.ef_auto else ''})")

    def add(self, states, metadata: Optional[Sequence[dict]] = None, positions=None) -> torch.Tensor:
        """Store ``states`` ([N, dim] float tensor or ndarray) and return their ids (LongTensor[N]).

        Args:
            metadata: optional list of N JSON-serialisable dicts; the key ``"document"``
                (str or int) enables ``retrieve(..., document=...)``.
            positions: optional integer tensor [N] of write positions (>= 0) in the global
                stream; entries without one are visible to every causal query.
        """
        vectors = as_float_matrix(states, "states", self.dim)
        count = vectors.shape[0]
        written = as_positions(positions, "positions", count, allow_scalar=False)
        records = None if metadata is None else check_metadata(metadata, count)
        searchable = directions(vectors, "states") if self.space == "cosine" else vectors  # hnswlib normalises these
        for i, record in enumerate(records or ()):
            doc = record.get("document")
            if doc is not None and not isinstance(doc, (str, int)):
                raise TypeError(f"metadata[{i}]['document'] must be a str or int, got {type(doc).__name__}")
        with self._lock.write():
            start = self._next_id
            ids = np.arange(start, start + count, dtype=np.int64)
            if count == 0:
                return torch.from_numpy(ids)
            self._ensure_capacity(start + count)
            self._index.add_items(searchable, ids, num_threads=self.num_threads)
            self._vectors[start:start + count] = vectors
            if self._units is not None:
                self._units[start:start + count] = unit_rows(vectors)
            if written is not None:
                self._positions[start:start + count] = written
                self._max_position = max(self._max_position, int(written.max()))
            if records is None:  # one shared empty record: stored records are never mutated (copied on output)
                self._metadata.extend(itertools.repeat(_EMPTY_RECORD, count))
            else:
                for i, record in enumerate(records):
                    doc = record.get("document")
                    if doc is not None:
                        self._documents[start + i] = self._document_codes.setdefault(doc, len(self._document_codes))
                self._metadata.extend(records)
            self._next_id = start + count
            if self.ef_auto:
                self._sync_ef()
        return torch.from_numpy(ids)

    def _sync_ef(self, force: bool = False) -> None:
        """Set hnswlib's ef to :func:`auto_ef` of the current count (caller holds the write lock)."""
        ef = auto_ef(self._next_id)
        if force or ef != self.ef:
            self.ef = ef
            self._index.set_ef(ef)

    def delete(self, ids) -> None:
        """Hide entries ``ids`` (LongTensor/sequence) from retrieval; ids are never reused.

        Deleting an already deleted id is a no-op; an id never issued raises ValueError.
        """
        wanted = np.unique(np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids, dtype=np.int64).reshape(-1))
        with self._lock.write():
            if wanted.size and (wanted.min() < 0 or wanted.max() >= self._next_id):
                raise ValueError(f"ids must be in [0, {self._next_id}) (issued ids), got {wanted[(wanted < 0) | (wanted >= self._next_id)].tolist()}")
            for label in wanted[~self._deleted[wanted]]:
                self._index.mark_deleted(int(label))
                self._deleted[label] = True
                self._n_deleted += 1

    def get_states(self, ids) -> torch.Tensor:
        """Stored raw vectors of ``ids`` (LongTensor[N], deleted ids included): FloatTensor[N, dim]."""
        wanted = np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids, dtype=np.int64).reshape(-1)
        with self._lock.read():
            if wanted.size and (wanted.min() < 0 or wanted.max() >= self._next_id):
                raise ValueError(f"ids must be in [0, {self._next_id}) (issued ids)")
            return torch.from_numpy(self._vectors[wanted].copy())

    def retrieve(self, queries, k: int, *, max_position: Union[None, int, torch.Tensor] = None,
                 document: Union[None, str, int] = None, ef: Optional[int] = None) -> RetrievalResult:
        """The k most similar visible entries for each of ``queries`` ([Q, dim]).

        Args:
            k: results per query (> 0); fewer visible entries leave ``-1`` slots.
            max_position: None (no causal filter), an int, or an integer tensor [Q]: query q
                sees only entries written at positions ``p < max_position[q]``.
            document: only entries whose metadata ``"document"`` equals this value.
            ef: beam width for this call (default ``self.ef``); a different ef holds the
                write lock for the call because hnswlib's ef is index-wide.
        """
        vectors = as_float_matrix(queries, "queries", self.dim)
        if self.space == "cosine":
            vectors = directions(vectors, "queries")
        k = check_positive_int(k, "k")
        n_queries = vectors.shape[0]
        limits = as_positions(max_position, "max_position", n_queries, allow_scalar=True)
        if ef is not None and check_positive_int(ef, "ef") != self.ef:
            with self._lock.write():
                self._index.set_ef(ef)
                try:
                    return self._retrieve_locked(vectors, k, limits, document)
                finally:
                    self._index.set_ef(self.ef)
        with self._lock.read():
            return self._retrieve_locked(vectors, k, limits, document)

    def _retrieve_locked(self, vectors: np.ndarray, k: int, limits: Optional[np.ndarray], document) -> RetrievalResult:
        n_queries, n = vectors.shape[0], self._next_id
        if n_queries == 0:
            return self._assemble(np.zeros((0, k), np.int64), np.zeros((0, k), np.float32), full=True)
        allowed = None
        if document is not None:
            code = self._document_codes.get(document)
            allowed = ~self._deleted[:n] & (self._documents[:n] == code) if code is not None else np.zeros(n, dtype=bool)
        if limits is not None:  # causal: exact over the visible entries, a function of the entries before p alone
            ids, sims = exact_top_k(vectors, k, self._searched()[:n], self.space,
                                    ~self._deleted[:n] if allowed is None else allowed, self._positions[:n], limits)
            return self._assemble(ids, sims)
        if document is None and k <= len(self):  # hot path: no filter, k entries exist
            threads = 1 if n_queries < 16 * self.num_threads else self.num_threads  # threads cost more than tiny batches
            try:
                labels, dists = self._index.knn_query(vectors, k=k, num_threads=threads)
            except RuntimeError:  # hnswlib could not fill k (many deletions): exact path below
                pass
            else:
                return self._assemble(labels.astype(np.int64), -dists if self.space == "l2" else 1.0 - dists, full=True)
        ids = np.full((n_queries, k), -1, dtype=np.int64)
        sims = np.full((n_queries, k), -np.inf, dtype=np.float32)
        if allowed is None:
            self._search(vectors, k, None, len(self), ids, sims)
        else:
            self._search(vectors, k, allowed, int(allowed.sum()), ids, sims)
        return self._assemble(ids, sims)

    def _search(self, vectors: np.ndarray, k: int, visible: Optional[np.ndarray], n_visible: int,
                ids: np.ndarray, sims: np.ndarray) -> None:
        """Fill ``ids``/``sims`` ([q, k]) with the top entries among ``visible`` (None: all live); not causal."""
        k_eff = min(k, n_visible)
        if k_eff == 0:
            return
        if visible is not None and (n_visible <= self.exact_threshold or 8 * n_visible < len(self)):
            return self._exact(vectors, k_eff, visible, ids, sims)
        try:
            if visible is None:
                threads = 1 if len(vectors) < 16 * self.num_threads else self.num_threads  # threads cost more than tiny batches
                labels, dists = self._index.knn_query(vectors, k=k_eff, num_threads=threads)
            else:
                labels, dists = self._index.knn_query(vectors, k=k_eff, num_threads=1, filter=visible.__getitem__)
        except RuntimeError:  # hnswlib could not fill k (sparse filter or many deletions)
            return self._exact(vectors, k_eff, ~self._deleted[:self._next_id] if visible is None else visible, ids, sims)
        labels = labels.astype(np.int64)
        ids[:, :k_eff] = labels
        sims[:, :k_eff] = -dists if self.space == "l2" else 1.0 - dists
        if visible is not None:
            hidden = ~visible[labels]
            assert not hidden.any(), "hnswlib returned an entry the filter rejected"

    def _exact(self, vectors: np.ndarray, k: int, visible: np.ndarray, ids: np.ndarray, sims: np.ndarray) -> None:
        """Brute-force top-k over the visible raw vectors; ties go to the lower id."""
        top_ids, top_sims = exact_top_k(vectors, k, self._searched()[:self._next_id], self.space, visible)
        ids[:, :k], sims[:, :k] = top_ids, top_sims

    def _searched(self) -> np.ndarray:
        """What the exact search scores against: the unit rows (cosine, cached at ``add``) or the raw vectors."""
        return self._vectors if self._units is None else self._units

    def _assemble(self, ids: np.ndarray, sims: np.ndarray, full: bool = False) -> RetrievalResult:
        """The result of ``ids``/``sims``; states, positions and metadata are gathered lazily."""
        return RetrievalResult(torch.from_numpy(ids), torch.from_numpy(sims),
                               source=(self._vectors, self._positions, self._metadata), raw_ids=ids)

    def _ensure_capacity(self, needed: int) -> None:
        if needed <= self.capacity:
            return
        new_capacity = max(needed, 2 * self.capacity)
        self._index.resize_index(new_capacity)
        self._resize_arrays(new_capacity)

    def _resize_arrays(self, new_capacity: int) -> None:
        """Grow the per-id arrays (vectors, positions, deleted, documents) to ``new_capacity`` rows."""
        grow = new_capacity - self.capacity
        self._vectors = np.concatenate([self._vectors, np.zeros((grow, self.dim), dtype=np.float32)])
        if self._units is not None:
            self._units = np.concatenate([self._units, np.zeros((grow, self.dim), dtype=np.float32)])
        self._positions = np.concatenate([self._positions, np.full(grow, UNPOSITIONED, dtype=np.int64)])
        self._deleted = np.concatenate([self._deleted, np.zeros(grow, dtype=bool)])
        self._documents = np.concatenate([self._documents, np.full(grow, -1, dtype=np.int64)])

    def save(self, directory) -> None:
        """Write the memory atomically under ``directory`` (see :mod:`sosm.memory.persistence`)."""
        from .persistence import save_memory
        with self._lock.read():
            save_memory(self, directory)

    @classmethod
    def load(cls, directory, *, dim: Optional[int] = None, space: Optional[str] = None) -> "HNSWMemory":
        """Load a memory saved by :meth:`save`; checksums, ids, vectors and metadata are verified.

        ``dim``/``space``, when given, must match the manifest (ValueError otherwise).
        """
        from .persistence import load_memory
        return load_memory(cls, directory, dim=dim, space=space)


EXACT_TILE = 8192  #: entries per tile of the exact search (ids [t * EXACT_TILE, (t + 1) * EXACT_TILE), zero-padded)


def exact_top_k(queries: np.ndarray, k: int, entries: np.ndarray, space: str, allowed: np.ndarray,
                positions: Optional[np.ndarray] = None, limits: Optional[np.ndarray] = None):
    """Exact top-k of ``queries [Q, d]`` over ``entries [N, d]`` (ids = rows), ties to the lower id.

    ``entries`` are unit rows for ``space="cosine"`` (:func:`~._checks.unit_rows`, the memory's cache)
    and the raw vectors otherwise. Entry j is a candidate of query q when ``allowed[j]`` and, with
    ``limits``, ``positions[j] < limits[q]``. Entries are scored by fixed tiles of ``EXACT_TILE`` ids
    (the last one zero-padded to the full width), every entry of a tile whether a candidate or not,
    and merged into a running top-k that depends on the candidates' scores alone. So the answer to
    a query is a function of its candidates: appending entries (at later positions, later ids)
    changes no score of an existing entry and no choice among them, not even in the last bit.
    Returns ``ids [Q, k]`` (-1 where fewer candidates) and ``sims [Q, k]`` float32 (-inf there), best first.
    """
    n_queries, n = len(queries), len(entries)
    best_s = np.full((n_queries, k), -np.inf, dtype=np.float32)
    best_i = np.full((n_queries, k), -1, dtype=np.int64)
    if space == "cosine":
        queries = unit_rows(queries)
    for c0 in range(0, n, EXACT_TILE):
        c1 = min(n, c0 + EXACT_TILE)
        ok = allowed[c0:c1]
        if not ok.any() or (limits is not None and positions[c0:c1][ok].min() >= limits.max()):
            continue  # no candidate of any query here
        tile = entries[c0:c1]
        if c1 - c0 < EXACT_TILE:
            tile = np.concatenate([tile, np.zeros((EXACT_TILE - (c1 - c0), tile.shape[1]), dtype=tile.dtype)])
        if space == "l2":
            scores = exact_similarity(queries, tile, "l2")[:, :c1 - c0]  # [Q, c1 - c0]
        else:
            scores = (queries @ tile.T)[:, :c1 - c0]
        hidden = ~ok[None, :] if limits is None else ~ok[None, :] | (positions[c0:c1][None, :] >= limits[:, None])
        scores[np.broadcast_to(hidden, scores.shape)] = -np.inf
        ids = np.broadcast_to(np.arange(c0, c1), scores.shape)
        best_s, best_i = _merge_top_k(np.concatenate([best_s, scores], 1), np.concatenate([best_i, ids], 1), k)
    order = np.lexsort((best_i, -best_s), axis=1)  # similarity desc, then id asc
    best_s, best_i = np.take_along_axis(best_s, order, 1), np.take_along_axis(best_i, order, 1)
    best_i[np.isneginf(best_s)] = -1
    return best_i, best_s


def _merge_top_k(scores: np.ndarray, ids: np.ndarray, k: int):
    """Per row, the k best (score desc, then id asc) of ``scores``/``ids [Q, w]``; -inf entries are never chosen."""
    rows, width = scores.shape
    if width <= k:
        return scores, ids
    kth = np.partition(scores, width - k, axis=1)[:, width - k]  # the k-th largest score of each row
    above, at = scores > kth[:, None], scores == kth[:, None]
    need = k - above.sum(1)
    take = above | (at & ~np.isneginf(kth)[:, None])
    ties = np.nonzero(np.isfinite(kth) & (at.sum(1) > need))[0]  # more entries at the k-th score than slots
    for r in ties:  # rare: keep the lowest ids among the tied entries
        tied = np.nonzero(at[r])[0]
        take[r, tied] = False
        take[r, tied[np.argsort(ids[r, tied], kind="stable")[:need[r]]]] = True
    out_s = np.full((rows, k), -np.inf, dtype=np.float32)
    out_i = np.full((rows, k), -1, dtype=np.int64)
    r, c = np.nonzero(take)  # row-major: at most k per row
    slot = np.arange(r.size) - np.searchsorted(r, r)
    out_s[r, slot], out_i[r, slot] = scores[r, c], ids[r, c]
    return out_s, out_i


def exact_similarity(queries: np.ndarray, vectors: np.ndarray, space: str) -> np.ndarray:
    """Exact similarity [Q, N] of queries [Q, d] against vectors [N, d] in ``space`` (float32)."""
    if space == "cosine":
        queries, vectors = unit_rows(queries), unit_rows(vectors)
    dots = queries @ vectors.T
    if space == "l2":
        return 2.0 * dots - (queries ** 2).sum(1)[:, None] - (vectors ** 2).sum(1)[None, :]
    return dots
