"""Held-out loss, perplexity and bits per byte of a model on a token stream."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

LN2 = math.log(2.0)


def model_logits(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Run ``model(input_ids)`` and return the logits ``[B, T, V]`` whatever the output form."""
    out = model(input_ids)
    logits = out[0] if isinstance(out, (tuple, list)) else getattr(out, "logits", out)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3 or logits.shape[:2] != input_ids.shape:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise TypeError(f"model output must be logits [B, T, V] matching input_ids {tuple(input_ids.shape)} "
                        f"(or a tuple starting with them), got {shape}")
    return logits


def _check_ids(input_ids: torch.Tensor, name: str = "input_ids") -> torch.Tensor:
    if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in (torch.long, torch.int32):
        raise TypeError(f"{name} must be an integer tensor (torch.long), got "
                        f"{getattr(input_ids, 'dtype', type(input_ids).__name__)}")
    return input_ids.long()


@dataclass
class EvalResult:
    """Mean next-token loss over a token stream."""

    loss: float                             # mean cross-entropy, nats per token
    perplexity: float                       # exp(loss)
    tokens: int                             # predicted tokens
    bytes: Optional[int] = None             # UTF-8 bytes of the predicted text (when a tokenizer was given)
    bits_per_byte: Optional[float] = None   # total bits / bytes (when a tokenizer was given)

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def evaluate_tokens(model: torch.nn.Module, token_ids: torch.Tensor, block_size: int, *, batch_size: int = 8,
                    device="cpu", max_tokens: Optional[int] = None,
                    progress: Optional[Callable[[int], None]] = None) -> tuple[float, int]:
    """Total cross-entropy (nats) and count over every token of ``token_ids`` but the first.

    The stream is cut into consecutive windows of ``block_size`` inputs; each window
    predicts its next ``block_size`` tokens, so every token after the first is predicted
    exactly once, with the context of its own window.

    Args:
        token_ids: ``LongTensor[N]``, N >= 2.
        block_size: context length (>= 1).
        batch_size: windows per forward pass (>= 1).
        max_tokens: score only the first ``max_tokens + 1`` tokens (None: all).
        progress: called with the number of tokens scored after every forward pass (a progress bar's
            ``update``); the total is ``min(N, max_tokens + 1) - 1``.
    """
    token_ids = _check_ids(token_ids, "token_ids")
    if token_ids.dim() != 1 or token_ids.numel() < 2:
        raise ValueError(f"token_ids must be a 1-D stream of >= 2 tokens, got shape {tuple(token_ids.shape)}")
    if not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size={block_size!r} is invalid; accepted: an int >= 1")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is invalid; accepted: an int >= 1")
    if max_tokens is not None:
        token_ids = token_ids[: max_tokens + 1]
    n_pred = token_ids.numel() - 1
    starts = list(range(0, n_pred, block_size))
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        for first in range(0, len(starts), batch_size):
            group = starts[first:first + batch_size]
            full = [s for s in group if s + block_size <= n_pred]
            ragged = [s for s in group if s + block_size > n_pred]
            if full:
                x = torch.stack([token_ids[s:s + block_size] for s in full]).to(device)
                y = torch.stack([token_ids[s + 1:s + block_size + 1] for s in full]).to(device)
                logits = model_logits(model, x).float()
                total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
                count += y.numel()
                if progress is not None:
                    progress(y.numel())
            for s in ragged:
                x = token_ids[s:n_pred].unsqueeze(0).to(device)
                y = token_ids[s + 1:n_pred + 1].unsqueeze(0).to(device)
                logits = model_logits(model, x).float()
                total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
                count += y.numel()
                if progress is not None:
                    progress(y.numel())
    finally:
        model.train(was_training)
    return total, count


def evaluate_ids(model: torch.nn.Module, tokenizer, token_ids: torch.Tensor, block_size: int, *, batch_size: int = 8,
                 device="cpu", max_tokens: Optional[int] = None,
                 progress: Optional[Callable[[int], None]] = None) -> EvalResult:
    """Loss, perplexity and bits per byte of ``model`` on an already tokenized stream.

    Bits per byte divide the total bits by the UTF-8 length of the predicted text
    (``tokenizer.decode`` of every scored token), so it is comparable across
    tokenizers; for a byte or ASCII character model it equals ``loss / ln 2``.
    """
    total, count = evaluate_tokens(model, token_ids, block_size, batch_size=batch_size, device=device,
                                   max_tokens=max_tokens, progress=progress)
    n_bytes = len(tokenizer.decode(token_ids[1:count + 1].tolist()).encode("utf-8"))
    loss = total / count
    return EvalResult(loss=loss, perplexity=math.exp(min(loss, 700.0)), tokens=count, bytes=n_bytes,
                      bits_per_byte=total / LN2 / max(n_bytes, 1))


def evaluate_text(model: torch.nn.Module, tokenizer, text: str, block_size: int, *, batch_size: int = 8,
                  device="cpu", max_tokens: Optional[int] = None) -> EvalResult:
    """:func:`evaluate_ids` on ``tokenizer.encode(text)``."""
    if not isinstance(text, str) or not text:
        raise ValueError("text must be a non-empty string")
    ids = torch.as_tensor(list(tokenizer.encode(text)), dtype=torch.long)
    return evaluate_ids(model, tokenizer, ids, block_size, batch_size=batch_size, device=device, max_tokens=max_tokens)
