"""Held-out loss, perplexity and bits per byte, and the causality leak check.

Both work on any ``torch.nn.Module`` whose forward takes ``input_ids [B, T]`` (long) and
returns logits ``[B, T, V]``, or a tuple/list whose first item is the logits (as
``SOSMModel`` does), so they apply equally to our models, baselines and test doubles.

The leak check (docs/ARCHITECTURE.md, invariant 1) resamples every token after position t and
asserts that logits at positions <= t do not move. A model whose position i sees any
later token fails it, whatever it learned.

Example:
    >>> import torch
    >>> class Bigram(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__(); self.table = torch.nn.Embedding(16, 16)
    ...     def forward(self, ids):
    ...         return self.table(ids)
    >>> leak_check(Bigram(), torch.randint(0, 16, (1, 12))).passed
    True
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

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
                    device="cpu", max_tokens: Optional[int] = None) -> tuple[float, int]:
    """Total cross-entropy (nats) and count over every token of ``token_ids`` but the first.

    The stream is cut into consecutive windows of ``block_size`` inputs; each window
    predicts its next ``block_size`` tokens, so every token after the first is predicted
    exactly once, with the context of its own window.

    Args:
        token_ids: ``LongTensor[N]``, N >= 2.
        block_size: context length (>= 1).
        batch_size: windows per forward pass (>= 1).
        max_tokens: score only the first ``max_tokens + 1`` tokens (None: all).
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
            for s in ragged:
                x = token_ids[s:n_pred].unsqueeze(0).to(device)
                y = token_ids[s + 1:n_pred + 1].unsqueeze(0).to(device)
                logits = model_logits(model, x).float()
                total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
                count += y.numel()
    finally:
        model.train(was_training)
    return total, count


def evaluate_ids(model: torch.nn.Module, tokenizer, token_ids: torch.Tensor, block_size: int, *, batch_size: int = 8,
                 device="cpu", max_tokens: Optional[int] = None) -> EvalResult:
    """Loss, perplexity and bits per byte of ``model`` on an already tokenized stream.

    Bits per byte divide the total bits by the UTF-8 length of the predicted text
    (``tokenizer.decode`` of every scored token), so it is comparable across
    tokenizers; for a byte or ASCII character model it equals ``loss / ln 2``.
    """
    total, count = evaluate_tokens(model, token_ids, block_size, batch_size=batch_size, device=device,
                                   max_tokens=max_tokens)
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


@dataclass
class LeakReport:
    """Result of :func:`leak_check`: per cut position, the largest logit change at positions <= t."""

    passed: bool
    tolerance: float
    seq_len: int
    trials: int
    positions: list = field(default_factory=list)
    max_abs_diff: list = field(default_factory=list)   # one per position (max over trials, batch, <= t, vocab)
    label: str = ""

    @property
    def worst(self) -> float:
        return max(self.max_abs_diff) if self.max_abs_diff else 0.0

    @property
    def leaking_positions(self) -> list:
        return [t for t, d in zip(self.positions, self.max_abs_diff) if not d <= self.tolerance]

    @property
    def verdict(self) -> str:
        return "PASS (causal)" if self.passed else "FAIL (LEAK DETECTED)"

    def to_dict(self) -> dict:
        return {**asdict(self), "worst": self.worst, "leaking_positions": self.leaking_positions,
                "verdict": self.verdict}

    def __str__(self) -> str:
        head = f"leak check{' [' + self.label + ']' if self.label else ''}: {self.verdict}"
        detail = (f"max |delta logits| at positions <= t: {self.worst:.3g} (tolerance {self.tolerance:g}); "
                  f"{len(self.positions)} cut positions x {self.trials} trials, T={self.seq_len}")
        if not self.passed:
            detail += f"; leaking cut positions: {self.leaking_positions}"
        return f"{head}\n  {detail}"


def default_positions(seq_len: int, count: int = 6) -> list:
    """Evenly spread cut positions in ``[0, seq_len - 2]`` (t = T-1 has no later tokens)."""
    if seq_len < 2:
        raise ValueError(f"seq_len={seq_len} is too short for a leak check; accepted: >= 2")
    last = seq_len - 2
    return sorted({round(i * last / max(count - 1, 1)) for i in range(count)})


@torch.no_grad()
def leak_check(model: torch.nn.Module, input_ids: torch.Tensor, positions: Optional[Sequence[int]] = None, *,
               vocab_size: Optional[int] = None, trials: int = 2, seed: int = 0, atol: float = 1e-5,
               label: str = "") -> LeakReport:
    """Perturb the tokens after each position t and report whether logits at <= t change.

    Runs in eval mode (dropout off) and restores the model's mode afterwards. Every
    resampled token differs from the original one, so each later position is changed.

    Args:
        model: forward ``input_ids [B, T] -> logits [B, T, V]`` (or a tuple starting with them).
        input_ids: ``LongTensor[B, T]`` or ``[T]``, T >= 2.
        positions: cut positions t in ``[0, T-2]`` (default: 6 spread over the sequence).
        vocab_size: range of the random tokens (default: V from the logits).
        trials: random resamplings per position (>= 1).
        seed: seed of the resampling generator (the global RNG is not touched).
        atol: largest allowed absolute change of a logit (fp32: 1e-5).
        label: free text shown in the report (for example ``"LEAKY hybrid"``).
    """
    input_ids = _check_ids(input_ids)
    if input_ids.dim() == 1:
        input_ids = input_ids.unsqueeze(0)
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [B, T] or [T], got shape {tuple(input_ids.shape)}")
    T = input_ids.shape[1]
    positions = default_positions(T) if positions is None else sorted({int(t) for t in positions})
    bad = [t for t in positions if not 0 <= t <= T - 2]
    if bad or not positions:
        raise ValueError(f"positions {bad or positions} are invalid; accepted: a non-empty set in [0, {T - 2}]")
    if not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials={trials!r} is invalid; accepted: an int >= 1")
    if not atol >= 0:
        raise ValueError(f"atol={atol!r} is invalid; accepted: a float >= 0")
    was_training = model.training
    model.eval()
    try:
        base = model_logits(model, input_ids).float()
        V = vocab_size or base.shape[-1]
        if V < 2:
            raise ValueError(f"vocab_size={V} is invalid; accepted: >= 2")
        gen = torch.Generator().manual_seed(seed)
        diffs = []
        for t in positions:
            worst = 0.0
            for _ in range(trials):
                perturbed = input_ids.clone()
                tail = perturbed[:, t + 1:]
                offset = torch.randint(1, V, tail.shape, generator=gen).to(tail.device)
                perturbed[:, t + 1:] = (tail.clamp(0, V - 1) + offset) % V
                logits = model_logits(model, perturbed).float()
                delta = (logits[:, :t + 1] - base[:, :t + 1]).abs()
                value = delta.max().item() if torch.isfinite(delta).all() else float("inf")
                worst = max(worst, value)
            diffs.append(worst)
    finally:
        model.train(was_training)
    passed = all(d <= atol for d in diffs)
    return LeakReport(passed=passed, tolerance=atol, seq_len=T, trials=trials, positions=positions,
                      max_abs_diff=diffs, label=label)
