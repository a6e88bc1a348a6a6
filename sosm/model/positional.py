"""Positions for attention: 1-D RoPE, Graph-RoPE, Graph-ALiBi, and the landmark structural encoding.

All three read positions that are computed once per forward and shared by every layer:

- **RoPE**: token index t; pair p of a head rotates by ``t * base ** (-p / P)`` (P pairs).
- **Graph-RoPE**: the landmark coordinate vector ``c[b, t] ∈ R^L`` is a multi-dimensional
  position. The P rotation pairs are dealt to the L landmarks round robin (pair p belongs to
  landmark ``p % L``), so each landmark owns one rotation subspace; pair p rotates by
  ``c[b, t, p % L] * base ** (-(p // L) / ceil(P / L))``. The score of (i, j) then depends
  on the coordinate differences ``c_i - c_j`` per landmark.
- **Graph-ALiBi**: per-head slope ``m_h = 2 ** (-8 (h + 1) / H)`` and the bias
  ``-m_h * max_l |c_i,l - c_j,l|`` (the landmark lower bound on the hop distance), applied by
  ``sosm.kernels.graph_attention`` through ``alibi_slopes`` / ``alibi_coords``.

Landmark coordinates are ``min(distance, max_distance + 1)`` (UNREACHABLE maps to
``max_distance + 1``); the structural encoding is a small MLP of the normalised coordinates.
In causal mode the graph package guarantees that position i's distances depend only on
positions <= i, so every quantity here is causal too.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def landmark_coordinates(distances: torch.Tensor, max_distance: int) -> torch.Tensor:
    """Hop distances ``[B, T, L]`` (int, UNREACHABLE allowed) -> float coordinates ``min(d, max_distance + 1)``."""
    return distances.clamp(max=max_distance + 1).float()  # [B, T, L]


def walk_coordinates(walk: torch.Tensor, max_distance: int) -> torch.Tensor:
    """Random-walk return probabilities ``[B, T, W]`` in [0, 1] -> float coordinates ``walk * (max_distance + 1)``.

    The scale puts them in the landmark coordinates' range, so Graph-RoPE's frequencies, Graph-ALiBi's
    slopes and the structural encoding's normalisation mean the same for both kinds.
    """
    return walk.float() * (max_distance + 1)  # [B, T, W]


def rope_angles(positions: torch.Tensor, head_dim: int, base: float) -> torch.Tensor:
    """Rotation angles of 1-D RoPE.

    Args:
        positions: ``[..., T]`` token indices (int or float).
        head_dim: even head width d.
        base: frequency base.

    Returns:
        ``[..., T, d/2]`` float32 angles.

    Example:
        >>> rope_angles(torch.arange(5), 8, 10000.0).shape
        torch.Size([5, 4])
    """
    pairs = head_dim // 2
    inv_freq = base ** (-torch.arange(pairs, dtype=torch.float32, device=positions.device) / pairs)  # [P]
    return positions.float()[..., None] * inv_freq  # [..., T, P]


def graph_rope_angles(coords: torch.Tensor, head_dim: int, base: float) -> torch.Tensor:
    """Rotation angles of Graph-RoPE from landmark coordinates.

    Args:
        coords: ``[B, T, L]`` float landmark coordinates.
        head_dim: even head width d with ``d / 2 >= L``.
        base: frequency base.

    Returns:
        ``[B, T, d/2]`` float32 angles; pair p uses landmark ``p % L``.

    Example:
        >>> graph_rope_angles(torch.rand(2, 5, 3), 8, 10000.0).shape
        torch.Size([2, 5, 4])
    """
    pairs, num_landmarks = head_dim // 2, coords.shape[-1]
    if pairs < num_landmarks:
        raise ValueError(f"head_dim={head_dim} gives {pairs} rotation pairs; Graph-RoPE needs >= L={num_landmarks}")
    pair = torch.arange(pairs, device=coords.device)
    per_landmark = math.ceil(pairs / num_landmarks)
    inv_freq = base ** (-(pair // num_landmarks).float() / per_landmark)  # [P]
    return coords.float()[..., pair % num_landmarks] * inv_freq  # [B, T, P]


def apply_rotary(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate the pairs ``(x[..., p], x[..., p + d/2])`` of every head.

    Args:
        x: ``[B, T, H, d]``.
        angles: ``[B or 1, T, d/2]`` or ``[T, d/2]``.

    Returns:
        ``[B, T, H, d]`` in ``x.dtype``.
    """
    if angles.dim() == 2:
        angles = angles[None]
    cos = angles.cos()[:, :, None, :]  # [B, T, 1, P]
    sin = angles.sin()[:, :, None, :]
    x1, x2 = x.float().chunk(2, dim=-1)  # [B, T, H, P] each
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).to(x.dtype)


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """Per-head Graph-ALiBi slopes ``2 ** (-8 (h + 1) / H)``, ``[H]`` float32."""
    return 2.0 ** (-8.0 * torch.arange(1, n_heads + 1, dtype=torch.float32) / n_heads)


class StructuralEncoding(nn.Module):
    """Small MLP from normalised landmark coordinates to the structural encoding.

    Args:
        num_landmarks: L.
        max_distance: the graph's BFS cap (coordinates are divided by ``max_distance + 1``).
        out_dim: S, width of the encoding.

    Shapes: ``coords [B, T, L]`` float -> ``[B, T, S]``. Per token: no statistic over B or T.

    Example:
        >>> enc = StructuralEncoding(4, 64, 16)
        >>> enc(torch.rand(2, 10, 4) * 65).shape
        torch.Size([2, 10, 16])
    """

    def __init__(self, num_landmarks: int, max_distance: int, out_dim: int):
        super().__init__()
        self.scale = 1.0 / (max_distance + 1)
        hidden = max(2 * out_dim, num_landmarks)
        self.fc1 = nn.Linear(num_landmarks, hidden)
        self.fc2 = nn.Linear(hidden, out_dim)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(coords * self.scale)))  # [B, T, S]
