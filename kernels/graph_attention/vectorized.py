"""Gather-based graph attention in PyTorch: the CPU path, ``O(T·Kc)`` memory per chunk.

Each query's attended keys come from ``GraphLayout.neighbors`` (``[B, T, Kc]``, self
included, ``-1`` padded to the widest list); K/V rows are gathered, the softmax runs over the
``Kc`` scores in float32. The forward goes slot by slot (a padded slot adds an exact zero) with
dot products added left to right and chunks cut from the shapes alone, so a row's output is a
function of its own keys, bit for bit: a later token with more neighbours (a wider ``Kc``) never
moves an earlier output. The backward takes a chunk of queries with all its slots at once
(``[B, chunk, Kc, H, d]``, einsums) and recomputes the probabilities from the saved
log-sum-exp instead of keeping them (autograd would otherwise store every gathered chunk). dk and dv are scattered with
``index_add_``, which is deterministic on CPU. Short sequences (``B*H*T*T <= DENSE_ELEMENTS``)
instead run one ``scaled_dot_product_attention`` with the graph as a dense mask (-inf off the
edges; ALiBi as the mask's bias): the same numbers from a fused kernel instead of many tiny ops.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .layout import GraphLayout
from .reference import score_bias

GATHER_ELEMENTS = 1 << 22  # gathered K (or V) elements per chunk and key slot (16 MiB in float32)


def _chunks(batch: int, seq_len: int, heads: int, head_dim: int):
    """Query row ranges; the cut depends on the shapes only, never on the neighbour lists' width."""
    step = max(1, GATHER_ELEMENTS // max(1, batch * heads * head_dim))
    for start in range(0, seq_len, step):
        yield start, min(seq_len, start + step)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``sum_d a[..., d] * b[..., d]`` added left to right, one IEEE rounding per step (a row's own bits)."""
    products = a * b  # the same products as one multiply per step, in one pass
    if products.shape[-1] == 1:
        return products[..., 0]
    acc = products[..., 0] + products[..., 1]
    for c in range(2, products.shape[-1]):
        acc += products[..., c]  # in place: no new [..] tensor per step
    return acc


class _Slots:
    """The key slots of one chunk of queries: slot n of query (b, i) is ``layout.neighbors[b, i, n]``.

    Every per-query reduction below runs slot by slot (a padded slot adds an exact zero) and every
    dot product over the head dim runs left to right, so the numbers of a row never depend on the
    width of other rows' lists, on the chunking or on the batch (no matmul whose blocking follows
    the padded width).
    """

    def __init__(self, layout, q32, coords, slopes, start, stop, scale):
        batch, seq_len = layout.neighbors.shape[:2]
        nbrs = layout.neighbors[:, start:stop].long()  # [B, t, Kc]
        self.valid = nbrs >= 0
        self.flat = nbrs.clamp_min(0) + torch.arange(batch, device=nbrs.device)[:, None, None] * seq_len
        self.q = q32[:, start:stop]  # [B, t, H, d]
        self.coords_q = None if slopes is None else coords[:, start:stop]  # [B, t, L]
        self.coords_flat = None if slopes is None else coords.reshape(batch * seq_len, -1)
        self.slopes, self.scale = slopes, scale

    def __len__(self) -> int:
        return self.flat.shape[2]

    def score(self, n: int, k_flat: torch.Tensor):
        """Keys ``[B, t, H, d]`` of slot n and their scores ``[B, t, H]`` (-inf where the slot is padding)."""
        index = self.flat[:, :, n]  # [B, t]
        keys = k_flat[index]
        scores = _dot(self.q, keys) * self.scale
        if self.slopes is not None:
            scores = scores - self._distance(index)[..., None] * self.slopes
        return keys, scores.masked_fill(~self.valid[:, :, n, None], float("-inf"))

    def score_all(self, k_flat: torch.Tensor):
        """Keys ``[B, t, Kc, H, d]`` of every slot and scores ``[B, t, Kc, H]`` by one einsum (the backward's:
        :meth:`score`'s numbers to float32 rounding, several times faster than the ordered dot products)."""
        keys = k_flat[self.flat]
        scores = torch.einsum("bthd,btnhd->btnh", self.q, keys) * self.scale
        if self.slopes is not None:
            scores = scores - self._distance(self.flat)[..., None] * self.slopes
        return keys, scores.masked_fill(~self.valid[..., None], float("-inf"))

    def _distance(self, index: torch.Tensor) -> torch.Tensor:
        """ALiBi distance ``max_l |coords_i,l - coords_j,l|`` of the keys ``index [B, t, ...]`` (exact)."""
        coords_q = self.coords_q.reshape(*self.coords_q.shape[:2], *([1] * (index.dim() - 2)), -1)
        return (coords_q - self.coords_flat[index]).abs().amax(-1)


class _GatherAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, layout, scale, slopes, coords):
        batch, seq_len, heads, head_dim = q.shape
        q32 = q.float()
        k_flat = k.float().reshape(batch * seq_len, heads, head_dim)
        v_flat = v.float().reshape(batch * seq_len, heads, head_dim)
        out = torch.empty_like(q32)
        lse = torch.empty(batch, seq_len, heads, dtype=torch.float32, device=q.device)
        for start, stop in _chunks(batch, seq_len, heads, head_dim):
            slots = _Slots(layout, q32, coords, slopes, start, stop, scale)
            scores = [slots.score(n, k_flat)[1] for n in range(len(slots))]  # Kc x [B, t, H]
            top = scores[0]  # slot 0 is a real key of every row (self is always attended)
            for s in scores[1:]:
                top = torch.maximum(top, s)
            total = torch.zeros_like(top)
            acc = torch.zeros_like(slots.q)  # [B, t, H, d]
            for n, s in enumerate(scores):
                weight = torch.exp(s - top)  # exactly 0 on padding
                total = total + weight
                acc = acc + weight[..., None] * v_flat[slots.flat[:, :, n]]
            out[:, start:stop] = acc / total[..., None]
            lse[:, start:stop] = top + torch.log(total)
        ctx.save_for_backward(q, k, v, out, lse, slopes, coords)
        ctx.layout, ctx.scale = layout, scale
        return out.to(q.dtype), lse

    @staticmethod
    def backward(ctx, grad_out, grad_lse):
        q, k, v, out, lse, slopes, coords = ctx.saved_tensors
        layout, scale = ctx.layout, ctx.scale
        batch, seq_len, heads, head_dim = q.shape
        q32, do32 = q.float(), grad_out.float()
        k_flat = k.float().reshape(batch * seq_len, heads, head_dim)
        v_flat = v.float().reshape(batch * seq_len, heads, head_dim)
        delta = (do32 * out).sum(-1)  # [B, T, H]
        if grad_lse is not None:  # d lse_i / d s_ij = p_ij: the lse's gradient enters as -delta
            delta = delta - grad_lse.float()
        dq = torch.empty_like(q32)
        dk_flat, dv_flat = torch.zeros_like(k_flat), torch.zeros_like(v_flat)
        width = max(1, layout.width)  # all slots of a chunk at once: fewer, larger ops than the forward's
        for start, stop in _chunks(batch, seq_len, heads, head_dim * width):
            slots = _Slots(layout, q32, coords, slopes, start, stop, scale)
            keys, scores = slots.score_all(k_flat)  # [B, t, Kc, H, d], [B, t, Kc, H]
            probs = torch.exp(scores - lse[:, start:stop, None])  # [B, t, Kc, H]
            values = v_flat[slots.flat]
            do_chunk = do32[:, start:stop]
            dp = torch.einsum("bthd,btnhd->btnh", do_chunk, values)
            ds = probs * (dp - delta[:, start:stop, None])
            dq[:, start:stop] = torch.einsum("btnh,btnhd->bthd", ds, keys) * scale
            flat_edges = slots.flat.reshape(-1)
            dk_flat.index_add_(0, flat_edges, (ds[..., None] * slots.q[:, :, None] * scale)
                               .reshape(-1, heads, head_dim))
            dv_flat.index_add_(0, flat_edges, (probs[..., None] * do_chunk[:, :, None])
                               .reshape(-1, heads, head_dim))
        dk = dk_flat.reshape(k.shape).to(k.dtype)
        dv = dv_flat.reshape(v.shape).to(v.dtype)
        return dq.to(q.dtype), dk, dv, None, None, None, None


# Sequences with B*H*T*T at most this run one dense masked attention. CPU fwd+bwd, 1 thread, H=4, d=32,
# ~10 neighbours per query, dense vs gather ms CPU: 3.1M 18.5 vs 117; 12.6M 64 vs 202; 16.8M 81 vs 127;
# 33.6M 156 vs 118; 67M 335 vs 111; the hybrid's training step at B=12, T=256 470 ms with the old 2M
# threshold, 313 ms with this one (experiments/bench/bench_cpu_components.py, results/cpu_components.json).
DENSE_ELEMENTS = 1 << 24


def dense_mask(layout: GraphLayout, alibi_slopes=None, alibi_coords=None) -> torch.Tensor:
    """The graph as an attention mask: bool ``[B, 1, T, T]`` (True = edge, self included), or with
    ALiBi the float bias of :func:`~.reference.score_bias` (``[B, H, T, T]``, -inf off the edges).

    Example:
        >>> layout = GraphLayout.build(torch.tensor([[[-1], [0], [0]]]))
        >>> dense_mask(layout)[0, 0].int().tolist()
        [[1, 0, 0], [1, 1, 0], [1, 0, 1]]
    """
    nbrs = layout.neighbors.long()  # [B, T, Kc], self included, -1 padded
    batch, seq_len = nbrs.shape[:2]
    edge = torch.zeros(batch, seq_len, seq_len + 1, dtype=torch.bool, device=nbrs.device)
    edge.scatter_(2, nbrs.masked_fill(nbrs < 0, seq_len), True)  # padding lands in the spare column
    edge = edge[:, :, :seq_len]
    return edge[:, None] if alibi_slopes is None else score_bias(edge, alibi_slopes, alibi_coords)


def _dense_attention(q, k, v, layout, scale, slopes, coords, return_lse: bool):
    """Short sequences: softmax over the graph's edges as one masked ``scaled_dot_product_attention``.

    Off-graph scores are -inf, so the softmax runs over exactly the edges (self keeps every row
    finite): the gather path's numbers to float32 rounding, from a fused CPU attention kernel
    and its backward instead of per-edge gathers and scatters. The log-sum-exp, when asked for,
    comes from the same bias over the explicit score matrix.
    """
    mask = dense_mask(layout, slopes, coords)
    q32, k32, v32 = (t.float().transpose(1, 2) for t in (q, k, v))  # [B, H, T, d]
    out = F.scaled_dot_product_attention(q32, k32, v32, attn_mask=mask, scale=scale)
    out = out.transpose(1, 2).to(q.dtype)  # [B, T, H, d]
    if not return_lse:
        return out
    scores = torch.einsum("bhid,bhjd->bhij", q32, k32) * scale  # [B, H, T, T]
    scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    return out, torch.logsumexp(scores, dim=-1).transpose(1, 2)  # [B, T, H]


def graph_attention_vectorized(q, k, v, layout: GraphLayout, scale: float, alibi_slopes=None,
                               alibi_coords=None, return_lse: bool = False):
    """Graph attention by gathering each query's keys; arguments already validated.

    Returns ``[B, T, H, d]`` in ``q.dtype`` (and with ``return_lse`` the log-sum-exp ``[B, T, H]``
    float32); differentiable in q, k, v through both (float32 inside).
    """
    slopes = None if alibi_slopes is None else alibi_slopes.float()
    coords = None if alibi_coords is None else alibi_coords.float()
    batch, seq_len, heads = q.shape[:3]
    if batch * heads * seq_len * seq_len <= DENSE_ELEMENTS:
        return _dense_attention(q, k, v, layout, scale, slopes, coords, return_lse)
    out, lse = _GatherAttention.apply(q, k, v, layout, scale, slopes, coords)
    return (out, lse) if return_lse else out
