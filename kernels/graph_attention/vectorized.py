"""Gather-based graph attention in PyTorch: the CPU path, ``O(T·Kc)`` memory per chunk.

Each query's attended keys come from ``GraphLayout.neighbors`` (``[B, T, Kc]``, self
included); K/V rows are gathered, the softmax runs over the ``Kc`` scores in float32.
Queries are processed in chunks so the gathered ``[B, chunk, Kc, H, d]`` tensors stay small,
and the backward recomputes them from the saved log-sum-exp instead of keeping them
(autograd would otherwise store every gathered chunk). dk and dv are scattered with
``index_add_``, which is deterministic on CPU.
"""
from __future__ import annotations

import torch

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


def graph_attention_vectorized(q, k, v, layout: GraphLayout, scale: float, alibi_slopes=None,
                               alibi_coords=None):
    """Graph attention by gathering each query's keys; arguments already validated.

    Returns ``[B, T, H, d]`` in ``q.dtype``; differentiable in q, k, v (float32 inside).
    """
    slopes = None if alibi_slopes is None else alibi_slopes.float()
    coords = None if alibi_coords is None else alibi_coords.float()
    return _GatherAttention.apply(q, k, v, layout, scale, slopes, coords)
