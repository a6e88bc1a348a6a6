"""Graph attention: one dispatching entry point over a precomputable ``GraphLayout``.

``graph_attention`` runs the Triton gather kernels on CUDA tensors and the vectorised
PyTorch gather path on CPU (warning once); :func:`graph_attention_ref` (dense, float32) is
the oracle beside them with the same signature. Paths can be forced with ``backend=``,
``sosm.kernels._backend.force_backend`` or ``SOSM_KERNEL_BACKEND``.
"""
from __future__ import annotations

import torch

from .._backend import resolve
from .layout import GraphLayout
from .reference import check_graph_attention_args, graph_attention_ref
from .vectorized import graph_attention_vectorized

__all__ = ["graph_attention", "graph_attention_ref", "GraphLayout"]


def graph_attention(q, k, v, neighbors, *, scale=None, alibi_slopes=None, alibi_coords=None,
                    layout=None, backend="auto", return_lse=False):
    """Attention of each query over itself and its graph neighbours (docs/CONTRACTS.md).

    Args:
        q, k, v: ``[B, T, H, d]``, float32, float16 or bfloat16 (one dtype).
        neighbors: ``[B, T, Kn]`` int32/int64 key positions of each query's incoming edges,
            ascending, ``-1`` padded, self excluded (query i always attends to itself). Any
            key position is allowed (causality is the graph's business). Duplicate entries
            and a self entry are merged (set semantics, like a dense mask).
        scale: score scale, default ``1/sqrt(d)``.
        alibi_slopes: ``[H]`` float, with ``alibi_coords`` ``[B, T, L]`` float: the score of
            (i, j) gets ``-slope[h] * max_l |coords[b,i,l] - coords[b,j,l]|``. No gradient.
        layout: ``GraphLayout.build(neighbors)``, built once per graph and shared by layers;
            built here when None (validating the indices costs one host-device sync).
        backend: ``"auto"`` (Triton on CUDA, vectorised on CPU), or force ``"triton"``,
            ``"vectorized"`` or ``"reference"``.
        return_lse: also return each query's log-sum-exp of its scores, ``[B, T, H]`` float32
            (natural log), e.g. to merge this softmax exactly with one over other keys.

    Returns:
        ``[B, T, H, d]`` in ``q.dtype`` (and the lse); differentiable in q, k, v through both.

    Raises:
        TypeError / ValueError naming the argument for wrong types, shapes, devices or
        out-of-range neighbour indices.

    Example:
        >>> q = k = v = torch.randn(1, 6, 2, 8)
        >>> nbrs = torch.tensor([[[-1, -1], [0, -1], [0, 1], [1, -1], [0, 3], [2, 4]]])
        >>> graph_attention(q, k, v, nbrs, backend="vectorized").shape
        torch.Size([1, 6, 2, 8])
    """
    scale = check_graph_attention_args(q, k, v, neighbors, scale, alibi_slopes, alibi_coords)
    path = resolve("graph_attention", q.device, backend)
    if path == "reference" or torch.compiler.is_exporting():  # export: the dense reference, no layout to build
        return graph_attention_ref(q, k, v, neighbors, scale=scale, alibi_slopes=alibi_slopes,
                                   alibi_coords=alibi_coords, return_lse=return_lse)
    if layout is None:
        layout = GraphLayout.build(neighbors)
    elif not isinstance(layout, GraphLayout):
        raise TypeError(f"layout must be a GraphLayout or None, got {type(layout).__name__}")
    else:
        layout.check_matches(neighbors)
    if path == "vectorized":
        return graph_attention_vectorized(q, k, v, layout, scale, alibi_slopes, alibi_coords, return_lse)
    from .triton_graph_attention import graph_attention_triton

    return graph_attention_triton(q, k, v, layout, scale, alibi_slopes, alibi_coords, return_lse)
