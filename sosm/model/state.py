"""Token states of the graph-based models: MU semantic state, temporal state, projector, ``State`` record.

- **Semantic state** ``[B, T, 64]`` (16 named blocks x 4, layout from :mod:`sosm.common.blocks`):
  a factorized embedding ``vocab -> e -> 64`` (``e = SOSMConfig.embed_dim``, 128 by default) times a learned per-token sensitivity gate per
  block (``sigmoid`` of a linear map of the 128-d token embedding). It is a function of the
  token id alone: position-invariant, so the graph built from it is too.
- **Temporal state** ``[B, T, 32]``: sinusoidal position features (``sosm.common.features.sinusoidal_positions``)
  mixed linearly with the token embedding. Kept separate: never concatenated into the
  semantic state; the graph's temporal gate may read it.
- **Projector**: ``W_s semantic + W_t temporal`` into the model width.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn

from ..common.blocks import BLOCK_DIM, N_BLOCKS, SEMANTIC_DIM, TEMPORAL_DIM
from ..graph.types import SemanticGraph
from ..common.features import sinusoidal_positions

EMBED_FACTOR_DIM = 128  # default inner width e of the factorized embedding vocab -> e -> 64 (SOSMConfig.embed_dim = 0)


@dataclass
class State:
    """What a forward pass computed besides the logits, for analysis.

    Args:
        semantic: ``[B, T, 64]`` MU semantic state (None for the Transformer / Mamba baselines).
        temporal: ``[B, T, 32]`` temporal state (None for those baselines).
        graph: the ``SemanticGraph`` the attention layers used (None without a graph).
        landmark_coords: ``[B, T, L]`` float landmark coordinates (None without landmarks).
        landmark_encoding: ``[B, T, S]`` structural encoding shared by positions and Mamba (or None).
        hidden_states: residual stream ``[B, T, d_model]`` after the input and after each layer,
            when ``forward(..., return_hidden=True)``; else None.
    """

    semantic: Optional[torch.Tensor] = None
    temporal: Optional[torch.Tensor] = None
    graph: Optional[SemanticGraph] = None
    landmark_coords: Optional[torch.Tensor] = None
    landmark_encoding: Optional[torch.Tensor] = None
    hidden_states: Optional[list] = None


class SemanticState(nn.Module):
    """Factorized embedding with per-token block sensitivity gates.

    Args:
        vocab_size: V.
        embed_dim: e, the width of the token embedding (default 128).

    Shapes: ``input_ids [B, T]`` -> ``(token_embedding [B, T, e], semantic [B, T, 64])``.

    Example:
        >>> emb, sem = SemanticState(65)(torch.randint(0, 65, (2, 7)))
        >>> sem.shape
        torch.Size([2, 7, 64])
    """

    def __init__(self, vocab_size: int, embed_dim: int = EMBED_FACTOR_DIM):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, embed_dim)
        self.to_semantic = nn.Linear(embed_dim, SEMANTIC_DIM, bias=False)
        self.block_gates = nn.Linear(embed_dim, N_BLOCKS)

    def forward(self, input_ids: torch.Tensor):
        emb = self.token_embedding(input_ids)  # [B, T, e]
        B, T = input_ids.shape
        blocks = self.to_semantic(emb).view(B, T, N_BLOCKS, BLOCK_DIM)  # [B, T, 16, 4]
        gates = torch.sigmoid(self.block_gates(emb))[..., None]  # [B, T, 16, 1]
        return emb, (blocks * gates).reshape(B, T, SEMANTIC_DIM)  # [B, T, e], [B, T, 64]


class TemporalState(nn.Module):
    """Position features mixed with the token: ``W_p pos(t) + W_e emb`` -> ``[B, T, 32]``.

    ``forward(token_embedding [B, T, e], start=0)``: positions are ``start .. start + T - 1``.
    """

    def __init__(self, embed_dim: int = EMBED_FACTOR_DIM):
        super().__init__()
        self.from_position = nn.Linear(TEMPORAL_DIM, TEMPORAL_DIM)
        self.from_token = nn.Linear(embed_dim, TEMPORAL_DIM, bias=False)

    def forward(self, token_embedding: torch.Tensor, start: int = 0) -> torch.Tensor:
        T = token_embedding.shape[1]
        pos = sinusoidal_positions(start + T)[start:].to(token_embedding.device, token_embedding.dtype)  # [T, 32]
        return self.from_position(pos)[None] + self.from_token(token_embedding)  # [B, T, 32]


class StateFrontEnd(nn.Module):
    """Token ids -> (token embedding, semantic, temporal, projected residual input ``[B, T, d_model]``)."""

    def __init__(self, vocab_size: int, d_model: int, embed_dim: int = EMBED_FACTOR_DIM):
        super().__init__()
        self.semantic = SemanticState(vocab_size, embed_dim)
        self.temporal = TemporalState(embed_dim)
        self.project_semantic = nn.Linear(SEMANTIC_DIM, d_model, bias=False)
        self.project_temporal = nn.Linear(TEMPORAL_DIM, d_model, bias=False)

    @torch.no_grad()
    def reset_parameters(self, init_std: float) -> None:
        """Initialise so the residual input carries the token as strongly as a plain embedding would.

        With every layer at ``N(0, init_std)`` the chain ``embedding -> to_semantic -> project_semantic``
        shrinks the token signal by ``init_std`` twice (to ~0.0004 at 0.02) while the position features
        (RMS ~0.6) pass one such map: at init the residual stream held position ~25x more strongly than
        token identity, and the graph models learned markedly slower than the baselines. Here the
        embedding keeps ``N(0, init_std)``, the linear maps after it preserve variance
        (``std = 1/sqrt(fan_in)``; the semantic projection twice that, undoing the gates' initial 0.5),
        and the position map is scaled so that the position part of the
        temporal state matches its token part.
        """
        nn.init.normal_(self.semantic.token_embedding.weight, 0.0, init_std)
        for linear in (self.semantic.to_semantic, self.semantic.block_gates, self.temporal.from_token,
                       self.project_semantic, self.project_temporal):
            nn.init.normal_(linear.weight, 0.0, linear.in_features ** -0.5)
            if linear.bias is not None:
                nn.init.zeros_(linear.bias)
        self.project_semantic.weight.mul_(2.0)  # the block gates start at sigmoid(~0) = 0.5
        with torch.device("cpu"):  # real numbers even when the model is built on the meta device
            position_rms = float(sinusoidal_positions(256).pow(2).mean().sqrt())
        nn.init.normal_(self.temporal.from_position.weight, 0.0,
                        init_std / (position_rms * TEMPORAL_DIM ** 0.5))
        nn.init.zeros_(self.temporal.from_position.bias)

    def forward(self, input_ids: torch.Tensor, start: int = 0):
        emb, semantic = self.semantic(input_ids)  # [B, T, e], [B, T, 64]
        temporal = self.temporal(emb, start)  # [B, T, 32]
        x = self.project_semantic(semantic) + self.project_temporal(temporal)  # [B, T, d_model]
        return emb, semantic, temporal, x
