"""Gather-based graph attention in PyTorch: the CPU path, ``O(T·Kc)`` memory per chunk.

Each query's attended keys come from ``GraphLayout.neighbors`` (``[B, T, Kc]``, self
included); K/V rows are gathered, the softmax runs over the ``Kc`` scores in float32.
Queries are processed in chunks so the gathered ``[B, chunk, Kc, H, d]`` tensors stay small,
and the backward recomputes them from the saved log-sum-exp instead of keeping them
(autograd would otherwise store every gathered chunk). dk and dv are scattered with
``index_add_``, which is deterministic on CPU. Short sequences (``B*H*T*T <= DENSE_ELEMENTS``)
instead run one ``scaled_dot_product_attention`` with the graph as a dense mask (-inf off the
edges; ALiBi as the mask's bias): the same numbers from a fused kernel instead of many tiny ops.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .layout import GraphLayout

GATHER_ELEMENTS = 1 << 22  # gathered elements per chunk (one K or V chunk: 16 MiB in float32)


def _chunks(layout: GraphLayout, heads: int, head_dim: int):
    batch, seq_len, width = layout.neighbors.shape
    step = max(1, GATHER_ELEMENTS // max(1, batch * width * heads * head_dim))
    for start in range(0, seq_len, step):
        yield start, min(seq_len, start + step)


def _scores(q32, k_flat, coords, slopes, layout, start, stop, scale):
    """Gathered keys ``[B, t, Kc, H, d]``, scores ``[B, t, Kc, H]`` (invalid = -inf), flat index."""
    batch, seq_len = layout.neighbors.shape[:2]
    nbrs = layout.neighbors[:, start:stop].long()  # [B, t, Kc]
    valid = nbrs >= 0
    flat = nbrs.clamp_min(0) + torch.arange(batch, device=nbrs.device)[:, None, None] * seq_len
    keys = k_flat[flat]  # [B, t, Kc, H, d]
    scores = torch.einsum("bthd,btnhd->btnh", q32[:, start:stop], keys) * scale
    if slopes is not None:
        coords_flat = coords.reshape(batch * seq_len, -1)
        dist = (coords[:, start:stop, None, :] - coords_flat[flat]).abs().amax(-1)  # [B, t, Kc]
        scores = scores - dist[..., None] * slopes
    scores = scores.masked_fill(~valid[..., None], float("-inf"))
    return keys, scores, flat


class _GatherAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, layout, scale, slopes, coords):
        batch, seq_len, heads, head_dim = q.shape
        q32, k32, v32 = q.float(), k.float(), v.float()
        k_flat = k32.reshape(batch * seq_len, heads, head_dim)
        v_flat = v32.reshape(batch * seq_len, heads, head_dim)
        out = torch.empty_like(q32)
        lse = torch.empty(batch, seq_len, heads, dtype=torch.float32, device=q.device)
        for start, stop in _chunks(layout, heads, head_dim):
            _, scores, flat = _scores(q32, k_flat, coords, slopes, layout, start, stop, scale)
            chunk_lse = torch.logsumexp(scores, dim=2)  # [B, t, H]; self keeps it finite
            probs = torch.exp(scores - chunk_lse[:, :, None])
            out[:, start:stop] = torch.einsum("btnh,btnhd->bthd", probs, v_flat[flat])
            lse[:, start:stop] = chunk_lse
        ctx.save_for_backward(q, k, v, out, lse, slopes, coords)
        ctx.layout, ctx.scale = layout, scale
        return out.to(q.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse, slopes, coords = ctx.saved_tensors
        layout, scale = ctx.layout, ctx.scale
        batch, seq_len, heads, head_dim = q.shape
        q32, do32 = q.float(), grad_out.float()
        k_flat = k.float().reshape(batch * seq_len, heads, head_dim)
        v_flat = v.float().reshape(batch * seq_len, heads, head_dim)
        delta = (do32 * out).sum(-1)  # [B, T, H]
        dq = torch.empty_like(q32)
        dk_flat, dv_flat = torch.zeros_like(k_flat), torch.zeros_like(v_flat)
        for start, stop in _chunks(layout, heads, head_dim):
            keys, scores, flat = _scores(q32, k_flat, coords, slopes, layout, start, stop, scale)
            probs = torch.exp(scores - lse[:, start:stop, None])  # [B, t, Kc, H]
            values = v_flat[flat]
            do_chunk = do32[:, start:stop]
            dp = torch.einsum("bthd,btnhd->btnh", do_chunk, values)
            ds = probs * (dp - delta[:, start:stop, None])
            dq[:, start:stop] = torch.einsum("btnh,btnhd->bthd", ds, keys) * scale
            flat_edges = flat.reshape(-1)
            dk_flat.index_add_(0, flat_edges, (ds[..., None] * q32[:, start:stop, None] * scale)
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
    ALiBi a float ``[B, H, T, T]`` bias (``-slope_h * max_l |c_i,l - c_j,l|`` on edges, -inf elsewhere).

    Example:
        >>> layout = GraphLayout.build(torch.tensor([[[-1], [0], [0]]]))
        >>> dense_mask(layout)[0, 0].int().tolist()
        [[1, 0, 0], [1, 1, 0], [1, 0, 1]]
    """
    nbrs = layout.neighbors.long()  # [B, T, Kc], self included, -1 padded
    batch, seq_len = nbrs.shape[:2]
    edge = torch.zeros(batch, seq_len, seq_len + 1, dtype=torch.bool, device=nbrs.device)
    edge.scatter_(2, nbrs.masked_fill(nbrs < 0, seq_len), True)  # padding lands in the spare column
    edge = edge[:, :, :seq_len].unsqueeze(1)  # [B, 1, T, T]
    if alibi_slopes is None:
        return edge
    dist = (alibi_coords[:, :, None, :] - alibi_coords[:, None, :, :]).abs().amax(-1)  # [B, T, T]
    bias = dist[:, None] * -alibi_slopes[None, :, None, None]  # [B, H, T, T]
    return bias.masked_fill_(~edge, float("-inf"))


def _dense_attention(q, k, v, layout, scale, slopes, coords):
    """Short sequences: softmax over the graph's edges as one masked ``scaled_dot_product_attention``.

    Off-graph scores are -inf, so the softmax runs over exactly the edges (self keeps every row
    finite): the gather path's numbers to float32 rounding, from a fused CPU attention kernel
    and its backward instead of per-edge gathers and scatters.
    """
    mask = dense_mask(layout, slopes, coords)
    q32, k32, v32 = (t.float().transpose(1, 2) for t in (q, k, v))  # [B, H, T, d]
    out = F.scaled_dot_product_attention(q32, k32, v32, attn_mask=mask, scale=scale)
    return out.transpose(1, 2).to(q.dtype)  # [B, T, H, d]


def graph_attention_vectorized(q, k, v, layout: GraphLayout, scale: float, alibi_slopes=None,
                               alibi_coords=None):
    """Graph attention by gathering each query's keys; arguments already validated.

    Returns ``[B, T, H, d]`` in ``q.dtype``; differentiable in q, k, v (float32 inside).
    """
    slopes = None if alibi_slopes is None else alibi_slopes.float()
    coords = None if alibi_coords is None else alibi_coords.float()
    batch, seq_len, heads = q.shape[:3]
    if batch * heads * seq_len * seq_len <= DENSE_ELEMENTS:
        return _dense_attention(q, k, v, layout, scale, slopes, coords)
    return _GatherAttention.apply(q, k, v, layout, scale, slopes, coords)
