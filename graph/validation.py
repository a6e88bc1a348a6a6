"""Input checks for :class:`sosm.graph.GraphBuilder` (docs/ARCHITECTURE.md, invariant 6).

Each check raises ``TypeError`` (wrong kind or dtype) or ``ValueError`` (wrong shape or value)
naming the argument, the value received and the accepted range. Nothing is modified.

Example:
    >>> import torch
    >>> from sosm.graph import GraphConfig
    >>> from sosm.graph.validation import check_states
    >>> check_states(torch.zeros(1, 10, 64), GraphConfig())
    Traceback (most recent call last):
    ...
    ValueError: states has sequence length T=10; GraphConfig(k=8) needs T >= k + 3 = 11
"""
from __future__ import annotations

from typing import Optional

import torch

from ..common.blocks import SEMANTIC_DIM, TEMPORAL_DIM
from .config import GraphConfig


def check_states(states, config: GraphConfig) -> None:
    """``states`` must be a finite floating ``[B >= 1, T >= config.min_seq_len, 64]`` tensor."""
    if not isinstance(states, torch.Tensor):
        raise TypeError(f"states must be a torch.Tensor [B, T, {SEMANTIC_DIM}], got {type(states).__name__}")
    if not states.is_floating_point():
        raise TypeError(f"states must be a floating-point tensor (float16/bfloat16/float32/float64), "
                        f"got dtype {states.dtype}")
    if states.dim() != 3:
        raise ValueError(f"states must have 3 dims [B, T, {SEMANTIC_DIM}], got shape {tuple(states.shape)}"
                         + ("; add a batch dim with states.unsqueeze(0)" if states.dim() == 2 else ""))
    if states.shape[-1] != SEMANTIC_DIM:
        raise ValueError(f"states last dim must be {SEMANTIC_DIM} (16 blocks x 4), got {states.shape[-1]}")
    if states.shape[0] < 1 or states.shape[1] < 1:
        raise ValueError(f"states is empty: shape {tuple(states.shape)}; need B >= 1 and "
                         f"T >= {config.min_seq_len}")
    if states.shape[1] < config.min_seq_len:
        k_name = "k_max" if config.adaptive_k else "k"
        raise ValueError(f"states has sequence length T={states.shape[1]}; GraphConfig({k_name}="
                         f"{config.effective_k_max}) needs T >= {k_name} + 3 = {config.min_seq_len}")
    if not torch.isfinite(states).all():
        bad = int((~torch.isfinite(states)).sum())
        raise ValueError(f"states contains {bad} NaN/Inf values; accepted: finite values only")


def check_temporal(temporal, states: torch.Tensor, config: GraphConfig) -> None:
    """``temporal`` must be None or a finite floating ``[B, T, 32]``; required by the temporal gate."""
    if temporal is None:
        if config.temporal_gate:
            raise ValueError("temporal is None but GraphConfig.temporal_gate=True needs temporal states "
                             f"[B, T, {TEMPORAL_DIM}]")
        return
    if not isinstance(temporal, torch.Tensor) or not temporal.is_floating_point():
        raise TypeError(f"temporal must be a floating-point tensor [B, T, {TEMPORAL_DIM}], got "
                        f"{temporal.dtype if isinstance(temporal, torch.Tensor) else type(temporal).__name__}")
    want = (states.shape[0], states.shape[1], TEMPORAL_DIM)
    if tuple(temporal.shape) != want:
        raise ValueError(f"temporal must have shape {want} (states' B, T and {TEMPORAL_DIM}), "
                         f"got {tuple(temporal.shape)}")
    if not torch.isfinite(temporal).all():
        raise ValueError("temporal contains NaN/Inf values; accepted: finite values only")


def check_padding_mask(padding_mask: Optional[torch.Tensor], states: torch.Tensor) -> None:
    """``padding_mask`` must be None or a ``BoolTensor[B, T]`` (True = real token)."""
    if padding_mask is None:
        return
    if not isinstance(padding_mask, torch.Tensor) or padding_mask.dtype != torch.bool:
        raise TypeError(f"padding_mask must be a torch.bool tensor [B, T] (True = real token), got "
                        f"{padding_mask.dtype if isinstance(padding_mask, torch.Tensor) else type(padding_mask).__name__}")
    want = tuple(states.shape[:2])
    if tuple(padding_mask.shape) != want:
        raise ValueError(f"padding_mask must have shape {want} (states' B, T), got {tuple(padding_mask.shape)}")
