"""The i.i.d.-token canary: a short training run on uniform random tokens must stay at ln V.

On tokens drawn independently and uniformly from V values, nothing before position i says
anything about token i+1: whatever a causal model learns, its expected loss on fresh tokens is
at least ln V (cross-entropy = ln V + KL(uniform || prediction)). A model that can see the token
it predicts, by any path, learns to use it and falls below ln V. Unlike :func:`leak_check`, which
tests the weights it is given, the canary trains, so a leak through a path that happens to be
closed at those weights (a gate at zero, a tiny coefficient) is opened by training and caught.

Example:
    >>> import torch
    >>> class Bigram(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__(); self.table = torch.nn.Embedding(16, 16)
    ...     def forward(self, ids):
    ...         return self.table(ids)
    >>> canary_check(Bigram(), vocab_size=16, block_size=8, steps=20).passed
    True
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .loss import model_logits


@dataclass
class CanaryReport:
    """Result of :func:`canary_check`."""

    passed: bool
    loss: float             # held-out loss (nats/token) on fresh uniform tokens after training
    uniform_loss: float     # ln V: the least any causal model can expect
    margin: float           # loss may fall this far below ln V (sampling noise of the estimate)
    steps: int
    first_train_loss: float
    last_train_loss: float
    vocab_size: int
    block_size: int
    label: str = ""

    @property
    def verdict(self) -> str:
        return "PASS (stays at ln V)" if self.passed else "FAIL (LEAK: learns i.i.d. tokens)"

    def to_dict(self) -> dict:
        return {**asdict(self), "verdict": self.verdict}

    def __str__(self) -> str:
        head = f"canary{' [' + self.label + ']' if self.label else ''}: {self.verdict}"
        return (f"{head}\n  after {self.steps} steps on uniform i.i.d. tokens (V={self.vocab_size}, T={self.block_size}): "
                f"held-out loss {self.loss:.4f} vs ln V = {self.uniform_loss:.4f} (allowed {self.margin:g} below); "
                f"training loss {self.first_train_loss:.4f} -> {self.last_train_loss:.4f}")


def canary_check(model: torch.nn.Module, vocab_size: int, block_size: int, *, steps: int = 200, batch_size: int = 8,
                 lr: float = 3e-3, seed: int = 0, margin: float = 0.05, eval_batches: int = 8, device="cpu",
                 label: str = "", progress: Optional[Callable[[int, float], None]] = None) -> CanaryReport:
    """Train ``model`` on uniform i.i.d. tokens for ``steps`` steps; pass when fresh tokens still cost ln V.

    ``model`` is trained in place: pass a fresh one (for a checkpoint, one built from its config).

    Args:
        model: forward ``input_ids [B, T] -> logits [B, T, V]`` (or a tuple starting with them).
        vocab_size: V, the range of the tokens (>= 2); ``block_size``: T (>= 2).
        steps: AdamW steps (>= 1), each on ``batch_size`` fresh sequences of T + 1 tokens.
        lr: AdamW learning rate (no weight decay).
        seed: seeds the token generator; the model's initialisation is the caller's.
        margin: the held-out loss may be this far below ln V and still pass (>= 0).
        eval_batches: batches of fresh tokens (another seed) the held-out loss is measured on.
        progress: called as ``progress(step, loss)`` after every step.
    """
    for name, value, least in (("vocab_size", vocab_size, 2), ("block_size", block_size, 2), ("steps", steps, 1),
                               ("batch_size", batch_size, 1), ("eval_batches", eval_batches, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ValueError(f"{name}={value!r} is invalid; accepted: an int >= {least}")
    if not margin >= 0:
        raise ValueError(f"margin={margin!r} is invalid; accepted: a float >= 0")
    device = torch.device(device)
    train_tokens = torch.Generator().manual_seed(seed)
    held_out = torch.Generator().manual_seed(seed + 1_000_003)

    def batch(generator):
        ids = torch.randint(0, vocab_size, (batch_size, block_size + 1), generator=generator).to(device)
        return ids[:, :-1], ids[:, 1:]  # [B, T] inputs, [B, T] targets

    def loss_of(x, y):
        logits = model_logits(model, x).float()
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

    was_training = model.training
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    losses = []
    model.train()
    try:
        for step in range(steps):
            loss = loss_of(*batch(train_tokens))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if progress is not None:
                progress(step + 1, losses[-1])
        model.eval()
        with torch.no_grad():
            held = sum(loss_of(*batch(held_out)).item() for _ in range(eval_batches)) / eval_batches
    finally:
        model.train(was_training)
    uniform = math.log(vocab_size)
    return CanaryReport(passed=held >= uniform - margin, loss=held, uniform_loss=uniform, margin=margin, steps=steps,
                        first_train_loss=losses[0], last_train_loss=losses[-1], vocab_size=vocab_size,
                        block_size=block_size, label=label)
