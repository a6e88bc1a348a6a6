"""Each layer of the model in "linear mode": frozen quantities from the original pass, linear in the components.

Components are stacked along a leading axis: ``xc [C, B, T, d]`` with ``xc.sum(0) == x`` (the
real residual stream). Given the real input ``x`` of a layer, every function here computes the
quantities that DePass freezes from the real pass and maps the components linearly, so the
output components sum to the layer's real output:

- RMSNorm: the per-token scale ``1 / sqrt(mean(x^2) + eps)`` is frozen; components are scaled by it.
- Attention (graph and dense): the attention probabilities ``P [B, H, T, T]`` are frozen; the
  values are linear in the components. A ``router`` decides which component an attended
  contribution lands in (identity for token/block partitions, edge type for ``edge_type``).
- Elementwise activations applied to a sum (GELU in the MLP, SiLU after Mamba's conv): the
  DePass convention freezes the ratio ``act(a) / a`` of the real pre-activation ``a``
  (``act'(0)`` where ``a == 0``: 0.5 for both); each component is multiplied by the same
  ratio, so the components still sum to ``act(a)`` exactly.
- Mamba: the conv is linear; the SSM's Δ, B, C (functions of the real conv output and the
  structural encoding) and the gate ``silu(z)`` are frozen, so the scan is linear in its input.
- Biases and constants (linear biases, conv bias) go to the component ``bias_index``.

Example:
    >>> import torch.nn as nn
    >>> norm = nn.RMSNorm(4, eps=1e-5); x = torch.randn(1, 3, 4); xc = torch.stack([x / 2, x / 2])
    >>> torch.allclose(norm_linear(norm, x, xc).sum(0), norm(x), atol=1e-6)
    True
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..kernels import selective_scan
from ..kernels.graph_attention.reference import alibi_distance, dense_mask
from ..model.baselines import TransformerBlock
from ..model.graph_attention_layer import AttentionBlock, GraphAttentionBlock, LayerContext
from ..model.mamba import TopologicalMamba
from ..model.positional import apply_rotary

#: ``router(probs [B, H, T, T], values [C, B, T, H, hd]) -> [C, B, T, H, hd]``
Router = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_SCAN_CHUNK_ELEMENTS = 1 << 24  # components per selective_scan call are chunked to bound memory


def identity_router(probs: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Every component stays itself: ``out[c, b, i] = sum_j P[b, :, i, j] v[c, b, j]``."""
    return torch.einsum("bhij,cbjhd->cbihd", probs, values)


def rms_scale(norm: nn.RMSNorm, x: torch.Tensor) -> torch.Tensor:
    """Frozen per-token RMSNorm scale ``[B, T, 1]`` of the real input ``x [B, T, d]``."""
    eps = norm.eps if norm.eps is not None else torch.finfo(x.dtype).eps
    return torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def norm_linear(norm: nn.RMSNorm, x: torch.Tensor, xc: torch.Tensor) -> torch.Tensor:
    """RMSNorm in linear mode: ``xc [C, B, T, d]`` scaled by the frozen scale of ``x`` and the weight."""
    out = xc * rms_scale(norm, x)
    return out * norm.weight if norm.weight is not None else out


def activation_ratio(pre: torch.Tensor, act: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``act(pre) / pre`` with the limit 0.5 where ``pre == 0`` (GELU and SiLU both have slope 1/2 at 0)."""
    safe = torch.where(pre == 0, torch.ones_like(pre), pre)
    return torch.where(pre == 0, torch.full_like(pre, 0.5), act(safe) / safe)


def attention_probs(layer: AttentionBlock, x: torch.Tensor, ctx: LayerContext) -> torch.Tensor:
    """Frozen attention probabilities ``[B, H, T, T]`` (float32) of the real input ``x [B, T, d]``.

    Graph attention: softmax over ``{i} ∪ neighbours(i)`` (with Graph-ALiBi when the layer uses
    it), as ``sosm.kernels.graph_attention``; dense attention: causal softmax.
    """
    B, T, d = x.shape
    H, hd = layer.n_heads, layer.head_dim
    q, k, _ = layer.qkv(layer.norm_attn(x)).view(B, T, 3, H, hd).unbind(2)  # [B, T, H, hd]
    if ctx.angles is not None:
        q, k = apply_rotary(q, ctx.angles), apply_rotary(k, ctx.angles)
    scores = torch.einsum("bihd,bjhd->bhij", q.float(), k.float()) / math.sqrt(hd)  # [B, H, T, T]
    if isinstance(layer, GraphAttentionBlock):
        mask = dense_mask(ctx.neighbors, T)  # [B, T, T]
        if layer.use_alibi:
            dist = alibi_distance(ctx.alibi_coords[:, :, None, :], ctx.alibi_coords[:, None, :, :])
            scores = scores - layer.alibi_slopes.float()[None, :, None, None] * dist[:, None]
    elif isinstance(layer, TransformerBlock):
        mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()[None]
    else:
        raise TypeError(f"attention_probs: unsupported attention layer {type(layer).__name__}")
    return torch.softmax(scores.masked_fill(~mask[:, None], float("-inf")), dim=-1)


def attention_layer_linear(layer: AttentionBlock, x: torch.Tensor, xc: torch.Tensor, ctx: LayerContext,
                           bias_index: int, router: Optional[Router] = None, probs: Optional[torch.Tensor] = None):
    """One attention + MLP layer in linear mode.

    Args:
        layer: ``GraphAttentionBlock`` or ``TransformerBlock``.
        x: ``[B, T, d]`` real input; xc: ``[C, B, T, d]`` its components.
        ctx: the recorded layer context.
        bias_index: component receiving the MLP biases.
        router: how attended contributions are assigned to components (default :func:`identity_router`).
        probs: precomputed frozen probabilities (default: computed here).

    Returns:
        ``(x_out [B, T, d] real output, xc_out [C, B, T, d], probs [B, H, T, T])``.
    """
    C, B, T, d = xc.shape
    H, hd = layer.n_heads, layer.head_dim
    probs = attention_probs(layer, x, ctx) if probs is None else probs
    w_v = layer.qkv.weight[2 * d: 3 * d]  # rows of V in the [3, H, hd] layout
    values = F.linear(norm_linear(layer.norm_attn, x, xc), w_v).view(C, B, T, H, hd)
    attended = (router or identity_router)(probs, values).reshape(C, B, T, d)
    xc_mid = xc + F.linear(attended, layer.out_proj.weight)
    x_mid = x + layer.out_proj(torch.einsum("bhij,bjhd->bihd", probs, values.sum(0)).reshape(B, T, d))
    mlp = layer.mlp
    if mlp is None:  # mlp_ratio=0: attention only
        return layer(x, ctx), xc_mid, probs
    pre = mlp.fc_in(layer.norm_mlp(x_mid))  # [B, T, hidden] real pre-activation
    hc = F.linear(norm_linear(layer.norm_mlp, x_mid, xc_mid), mlp.fc_in.weight)  # [C, B, T, hidden]
    if mlp.fc_in.bias is not None:
        hc[bias_index] += mlp.fc_in.bias
    hc = hc * activation_ratio(pre, F.gelu)
    out = F.linear(hc, mlp.fc_out.weight)
    if mlp.fc_out.bias is not None:
        out[bias_index] += mlp.fc_out.bias
    return layer(x, ctx), xc_mid + out, probs


def mamba_layer_linear(layer: TopologicalMamba, x: torch.Tensor, xc: torch.Tensor, ctx: LayerContext,
                       bias_index: int):
    """One TopologicalMamba layer in linear mode (Δ, B, C, silu(z) and the post-conv SiLU ratio frozen).

    Args:
        x: ``[B, T, d]`` real input; xc: ``[C, B, T, d]`` components; bias_index: component of the conv bias.

    Returns:
        ``(x_out [B, T, d], xc_out [C, B, T, d])``.
    """
    C, B, T, d = xc.shape
    E = layer.inner
    xs, z = layer.in_proj(layer.norm(x)).chunk(2, dim=-1)  # [B, T, E] each
    pre = layer.conv(xs.transpose(1, 2))[..., :T]  # [B, E, T] real conv output
    u = F.silu(pre)
    dt, Bm, Cm = layer.x_proj(u.transpose(1, 2)).split([layer.dt_rank, layer.d_state, layer.d_state], dim=-1)
    delta = F.linear(dt, layer.dt_proj.weight)  # [B, T, E]
    if layer.struct_proj is not None:
        delta = delta + layer.struct_proj(ctx.structure)
    xs_c = F.linear(norm_linear(layer.norm, x, xc), layer.in_proj.weight[:E])  # [C, B, T, E]
    conv_c = F.conv1d(xs_c.reshape(C * B, T, E).transpose(1, 2), layer.conv.weight, None,
                      padding=layer.d_conv - 1, groups=E)[..., :T].reshape(C, B, E, T)
    if layer.conv.bias is not None:
        conv_c[bias_index] += layer.conv.bias[:, None]
    u_c = conv_c * activation_ratio(pre, F.silu)  # [C, B, E, T]
    frozen = (delta.transpose(1, 2), Bm.transpose(1, 2), Cm.transpose(1, 2), z.transpose(1, 2))
    per_call = max(1, _SCAN_CHUNK_ELEMENTS // max(1, B * E * T * layer.d_state))
    outs = []
    for start in range(0, C, per_call):
        chunk = u_c[start: start + per_call]
        n = chunk.shape[0]
        rep = [t.expand(n, *t.shape).reshape(n * B, *t.shape[1:]) for t in frozen]
        y = selective_scan(chunk.reshape(n * B, E, T), rep[0], -torch.exp(layer.A_log.float()), rep[1], rep[2],
                           D=layer.D.float(), z=rep[3], delta_bias=layer.dt_proj.bias.float(), delta_softplus=True)
        outs.append(y.reshape(n, B, E, T))
    y_c = torch.cat(outs).transpose(2, 3)  # [C, B, T, E]
    return layer(x, ctx), xc + F.linear(y_c, layer.out_proj.weight)


def layer_linear(layer: nn.Module, x: torch.Tensor, xc: torch.Tensor, ctx: LayerContext, bias_index: int,
                 router: Optional[Router] = None):
    """Dispatch on the layer type; returns ``(x_out, xc_out, probs or None)``."""
    if isinstance(layer, AttentionBlock):
        return attention_layer_linear(layer, x, xc, ctx, bias_index, router)
    if isinstance(layer, TopologicalMamba):
        return (*mamba_layer_linear(layer, x, xc, ctx, bias_index), None)
    raise TypeError(f"DePass has no linear mode for layer type {type(layer).__name__}; "
                    "supported: GraphAttentionBlock, TransformerBlock, TopologicalMamba")
