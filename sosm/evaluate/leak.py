"""The causality leak check (docs/ARCHITECTURE.md, invariant 1): perturb the future, nothing before it may move.

The input ``[B, T]`` is read as B consecutive windows of one token stream, laid out as batched
evaluation lays them out (row b holds stream positions ``b*T .. b*T + T-1``). Three checks:

1. **cuts**: for every cut p (a stream position, by default each of ``0 .. B*T-2``), every token
   after p, in every row, is resampled; the logits at stream positions <= p must not move. A cut
   at a row's last position perturbs only the later rows, so window b's last position reading
   window b+1's first token (its own target in batched evaluation) is caught.
2. **rows**: each row with every other row resampled must not move: a sample does not depend on
   its batch-mates, earlier or later ones (none for B = 1, nor with memory, where later windows
   read earlier ones by design).
3. **memory** (models built with ``config.memory``): every forward first writes the whole stream
   (semantic states and every graph-attention layer's K/V, at their stream positions) into a
   fresh long-term memory, then reads it with ``stream_offset`` = each token's stream position,
   as a pre-filled memory is read: a query at p may use what was written before p only.

Logits are compared bit for bit by default (``atol=0``): on a deterministic path (CPU, fixed
shapes) a causal model's past logits are the same bits whatever the future holds, so a leak of
any size fails. Pass ``atol > 0`` only on paths that are not bit-reproducible.

Example:
    >>> import torch
    >>> class Bigram(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__(); self.table = torch.nn.Embedding(16, 16)
    ...     def forward(self, ids):
    ...         return self.table(ids)
    >>> leak_check(Bigram(), torch.randint(0, 16, (2, 12))).passed
    True
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Sequence

import torch

from .loss import _check_ids, model_logits


@dataclass
class LeakReport:
    """Result of :func:`leak_check`: per cut position and per row, the largest logit change where none may be."""

    passed: bool
    tolerance: float
    seq_len: int                                       # T, the window (row) length
    trials: int
    positions: list = field(default_factory=list)      # cut positions p, in the stream (row p // T, column p % T)
    max_abs_diff: list = field(default_factory=list)   # per cut: max over trials of |delta logits| at positions <= p
    label: str = ""
    rows: int = 1                                      # B windows
    row_diff: list = field(default_factory=list)       # per row: max |delta logits| with every other row resampled
    memory: bool = False                               # the forward read a pre-filled long-term memory

    @property
    def worst(self) -> float:
        return max([*self.max_abs_diff, *self.row_diff], default=0.0)

    @property
    def leaking_positions(self) -> list:
        return [p for p, d in zip(self.positions, self.max_abs_diff) if not d <= self.tolerance]

    @property
    def leaking_rows(self) -> list:
        return [b for b, d in enumerate(self.row_diff) if not d <= self.tolerance]

    @property
    def verdict(self) -> str:
        return "PASS (causal)" if self.passed else "FAIL (LEAK DETECTED)"

    def to_dict(self) -> dict:
        return {**asdict(self), "worst": self.worst, "leaking_positions": self.leaking_positions,
                "leaking_rows": self.leaking_rows, "verdict": self.verdict}

    def __str__(self) -> str:
        head = f"leak check{' [' + self.label + ']' if self.label else ''}: {self.verdict}"
        compare = "bit for bit" if self.tolerance == 0 else f"tolerance {self.tolerance:g}"
        detail = (f"max |delta logits| where nothing may move: {self.worst:.3g} ({compare}); "
                  f"{len(self.positions)} cut positions x {self.trials} trials over {self.rows} window(s) of T="
                  f"{self.seq_len}" + (", rows resampled in turn" if self.rows > 1 else "")
                  + (", reading a pre-filled long-term memory" if self.memory else ""))
        if self.leaking_positions:
            where = [f"{p} (window {p // self.seq_len}, position {p % self.seq_len})" for p in self.leaking_positions[:6]]
            more = len(self.leaking_positions) - len(where)
            detail += f"\n  leaking cut positions: {', '.join(where)}" + (f" and {more} more" if more > 0 else "")
        if self.leaking_rows:
            detail += f"\n  windows that change when only other windows of the batch change: {self.leaking_rows}"
        return f"{head}\n  {detail}"


def has_memory(model: torch.nn.Module) -> bool:
    """True for a model built to read long-term memory (``model.config.memory``)."""
    return bool(getattr(getattr(model, "config", None), "memory", False))


def memory_forward(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``ids [B, T] -> logits`` of ``model`` reading a memory pre-filled with the whole stream ``ids``.

    Row b is at stream positions ``b*T ..``; the memory holds every token's semantic state and
    graph-attention K/V at its stream position (written before any query retrieves, the case
    where retrieval could see what comes after a query).
    """
    from ..model.memory_attention import ModelMemory

    def forward(ids: torch.Tensor) -> torch.Tensor:
        B, T = ids.shape
        positions = torch.arange(B * T, device=ids.device).view(B, T)  # [B, T] stream positions
        record: list = []
        _, state = model(ids, record_kv=record)
        memory = ModelMemory.for_model(model)
        memory.write(state.semantic.reshape(B * T, -1), [k.reshape(B * T, *k.shape[2:]) for k, _ in record],
                     [v.reshape(B * T, *v.shape[2:]) for _, v in record], positions.reshape(-1))
        return model(ids, memory=memory, stream_offset=positions)[0]

    return forward


@torch.no_grad()
def leak_check(model: torch.nn.Module, input_ids: torch.Tensor, positions: Optional[Sequence[int]] = None, *,
               vocab_size: Optional[int] = None, trials: int = 1, seed: int = 0, atol: float = 0.0,
               label: str = "", memory: Optional[bool] = None,
               progress: Optional[Callable[[int], None]] = None) -> LeakReport:
    """Resample the future of every cut (and every other row) and report whether anything before it moved.

    Runs in eval mode (dropout off) and restores the model's mode afterwards. Every resampled
    token differs from the original one, so each perturbed position is changed.

    Args:
        model: forward ``input_ids [B, T] -> logits [B, T, V]`` (or a tuple starting with them).
        input_ids: ``LongTensor[B, T]`` (B consecutive windows of one stream) or ``[T]``; B * T >= 2.
        positions: cut positions p in ``[0, B*T - 2]`` of the stream (default: all of them).
        vocab_size: range of the random tokens (default: V from the logits).
        trials: random resamplings per cut and per row (>= 1).
        seed: seed of the resampling generator (the global RNG is not touched).
        atol: largest allowed absolute change of a logit; 0 (default) compares bit for bit.
        label: free text shown in the report (for example ``"LEAKY hybrid"``).
        memory: read a pre-filled long-term memory (:func:`memory_forward`); default: when the model has one.
        progress: called with 1 after each cut and each row is checked (a progress bar's ``update``); there
            are ``len(positions)`` cuts and, for B > 1 without memory, B rows.
    """
    input_ids = _check_ids(input_ids)
    if input_ids.dim() == 1:
        input_ids = input_ids.unsqueeze(0)
    if input_ids.dim() != 2 or input_ids.numel() < 2:
        raise ValueError(f"input_ids must be [B, T] or [T] with B * T >= 2, got shape {tuple(input_ids.shape)}")
    B, T = input_ids.shape
    last = B * T - 2
    positions = list(range(last + 1)) if positions is None else sorted({int(p) for p in positions})
    bad = [p for p in positions if not 0 <= p <= last]
    if bad or not positions:
        raise ValueError(f"positions {bad or positions} are invalid; accepted: a non-empty set in [0, {last}] "
                         f"(stream positions of the {B} window(s) of {T} tokens)")
    if not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials={trials!r} is invalid; accepted: an int >= 1")
    if not atol >= 0:
        raise ValueError(f"atol={atol!r} is invalid; accepted: a float >= 0 (0: bit for bit)")
    use_memory = has_memory(model) if memory is None else bool(memory)
    forward = memory_forward(model) if use_memory else (lambda ids: model_logits(model, ids))
    was_training = model.training
    model.eval()
    try:
        base = forward(input_ids).float()  # [B, T, V]
        V = vocab_size or base.shape[-1]
        if V < 2:
            raise ValueError(f"vocab_size={V} is invalid; accepted: >= 2")
        generator = torch.Generator().manual_seed(seed)
        flat_base = base.reshape(B * T, -1)

        def resampled(mask: torch.Tensor) -> torch.Tensor:
            """``input_ids`` with every token where ``mask [B*T]`` is True changed to another random token."""
            flat = input_ids.reshape(-1).clone()
            offset = torch.randint(1, V, (int(mask.sum()),), generator=generator).to(flat.device)
            flat[mask] = (flat[mask].clamp(0, V - 1) + offset) % V
            return flat.view(B, T)

        def moved(logits: torch.Tensor, keep: torch.Tensor) -> float:
            delta = (logits.float().reshape(B * T, -1)[keep] - flat_base[keep]).abs()
            return delta.max().item() if torch.isfinite(delta).all() else float("inf")

        stream = torch.arange(B * T, device=input_ids.device)
        cut_diffs = []
        for p in positions:
            future = stream > p
            cut_diffs.append(max(moved(forward(resampled(future)), ~future) for _ in range(trials)))
            if progress is not None:
                progress(1)
        row_diffs = []
        if B > 1 and not use_memory:
            for b in range(B):
                others = stream // T != b
                row_diffs.append(max(moved(forward(resampled(others)), ~others) for _ in range(trials)))
                if progress is not None:
                    progress(1)
    finally:
        model.train(was_training)
    passed = all(d <= atol for d in [*cut_diffs, *row_diffs])
    return LeakReport(passed=passed, tolerance=atol, seq_len=T, trials=trials, positions=positions,
                      max_abs_diff=cut_diffs, label=label, rows=B, row_diff=row_diffs, memory=use_memory)
