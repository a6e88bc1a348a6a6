"""Losses over whole texts, the causality leak check and the i.i.d.-token canary.

All work on any ``torch.nn.Module`` whose forward takes ``input_ids [B, T]`` (long) and returns
logits ``[B, T, V]``, or a tuple/list whose first item is the logits (as ``SOSMModel`` does), so
they apply equally to our models, baselines and test doubles.

- :mod:`~sosm.evaluate.loss`: loss, perplexity and bits per byte of a token stream, every token
  scored once (:func:`evaluate_ids`, :func:`evaluate_text`, :func:`evaluate_tokens`).
- :mod:`~sosm.evaluate.leak`: :func:`leak_check` (docs/ARCHITECTURE.md, invariant 1): resample the
  future of every cut position and every other row of the batch; nothing before may move, bit for bit.
- :mod:`~sosm.evaluate.canary`: :func:`canary_check`: a short run on uniform i.i.d. tokens must stay at ln V.

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
from .canary import CanaryReport, canary_check
from .leak import LeakReport, leak_check
from .loss import LN2, EvalResult, evaluate_ids, evaluate_text, evaluate_tokens, model_logits

__all__ = ["CanaryReport", "EvalResult", "LN2", "LeakReport", "canary_check", "evaluate_ids", "evaluate_text",
           "evaluate_tokens", "leak_check", "model_logits"]
