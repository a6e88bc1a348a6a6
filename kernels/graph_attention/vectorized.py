"""Gather-based graph attention in PyTorch: the CPU path, ``O(T·Kc)`` memory per chunk.

Each query's attended keys come from ``GraphLayout.neighbors`` (``[B, T, Kc]``, self
included); K/V rows are gathered, the softmax runs over the ``Kc`` scores in float32.
Queries are processed in chunks so the gathered ``[B, chunk, Kc, H, d]`` tensors stay small,
and the backward recomputes them from the saved log-sum-exp instead of keeping them
(autograd would otherwise store every gathered chunk). dk and dv are scattered with
``index_add_``, which is deterministic on CPU. Short sequences (``B*H*T*T <= DENSE_ELEMENTS``)
instead read the edge scores from a dense ``Q K^T`` and scatter the probabilities into a
dense ``P`` for ``P V``: the same numbers from a few large matmuls instead of many tiny ones.
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


DENSE_ELEMENTS = 1 << 21  # short sequences: B*H*T*T at most this -> dense products, then gather


def _dense_scores(q32, k32, coords, slopes, layout, scale):
    """Scores of the graph's edges ``[B, H, T, Kc]`` (invalid = -inf) read from ``Q K^T``, and their key index."""
    nbrs = layout.neighbors.long()  # [B, T, Kc]
    valid = nbrs >= 0
    index = nbrs.clamp_min(0)
    heads = q32.shape[2]
    full = torch.matmul(q32.transpose(1, 2), k32.permute(0, 2, 3, 1))  # [B, H, T, T]
    idx = index[:, None].expand(-1, heads, -1, -1)  # [B, H, T, Kc]
    scores = full.gather(3, idx) * scale
    if slopes is not None:
        batch, seq_len = nbrs.shape[:2]
        coords_flat = coords.reshape(batch * seq_len, -1)
        flat = index + torch.arange(batch, device=nbrs.device)[:, None, None] * seq_len
        dist = (coords[:, :, None, :] - coords_flat[flat]).abs().amax(-1)  # [B, T, Kc]
        scores = scores - dist[:, None] * slopes[None, :, None, None]
    return scores.masked_fill(~valid[:, None], float("-inf")), idx


def _scatter(values, idx, seq_len):
    """Edge values ``[B, H, T, Kc]`` into a dense ``[B, H, T, T]`` matrix (zero off the graph)."""
    return values.new_zeros(*values.shape[:3], seq_len).scatter_add_(3, idx, values)


class _DenseGraphAttention(torch.autograd.Function):
    """The same attention for short sequences: ``Q K^T`` and ``P V`` as dense batched matmuls.

    Only the graph's edges enter the softmax (scores gathered from ``Q K^T``; probabilities
    scattered back into an otherwise-zero matrix), so the numbers equal the gather path's to
    float32 rounding; the work is ``O(T^2)`` but runs as a few large matmuls.
    """

    @staticmethod
    def forward(ctx, q, k, v, layout, scale, slopes, coords):
        seq_len = q.shape[1]
        q32, k32, v32 = q.float(), k.float(), v.float()
        scores, idx = _dense_scores(q32, k32, coords, slopes, layout, scale)
        probs = torch.softmax(scores, dim=3)  # [B, H, T, Kc]; self keeps every row finite
        dense_p = _scatter(probs, idx, seq_len)
        out = torch.matmul(dense_p, v32.transpose(1, 2)).transpose(1, 2)  # [B, T, H, d]
        ctx.save_for_backward(q, k, v, out, probs, idx, dense_p)
        ctx.scale = scale
        return out.to(q.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, probs, idx, dense_p = ctx.saved_tensors
        seq_len, scale = q.shape[1], ctx.scale
        do = grad_out.float().transpose(1, 2)  # [B, H, T, d]
        q32, k32, v32 = (t.float().transpose(1, 2) for t in (q, k, v))
        delta = (do * out.transpose(1, 2)).sum(-1)  # [B, H, T]
        dp = torch.matmul(do, v32.transpose(2, 3)).gather(3, idx)  # [B, H, T, Kc]
        ds = _scatter(probs * (dp - delta[..., None]), idx, seq_len).mul_(scale)  # [B, H, T, T]
        dq = torch.matmul(ds, k32).transpose(1, 2)
        dk = torch.matmul(ds.transpose(2, 3), q32).transpose(1, 2)
        dv = torch.matmul(dense_p.transpose(2, 3), do).transpose(1, 2)
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None, None, None


def graph_attention_vectorized(q, k, v, layout: GraphLayout, scale: float, alibi_slopes=None,
                               alibi_coords=None):
    """Graph attention by gathering each query's keys; arguments already validated.

    Returns ``[B, T, H, d]`` in ``q.dtype``; differentiable in q, k, v (float32 inside).
    """
    slopes = None if alibi_slopes is None else alibi_slopes.float()
    coords = None if alibi_coords is None else alibi_coords.float()
    batch, seq_len, heads = q.shape[:3]
    if batch * heads * seq_len * seq_len <= DENSE_ELEMENTS:
        return _DenseGraphAttention.apply(q, k, v, layout, scale, slopes, coords)
    return _GatherAttention.apply(q, k, v, layout, scale, slopes, coords)
