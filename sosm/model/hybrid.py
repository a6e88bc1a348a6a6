"""``GraphMambaHybrid``: the layer stack (graph attention + MLP and TopologicalMamba layers) and a final norm.

The layer codes come from ``SOSMConfig.layer_types`` (default ``"AMMM"``: one graph-attention
layer per four). The baselines reuse this stack with other codes (``T``/``M``/``A`` only).
Every layer reads the same :class:`~sosm.model.graph_attention_layer.LayerContext`: one graph,
one layout, one set of positions and one structural encoding per forward pass.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from .baselines import make_layer
from .graph_attention_layer import LayerContext


class GraphMambaHybrid(nn.Module):
    """A stack of layers followed by a final RMSNorm.

    Args:
        config: ``SOSMConfig``; ``config.layer_types`` picks the layers.
        struct_dim: width of the structural encoding given to Mamba layers (None: plain Mamba).

    Shapes: ``forward(x [B, T, d_model], ctx) -> ([B, T, d_model], hidden list or None)``.

    Example:
        >>> from sosm.model import SOSMConfig
        >>> stack = GraphMambaHybrid(SOSMConfig(model="mamba", d_model=32, n_heads=2), None)
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
