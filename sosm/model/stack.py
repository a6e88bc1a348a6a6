"""The layer stack every model kind uses, and the factory that maps a layer code to its layer.

``SOSMConfig.layer_types`` gives one code per layer: ``A`` graph attention + MLP, ``M``
TopologicalMamba, ``T`` dense causal attention + MLP. The hybrid interleaves ``A`` and ``M``
(default pattern ``"AMMM"``); the baselines repeat one code (``T``, ``M`` or ``A``). Every layer
reads the same :class:`~sosm.model.context.LayerContext`: one graph, one layout, one set of
positions and one structural encoding per forward pass.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from .attention import GraphAttentionBlock, TransformerBlock
from .context import LayerContext
from .mamba import TopologicalMamba


class LayerStack(nn.Module):
    """A stack of layers followed by a final RMSNorm.

    Args:
        config: ``SOSMConfig``; ``config.layer_types`` picks the layers.
        struct_dim: width of the structural encoding given to Mamba layers (None: plain Mamba).

    Shapes: ``forward(x [B, T, d_model], ctx) -> ([B, T, d_model], hidden list or None)``.

    Example:
        >>> from sosm.model import SOSMConfig
        >>> stack = LayerStack(SOSMConfig(model="mamba", d_model=32, n_heads=2), None)
        >>> stack(torch.randn(1, 6, 32), LayerContext())[0].shape
        torch.Size([1, 6, 32])
    """

    def __init__(self, config, struct_dim: Optional[int]):
        super().__init__()
        self.layer_types = config.layer_types
        self.layers = nn.ModuleList(make_layer(code, config, struct_dim) for code in self.layer_types)
        self.norm = nn.RMSNorm(config.d_model, eps=1e-5)
        self.gradient_checkpointing = config.gradient_checkpointing

    def forward(self, x: torch.Tensor, ctx: LayerContext, return_hidden: bool = False):
        hidden = [x] if return_hidden else None
        for layer in self.layers:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(layer, x, ctx, use_reentrant=False)
            else:
                x = layer(x, ctx)  # [B, T, d_model]
            if return_hidden:
                hidden.append(x)
        return self.norm(x), hidden

    def step(self, x: torch.Tensor, ctx: LayerContext, caches: list) -> torch.Tensor:
        """One decoding step ``x [B, 1, d_model]``; ``caches`` holds one dict per layer (updated in place)."""
        for layer, cache in zip(self.layers, caches):
            x = layer.step(x, ctx, cache)
        return self.norm(x)


def make_layer(code: str, config, struct_dim: Optional[int]) -> nn.Module:
    """Layer for one code of ``SOSMConfig.layer_types``: ``A`` graph attention, ``M`` Mamba, ``T`` dense attention."""
    if code == "A":
        return GraphAttentionBlock(config)
    if code == "M":
        return TopologicalMamba(config, struct_dim)
    if code == "T":
        return TransformerBlock(config)
    raise ValueError(f"layer code {code!r} is invalid; accepted: 'A', 'M' or 'T'")
