"""Landmarks: selection, batched multi-source BFS hop distances, distance bounds, random-walk encoding (causal too).

Distances are ``LongTensor[B, T, L]`` with :data:`~sosm.graph.types.UNREACHABLE` where a
landmark does not reach a position within ``max_distance`` hops (docs/CONTRACTS.md,
"Landmarks"). Causal mode runs a directed BFS along edge direction (source -> target) over
edges with ``source position < target position`` only, so the path to i visits only
positions ``<= i`` and a position before a landmark sees UNREACHABLE for it. Bidirectional
mode runs an undirected BFS.

The BFS expands the frontiers of all ``B * L`` landmarks at once: each node carries its
frontier and visited sets as bit masks (``ceil(L / 64)`` int64 words, bit l for landmark
slot l; samples never share edges, so one bit serves every sample). One level is a gather
of the sources' frontier words and an OR per target (an ELLPACK table of the first 32
in-edges, a log-step segmented scan for the rest); small frontiers push along their
out-edges instead of pulling over all edges. Everything is torch, so the same code runs on
GPU. Memory: O(E + N * L).

On CPU tensors the same BFS runs as a C loop (``native_landmarks.py`` + ``landmarks_cpu.c``,
compiled on first use by the shared ``sosm.common.native`` helper, like the native selective scan):
CSR by source, frontier bits pushed along out-edges, identical numbers. ``SOSM_NATIVE_CPU=0``
or no compiler (one warning) runs the torch BFS. 100k nodes, 2.1M edges, 64 landmarks, one
thread: 0.107 s native vs 0.753 s torch vs 0.521 s scipy ``shortest_path``
(``experiments/bench/bench_landmarks_cpu.py``).

Example:
    >>> import torch
    >>> from sosm.graph.landmarks import landmark_distances, select_landmarks
    >>> chain = torch.tensor([[0, 1, 2], [1, 2, 3]])  # 0 -> 1 -> 2 -> 3
    >>> marks = select_landmarks(chain, 1, 4, num_landmarks=2, rule="stride", causal=True)
    >>> marks.tolist()
    [[0, 2]]
    >>> landmark_distances(chain, 1, 4, marks, max_distance=8, causal=True)[0].tolist()
    [[0, 32767], [1, 32767], [2, 0], [3, 1]]
"""
from __future__ import annotations

import sys
import warnings
from typing import Optional

import torch

from . import native_landmarks
from .types import UNREACHABLE

LANDMARK_RULES = ("auto", "stride", "degree")


def _check_edge_index(edge_index: torch.Tensor) -> None:
    if not isinstance(edge_index, torch.Tensor) or edge_index.dim() != 2 or edge_index.shape[0] != 2 \
            or edge_index.dtype != torch.long:
        got = (tuple(edge_index.shape), edge_index.dtype) if isinstance(edge_index, torch.Tensor) else type(edge_index)
        raise TypeError(f"edge_index must be LongTensor[2, E], got {got}")


def _check_sizes(batch_size: int, seq_len: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is invalid; accepted: an int >= 1")
    if not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"seq_len={seq_len!r} is invalid; accepted: an int >= 1")


def _token_edges(edge_index: torch.Tensor, seq_len: int, num_nodes: int, causal: bool) -> torch.Tensor:
    """Token-to-token edges within one sample, no self-loops; causal keeps source pos < target pos."""
    src, dst = edge_index
    keep = (src < num_nodes) & (dst < num_nodes) & (src >= 0) & (dst >= 0)
    if num_nodes == seq_len:  # one sample: no divisions needed
        keep &= (src < dst) if causal else (src != dst)
    else:
        keep &= src // seq_len == dst // seq_len
        keep &= (src % seq_len < dst % seq_len) if causal else (src != dst)
    return edge_index[:, keep]


def select_landmarks(edge_index: torch.Tensor, batch_size: int, seq_len: int, num_landmarks: int, rule: str = "auto",
                     causal: bool = True, padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Landmark positions ``LongTensor[B, L]`` (within each sample).

    Rules:
        - ``"stride"``: slot l is position ``l * (T // L)`` in every sample (content-independent,
          causal-safe; padding is ignored, a padded landmark simply reaches nothing).
        - ``"degree"``: the L positions of highest undirected degree (distinct neighbours over
          token edges between real tokens), ties to the lower position, padded tokens last. Bidirectional only.
        - ``"auto"``: ``"stride"`` when ``causal`` else ``"degree"``.

    Args:
        edge_index: ``LongTensor[2, E]`` (only read by ``"degree"``).
        batch_size, seq_len: B and T.
        num_landmarks: L with ``0 <= L <= T``.
        rule: one of ``"auto"``, ``"stride"``, ``"degree"``.
        causal: the graph's mode; ``"degree"`` with ``causal=True`` raises ``ValueError``.
        padding_mask: optional ``BoolTensor[B, T]``, True for real tokens.

    Example:
        >>> import torch
        >>> star = torch.tensor([[0, 0, 0, 1], [1, 2, 3, 2]])
        >>> select_landmarks(star, 1, 4, 2, rule="degree", causal=False).tolist()
        [[0, 1]]
    """
    _check_edge_index(edge_index)
    _check_sizes(batch_size, seq_len)
    if not isinstance(num_landmarks, int) or not 0 <= num_landmarks <= seq_len:
        raise ValueError(f"num_landmarks={num_landmarks!r} is invalid; accepted: an int in [0, seq_len={seq_len}]")
    if rule not in LANDMARK_RULES:
        raise ValueError(f"rule={rule!r} is invalid; accepted: one of {LANDMARK_RULES}")
    if rule == "auto":
        rule = "stride" if causal else "degree"
    if rule == "degree" and causal:
        raise ValueError("rule='degree' looks at the whole sequence and is only valid with causal=False; "
                         "use 'stride' or 'auto' in causal mode")
    device = edge_index.device
    L = num_landmarks
    if rule == "stride" or L == 0:
        stride = seq_len // L if L else 0
        return (torch.arange(L, device=device) * stride)[None].expand(batch_size, -1).clone()
    N = batch_size * seq_len
    ei = _token_edges(edge_index, seq_len, N, causal=False)
    if padding_mask is not None:
        real = padding_mask.to(device).reshape(-1)
        ei = ei[:, real[ei[0]] & real[ei[1]]]
    pairs = torch.unique(torch.cat([ei, ei.flip(0)], dim=1), dim=1)
    degree = torch.bincount(pairs[0], minlength=N).reshape(batch_size, seq_len)
    if padding_mask is not None:
        degree = degree.masked_fill(~padding_mask.to(device), -1)
    order = torch.sort(degree, dim=1, descending=True, stable=True).indices  # ties keep the lower position first
    return order[:, :L].contiguous()


def _landmark_bits(landmarks: torch.Tensor, seq_len: int, words: int) -> torch.Tensor:
    """``[words, N]`` int64 with bit l % 64 of word l // 64 set at the node of landmark slot l."""
    B, L = landmarks.shape
    device = landmarks.device
    bits = torch.zeros(words, B * seq_len, dtype=torch.long, device=device)
    slot = torch.arange(L, device=device)
    value = torch.ones(L, dtype=torch.long, device=device) << (slot % 64)
    nodes = (torch.arange(B, device=device)[:, None] * seq_len + landmarks).reshape(-1)
    bits.index_put_(((slot // 64).repeat(B), nodes), value.repeat(B), accumulate=True)  # distinct bits: sum == OR
    return bits


def _byte_bits(device) -> torch.Tensor:
    """``BoolTensor[256, 8]``: the bits of every byte value, least significant first."""
    return (torch.arange(256, device=device)[:, None] >> torch.arange(8, device=device)) & 1 == 1


def _sorted_by(first: torch.Tensor, second: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(first, second)`` reordered so that ``first`` ascends (no sort when it already does)."""
    if first.numel() < 2 or bool((first[1:] >= first[:-1]).all()):
        return first, second
    order = torch.sort(first).indices
    return first.index_select(0, order), second.index_select(0, order)


class _TargetSortedEdges:
    """Edges grouped by target for a per-target OR of the sources' bits (rebuilt after pruning).

    The first ``ell_width`` in-edges of every target form an ELLPACK table ``[width, n_targets]``
    (missing slots point at a sentinel node whose bits are 0), so the bulk of the OR is
    ``width`` dense gathers; the in-edges past ``ell_width`` (hubs) go through a segmented
    OR scan (Hillis-Steele, log2(max in-degree) steps).
    """

    def __init__(self, src: torch.Tensor, dst: torch.Tensor, num_nodes: int, ell_width: int = 32):
        device = dst.device
        self.src, self.dst, self.num_nodes = src, dst, num_nodes
        self.targets, counts = torch.unique_consecutive(dst, return_counts=True)
        segment = torch.repeat_interleave(torch.arange(self.targets.numel(), device=device), counts)
        rank = torch.arange(dst.numel(), device=device) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts,
                                                                                  counts)
        width = min(int(counts.max()), ell_width) if dst.numel() else 0
        in_table = rank < width
        self.table = torch.full((width, self.targets.numel()), num_nodes, dtype=torch.long, device=device)
        self.table[rank[in_table], segment[in_table]] = src[in_table]
        over = ~in_table
        self.over_src, over_rank = src[over], rank[over] - width
        over_segment = segment[over]
        self.over_targets, over_counts = torch.unique_consecutive(over_segment, return_counts=True)
        self.over_last = torch.cumsum(over_counts, 0) - 1
        self.steps = []  # (step, -1 where the entry `step` back is in the same segment else 0)
        step = 1
        while step < (int(over_counts.max()) if over_counts.numel() else 0):
            self.steps.append((step, -(over_rank[step:] >= step).long()))
            step *= 2

    def segment_or(self, node_bits: torch.Tensor) -> torch.Tensor:
        """OR of ``node_bits[src]`` over each target's in-edges: ``[len(targets)]`` int64."""
        bits = torch.cat([node_bits, node_bits.new_zeros(1)])  # sentinel node -> 0
        out = bits.index_select(0, self.table[0]) if self.table.shape[0] else bits.new_zeros(self.targets.numel())
        for row in self.table[1:]:
            out |= bits.index_select(0, row)
        if self.over_src.numel():
            values = node_bits.index_select(0, self.over_src)
            for step, same_segment in self.steps:
                values[step:] |= values[:-step] & same_segment  # right side is a new tensor: no aliasing
            out.index_copy_(0, self.over_targets,
                            out.index_select(0, self.over_targets) | values.index_select(0, self.over_last))
        return out


def landmark_distances(edge_index: torch.Tensor, batch_size: int, seq_len: int, landmarks: torch.Tensor,
                       max_distance: int, causal: bool) -> torch.Tensor:
    """Hop distances from every landmark: ``LongTensor[B, T, L]``, UNREACHABLE beyond ``max_distance``.

    Args:
        edge_index: ``LongTensor[2, E]`` global ids ``b * T + t`` (memory sources ``>= B*T`` ignored).
        batch_size, seq_len: B and T.
        landmarks: ``LongTensor[B, L]`` positions within each sample.
        max_distance: BFS depth cap, ``>= 0``.
        causal: directed BFS along source -> target over forward edges (True) or undirected (False).

    Returns:
        ``LongTensor[B, T, L]`` on ``edge_index``'s device. Syncs host and device a few times per BFS level.

    Example:
        >>> import torch
        >>> ring = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 0]])
        >>> landmark_distances(ring, 1, 4, torch.tensor([[0]]), max_distance=8, causal=False)[0, :, 0].tolist()
        [0, 1, 2, 1]
    """
    _check_edge_index(edge_index)
    _check_sizes(batch_size, seq_len)
    if not isinstance(landmarks, torch.Tensor) or landmarks.dtype != torch.long or landmarks.dim() != 2 \
            or landmarks.shape[0] != batch_size:
        raise TypeError(f"landmarks must be LongTensor[{batch_size}, L], got "
                        f"{tuple(landmarks.shape) if isinstance(landmarks, torch.Tensor) else type(landmarks)}")
    if landmarks.numel() and (landmarks.min() < 0 or landmarks.max() >= seq_len):
        raise ValueError(f"landmarks must be positions in [0, seq_len={seq_len}), got range "
                         f"[{int(landmarks.min())}, {int(landmarks.max())}]")
    if not isinstance(max_distance, int) or max_distance < 0:
        raise ValueError(f"max_distance={max_distance!r} is invalid; accepted: an int >= 0")
    device = edge_index.device
    landmarks = landmarks.to(device)
    B, L, N = batch_size, landmarks.shape[1], batch_size * seq_len
    if _use_native(device, N):
        dist = native_landmarks.landmark_bfs_native(edge_index, batch_size, seq_len, landmarks, max_distance, causal)
        return dist.long().reshape(B, seq_len, L)
    return _landmark_distances_torch(edge_index, batch_size, seq_len, landmarks, max_distance, causal)


def _use_native(device: torch.device, num_nodes: int) -> bool:
    """CPU tensors, ``SOSM_NATIVE_CPU`` not off, library built (warns once per process when it cannot be)."""
    if device.type != "cpu" or not native_landmarks.enabled() or num_nodes >= 2 ** 31 - 1:
        return False
    ok, reason = native_landmarks.status()
    if not ok and not native_landmarks.library.warned:
        native_landmarks.library.warned = True
        warnings.warn(f"landmark_distances: native CPU BFS unavailable ({reason}); running the torch BFS",
                      RuntimeWarning, stacklevel=3)
    return ok


def _landmark_distances_torch(edge_index: torch.Tensor, batch_size: int, seq_len: int, landmarks: torch.Tensor,
                              max_distance: int, causal: bool) -> torch.Tensor:
    """The torch bit-parallel BFS (any device); arguments already validated."""
    device = edge_index.device
    B, L, N = batch_size, landmarks.shape[1], batch_size * seq_len
    dist = torch.full((N, L), UNREACHABLE, dtype=torch.int16, device=device)  # UNREACHABLE fits int16
    if L == 0:
        return dist.long().reshape(B, seq_len, L)
    words = (L + 63) // 64
    frontier = _landmark_bits(landmarks, seq_len, words)  # [W, N]
    visited = frontier.clone()
    nodes = (torch.arange(B, device=device)[:, None] * seq_len + landmarks).reshape(-1)
    dist[nodes, torch.arange(L, device=device).repeat(B)] = 0

    ei = _token_edges(edge_index, seq_len, N, causal)
    if not causal:
        ei = torch.cat([ei, ei.flip(0)], dim=1)
    in_dst, in_src = _sorted_by(ei[1], ei[0])
    pull = _TargetSortedEdges(in_src, in_dst, N)
    out_src, out_dst = _sorted_by(ei[0], ei[1])
    out_count = torch.bincount(out_src, minlength=N)
    out_start = torch.cumsum(out_count, 0) - out_count
    byte_bits = _byte_bits(device)
    flat = dist.view(-1)
    for level in range(1, max_distance + 1):
        active = (frontier != 0).any(0).nonzero().flatten()
        if active.numel() == 0 or pull.targets.numel() == 0:
            break
        degree = out_count.index_select(0, active)
        pushed = int(degree.sum())
        if 4 * pushed < pull.src.numel():  # small frontier: expand only its out-edges (push)
            offset = torch.repeat_interleave(out_start.index_select(0, active) - (torch.cumsum(degree, 0) - degree),
                                             degree) + torch.arange(pushed, device=device)
            step_dst, step_src = _sorted_by(out_dst.index_select(0, offset), out_src.index_select(0, offset))
            edges = _TargetSortedEdges(step_src, step_dst, N)
        else:  # large frontier: pull over every edge
            edges = pull
        reached = torch.stack([edges.segment_or(frontier[w]) for w in range(words)])  # [W, n_targets]
        reached &= ~visited.index_select(1, edges.targets)
        news = (reached != 0).any(0)
        targets, reached = edges.targets[news], reached[:, news]
        frontier.zero_().index_copy_(1, targets, reached)
        if targets.numel() == 0:
            break
        visited.index_copy_(1, targets, visited.index_select(1, targets) | reached)
        as_bytes = reached.T.reshape(-1).view(torch.uint8).reshape(-1, 8)  # little-endian: bit l in byte l // 8
        as_bytes = (as_bytes if sys.byteorder == "little" else as_bytes.flip(1)).reshape(-1)
        row, slot = byte_bits.index_select(0, as_bytes.long()).reshape(targets.numel(), words * 64).nonzero().unbind(1)
        flat.index_fill_(0, targets.index_select(0, row) * L + slot, level)  # slots >= L never have bits
    return dist.long().reshape(B, seq_len, L)


def landmark_distance_bounds(distances_i: torch.Tensor, distances_j: torch.Tensor,
                             directed: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Triangle-inequality bounds on the hop distance between i and j from landmark coordinates.

    Only landmarks that reach both i and j (neither distance UNREACHABLE) count:
    ``lower = max_l |d_il - d_jl|`` and ``upper = min_l (d_il + d_jl)``. They bound the
    undirected hop distance when the distances come from an undirected BFS (bidirectional
    mode). With directed (causal) distances ``upper`` still bounds the undirected distance,
    and ``directed=True`` gives ``lower = max(0, max_l (d_il - d_jl))``, a lower bound on the
    directed distance from j (key) to i (query). When no landmark reaches both:
    ``lower = 0`` and ``upper = UNREACHABLE`` (no information).

    Args:
        distances_i, distances_j: ``LongTensor[..., L]`` rows of ``landmark_distances`` (broadcastable).
        directed: see above.

    Returns:
        ``(lower, upper)``, ``LongTensor[...]`` each.

    Example:
        >>> import torch
        >>> landmark_distance_bounds(torch.tensor([2, 5]), torch.tensor([3, 32767]))
        (tensor(1), tensor(5))
    """
    if distances_i.shape[-1] != distances_j.shape[-1]:
        raise ValueError(f"distances_i and distances_j must have the same number of landmarks, got "
                         f"{distances_i.shape[-1]} and {distances_j.shape[-1]}")
    di, dj = torch.broadcast_tensors(distances_i.long(), distances_j.long())
    both = (di != UNREACHABLE) & (dj != UNREACHABLE)
    diff = (di - dj) if directed else (di - dj).abs()
    if di.shape[-1] == 0:
        return torch.zeros(di.shape[:-1], dtype=torch.long), torch.full(di.shape[:-1], UNREACHABLE)
    lower = torch.where(both, diff, 0).amax(-1).clamp(min=0)
    upper = torch.where(both, di + dj, UNREACHABLE).amin(-1).clamp(max=UNREACHABLE)
    return lower, upper


def random_walk_encoding(edge_index: torch.Tensor, num_nodes: int, walk_length: int,
                         causal: bool = False, seq_len: Optional[int] = None) -> torch.Tensor:
    """Random-walk positional encoding (RWPE, as GraphGPS): ``FloatTensor[N, walk_length]`` of return probabilities.

    Column k-1 holds ``(P^k)[v, v]`` for ``k = 1..walk_length`` with ``P = D^-1 A`` the transition
    matrix of the *undirected* view of ``edge_index`` (isolated nodes: all zeros).

    **Causal** (``causal=True``, needs ``seq_len``): nodes are ``b * seq_len + t`` and node t of a
    sample gets the return probabilities of the walk on its *prefix graph*: the undirected view of
    the edges between positions ``<= t`` of its own sample, degrees counted in that prefix. Row t
    therefore reads nothing after t (the graph package builds those edges from positions ``<= t``
    only), and it equals the bidirectional encoding of the graph cut after t, at node t. All
    prefixes of a sample are walked at once as dense rows, in blocks of rows against the corner of
    the adjacency they can reach: ``O(walk_length * T^3)`` multiply-adds per sample (about 0.4
    of ``walk_length * T^3`` at T = 256), meant for model contexts (T <= ~1024), not whole books.
    Bidirectional: ``walk_length`` sparse-dense products per block of 1024 columns,
    O(walk_length * E * N / 1024) multiply-adds in total; meant for analysis-sized graphs.

    Example:
        >>> import torch
        >>> pair = torch.tensor([[0], [1]])
        >>> random_walk_encoding(pair, 2, 3).tolist()
        [[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]]
        >>> path = torch.tensor([[0, 1], [1, 2]])  # 0 - 1 - 2: node 1 sees only 0 - 1, node 2 the whole path
        >>> random_walk_encoding(path, 3, 2, causal=True, seq_len=3).tolist()
        [[0.0, 0.0], [0.0, 1.0], [0.0, 0.5]]
    """
    _check_edge_index(edge_index)
    if not isinstance(num_nodes, int) or num_nodes < 0:
        raise ValueError(f"num_nodes={num_nodes!r} is invalid; accepted: an int >= 0")
    if not isinstance(walk_length, int) or walk_length < 1:
        raise ValueError(f"walk_length={walk_length!r} is invalid; accepted: an int >= 1")
    if causal:
        if not isinstance(seq_len, int) or seq_len < 1 or num_nodes % seq_len:
            raise ValueError(f"causal random_walk_encoding needs seq_len, an int >= 1 dividing num_nodes={num_nodes} "
                             f"(nodes b * seq_len + t), got seq_len={seq_len!r}")
        return _prefix_random_walk(edge_index, num_nodes // seq_len, seq_len, walk_length)
    device = edge_index.device
    ei = edge_index[:, (edge_index[0] != edge_index[1]) & (edge_index.max(0).values < num_nodes)] \
        if edge_index.numel() else edge_index
    ei = torch.unique(torch.cat([ei, ei.flip(0)], dim=1), dim=1)
    degree = torch.bincount(ei[0], minlength=num_nodes).float()
    weight = 1.0 / degree[ei[0]]
    transition = torch.sparse_coo_tensor(ei, weight, (num_nodes, num_nodes), check_invariants=False).coalesce()
    out = torch.zeros(num_nodes, walk_length, device=device)
    block = 1024
    for start in range(0, num_nodes, block):
        cols = torch.arange(start, min(start + block, num_nodes), device=device)
        walk = torch.zeros(num_nodes, cols.numel(), device=device)
        walk[cols, torch.arange(cols.numel(), device=device)] = 1.0
        for k in range(walk_length):
            walk = transition @ walk  # column block of P^(k+1)
            out[cols, k] = walk[cols, torch.arange(cols.numel(), device=device)]
    return out


@torch.no_grad()
def _prefix_random_walk(edge_index: torch.Tensor, batch_size: int, seq_len: int, walk_length: int,
                        row_block: int = 32) -> torch.Tensor:
    """Causal RWPE, ``[B * T, walk_length]``: row (b, t) walks the prefix graph of sample b cut after t.

    Dense per sample: ``A [T, T]`` the symmetric adjacency, ``deg_t(u) = sum_{v <= t} A[u, v]`` the
    degree of u in prefix t (a cumulative sum), and ``X[t]`` the walk distribution started at t; one
    step is ``X[t, v] <- sum_u X[t, u] A[u, v] / deg_t(u)`` for ``v <= t``, all t at once by batched
    matmuls. The walks from rows ``t < r1`` never leave positions ``< r1``, so rows go in blocks of
    ``row_block`` against the ``[r1, r1]`` corner of A: ~0.4 of the full ``T^3`` products at T = 256.
    Samples are walked in chunks that keep ``X`` near 64 MiB.
    """
    device, T = edge_index.device, seq_len
    edges = _token_edges(edge_index, T, batch_size * T, causal=False)  # [2, E'] within samples, no self-loops
    out = torch.zeros(batch_size, T, walk_length, device=device)
    prefix = torch.ones(T, T, dtype=torch.bool, device=device).tril()  # [t, v]: v <= t
    eye = torch.eye(T, device=device)
    sample = edges[0] // T
    chunk = max(1, (1 << 24) // (T * T))
    for first in range(0, batch_size, chunk):
        last = min(first + chunk, batch_size)
        keep = (sample >= first) & (sample < last)
        b, u, v = sample[keep] - first, edges[0, keep] % T, edges[1, keep] % T
        adjacency = torch.zeros(last - first, T, T, device=device)  # [b, u, v]
        adjacency[b, u, v] = 1.0
        adjacency[b, v, u] = 1.0
        degree = adjacency.cumsum(-1).transpose(1, 2)  # [b, t, u]: degree of u among positions <= t
        for r0 in range(0, T, row_block):
            r1 = min(r0 + row_block, T)
            corner, mask = adjacency[:, :r1, :r1], prefix[r0:r1, :r1]  # rows t in [r0, r1) reach only v < r1
            rows = degree[:, r0:r1, :r1]
            inverse = torch.where(mask & (rows > 0), 1.0 / rows.clamp(min=1.0), 0.0)  # [b, t, u]
            walk = eye[r0:r1, :r1].expand(last - first, r1 - r0, r1)  # [b, t, v]
            for k in range(walk_length):
                walk = torch.bmm(walk * inverse, corner) * mask  # step k + 1 of the walks from every t
                out[first:last, r0:r1, k] = torch.diagonal(walk, offset=r0, dim1=1, dim2=2)
    return out.reshape(batch_size * T, walk_length)
