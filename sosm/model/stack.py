"""The layer stack every model kind uses: one registered mixer per layer, then a final RMSNorm.

``SOSMConfig.layer_types`` names the mixer of every layer (:mod:`sosm.model.mixers`): the hybrid
interleaves ``graph_attention`` and ``mamba`` (default pattern ``"AMMM"``); a pure stack repeats one
mixer. Every layer reads the same :class:`~sosm.model.context.LayerContext`: one graph, one layout,
one set of positions and one structural encoding per forward pass. Decoding (:meth:`LayerStack.step`)
and window-to-window carry (:meth:`LayerStack.forward_carry`) go through each mixer's own forms.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from .context import LayerContext
from .mixers import Mixer, build_mixer


class LayerStack(nn.Module):
    """A stack of layers followed by a final RMSNorm.

    Each mixer is built causal or bidirectional as ``config.causal`` says (a causal stack refuses
    bidirectional-only mixers; causal-only mixers stay left-to-right in a bidirectional stack).

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
        self.layers = nn.ModuleList(build_mixer(name, config, struct_dim, causal=config.causal)
                                    for name in self.layer_types)
        for index, layer in enumerate(self.layers):  # depth-dependent mixers (differential attention's lambda_init)
            for module in layer.modules():  # wrappers (Mixture-of-Depths) pass it to the mixer they hold
                if isinstance(module, Mixer):
                    module.layer_index = index
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

    def allocate_caches(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> list:
        """One fresh decoding cache per layer (each mixer's own :meth:`~sosm.model.mixers.Mixer.allocate_cache`)."""
        return [layer.allocate_cache(batch_size, device, dtype) for layer in self.layers]

    def step(self, x: torch.Tensor, ctx: LayerContext, caches: list) -> torch.Tensor:
        """One decoding step ``x [B, 1, d_model]``; ``caches`` holds one dict per layer (updated in place)."""
        for layer, cache in zip(self.layers, caches):
            x = layer.step(x, ctx, cache)
        return self.norm(x)

    def forward_carry(self, x: torch.Tensor, ctx: LayerContext, caches: list, return_hidden: bool = False):
        """A window from carried per-layer states (``caches``, advanced in place); as :meth:`forward` otherwise.

        Mixers with a recurrent state (Mamba) start from it and leave theirs; the others read the
        window only (:meth:`~sosm.model.mixers.Mixer.forward_carry`).
        """
        hidden = [x] if return_hidden else None
        for layer, cache in zip(self.layers, caches):
            x = layer.forward_carry(x, ctx, cache)
            if return_hidden:
                hidden.append(x)
        return self.norm(x), hidden
