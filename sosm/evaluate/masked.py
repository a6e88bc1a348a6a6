"""Masked-token loss of a bidirectional (mask-predict) model over a whole token stream, at a fixed masking ratio.

The stream is cut into consecutive windows of ``block_size`` tokens (the last one shorter); in each
window ``ceil(ratio · T)`` positions are masked, chosen by a generator seeded with ``seed`` (the same
masks on every run), and the loss is the mean cross-entropy over every masked position of the stream.

Example:
    >>> import torch
    >>> class Uniform(torch.nn.Module):
    ...     def forward(self, ids):
    ...         return torch.zeros(*ids.shape, 9)
    >>> round(masked_token_loss(Uniform(), torch.arange(20) % 8, block_size=8, ratio=0.5, mask_id=8).loss, 4)
    2.1972
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ..model.mask_predict import mask_tokens


@dataclass
class MaskedResult:
    """Masked-token loss (nats per masked token) at one ratio, and how many tokens were masked."""

    ratio: float
    loss: float
    masked_tokens: int
    seed: int

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)

    def to_dict(self) -> dict:
        return {**asdict(self), "perplexity": self.perplexity}


@torch.no_grad()
def masked_token_loss(model, ids: torch.Tensor, block_size: int, ratio: float, mask_id: int, *, seed: int = 0,
                      batch_size: int = 16, device="cpu", max_tokens: Optional[int] = None,
                      progress: Optional[Callable[[int], None]] = None) -> MaskedResult:
    """Mean cross-entropy on the masked positions of ``ids [N]`` at masking ``ratio`` (deterministic by ``seed``).

    Args:
        model: ``model(ids [B, T]) -> logits [B, T, V]`` (or a tuple starting with them), bidirectional.
        ids: the token stream (long, 1-D), at least one token.
        block_size: window length (the model's context).
        ratio: share of each window masked, in (0, 1].
        mask_id: the ``[MASK]`` id.
        seed: seeds the generator that picks the masked positions.
        batch_size: windows per forward pass.
        max_tokens: score only the first N tokens.
        progress: called with the number of tokens of each finished batch.
    """
    if not 0 < ratio <= 1:
        raise ValueError(f"ratio={ratio!r} is invalid; accepted: a float in (0, 1]")
    ids = ids if max_tokens is None else ids[:max_tokens]
    if ids.dim() != 1 or len(ids) < 1:
        raise ValueError(f"ids must be a non-empty 1-D token stream, got shape {tuple(ids.shape)}")
    generator = torch.Generator().manual_seed(seed)
    windows = list(torch.split(ids, block_size))
    total, count = 0.0, 0
    for start in range(0, len(windows), batch_size):
        chunk = windows[start:start + batch_size]
        groups = [torch.stack(chunk[:-1])] if len(chunk[-1]) != block_size and len(chunk) > 1 else []
        groups = groups + [chunk[-1][None]] if groups else [torch.stack(chunk)]  # a shorter last window alone
        for batch in groups:
            batch = batch.to(device)
            masked, mask = mask_tokens(batch, ratio, mask_id, generator)
            out = model(masked)
            logits = (out[0] if isinstance(out, (tuple, list)) else out).float()
            total += F.cross_entropy(logits[mask], batch[mask], reduction="sum").item()
            count += int(mask.sum())
            if progress is not None:
                progress(batch.numel())
    return MaskedResult(ratio=ratio, loss=total / count, masked_tokens=count, seed=seed)
