"""Pieces every mixer's DePass linear mode is built from (:meth:`Mixer.linear_mode`).

Components are stacked along a leading axis: ``xc [C, B, T, d]`` with ``xc.sum(0) == x`` (the
real residual stream). Each mixer freezes what its real pass computed and maps the components
linearly, so the output components sum to the real output:

- RMSNorm: the per-token scale ``1 / sqrt(mean(x^2) + eps)`` is frozen; components are scaled by it.
  LayerNorm and GroupNorm (RWKV, RetNet): the mean is linear (each component is centred), the
  ``1 / std`` is frozen.
- Elementwise activations applied to a sum (GELU in the MLP, SiLU after Mamba's conv): the
  ratio ``act(a) / a`` of the real pre-activation ``a`` is frozen (``act'(0) = 0.5`` where
  ``a == 0``, for both); each component is multiplied by the same ratio, so the components still
  sum to ``act(a)`` exactly.
- Attention: the probabilities are frozen; a ``router`` decides which component an attended
  contribution lands in (:func:`identity_router`: each stays itself).
- Biases and constants go to the component ``bias_index``.

Example:
    >>> import torch, torch.nn as nn
    >>> norm = nn.RMSNorm(4, eps=1e-5); x = torch.randn(1, 3, 4); xc = torch.stack([x / 2, x / 2])
    >>> torch.allclose(norm_linear(norm, x, xc).sum(0), norm(x), atol=1e-6)
    True
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

#: ``router(probs [B, H, T, T], values [C, B, T, H, hd]) -> [C, B, T, H, hd]``
Router = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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


def layer_norm_linear(norm: nn.LayerNorm, x: torch.Tensor, xc: torch.Tensor, bias_index: int) -> torch.Tensor:
    """LayerNorm in linear mode: each component of ``xc [C, B, T, d]`` centred (the mean is linear), scaled by the
    frozen ``1 / std`` of ``x`` and the weight; the bias goes to ``bias_index``."""
    rstd = torch.rsqrt(x.var(-1, unbiased=False, keepdim=True) + norm.eps)  # [B, T, 1]
    out = (xc - xc.mean(-1, keepdim=True)) * rstd
    if norm.weight is not None:
        out = out * norm.weight
    if norm.bias is not None:
        out[bias_index] += norm.bias
    return out


def group_norm_linear(norm: nn.GroupNorm, y: torch.Tensor, yc: torch.Tensor, bias_index: int) -> torch.Tensor:
    """GroupNorm over the channels of each token (``y [..., channels]`` real, ``yc [C, ..., channels]``) in linear
    mode: components centred per group, scaled by the frozen per-group ``1 / std`` of ``y``; bias to ``bias_index``."""
    groups = norm.num_groups
    grouped = y.unflatten(-1, (groups, -1))  # [..., G, channels / G]
    rstd = torch.rsqrt(grouped.var(-1, unbiased=False, keepdim=True) + norm.eps)
    parts = yc.unflatten(-1, (groups, -1))
    out = ((parts - parts.mean(-1, keepdim=True)) * rstd).flatten(-2)
    if norm.weight is not None:
        out = out * norm.weight
    if norm.bias is not None:
        out[bias_index] += norm.bias
    return out


def activation_ratio(pre: torch.Tensor, act: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``act(pre) / pre`` with the limit 0.5 where ``pre == 0`` (GELU and SiLU both have slope 1/2 at 0)."""
    safe = torch.where(pre == 0, torch.ones_like(pre), pre)
    return torch.where(pre == 0, torch.full_like(pre, 0.5), act(safe) / safe)


def mlp_linear(mlp, norm: nn.RMSNorm, x: torch.Tensor, xc: torch.Tensor, bias_index: int) -> torch.Tensor:
    """Components of ``mlp(norm(x))`` (GELU ratio frozen, biases to ``bias_index``): ``[C, B, T, d]``."""
    pre = mlp.fc_in(norm(x))  # [B, T, hidden] real pre-activation
    hc = F.linear(norm_linear(norm, x, xc), mlp.fc_in.weight)  # [C, B, T, hidden]
    if mlp.fc_in.bias is not None:
        hc[bias_index] += mlp.fc_in.bias
    out = F.linear(hc * activation_ratio(pre, F.gelu), mlp.fc_out.weight)
    if mlp.fc_out.bias is not None:
        out[bias_index] += mlp.fc_out.bias
    return out
