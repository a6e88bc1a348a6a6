"""Deletion curves: remove the top-attributed tokens first and watch the explained logit fall.

For one sequence ``[1, T]``, a position and a target id, a token attribution ``scores [T]``
orders the positions ``<= position`` by descending score. Deleting a token zeroes its row of
the stack input ``x0`` (the graph, positions and structural encoding of the original pass are
held fixed, the same function every attribution method explains). After deleting the top k
tokens, k = 0..n, we record the target logit and probability.

Summary numbers per curve (x = k / n in [0, 1], trapezoid rule):

- ``auc_logit_drop``: area under ``logit(0) - logit(k)`` (higher: the ranking finds the tokens
  the logit depends on sooner, i.e. more faithful);
- ``auc_prob``: area under the target probability (lower is more faithful; the usual deletion AUC).

Example:
    >>> curve = deletion_curve(model, ids, scores, position=10, target=3)    # doctest: +SKIP
    >>> curve["auc_logit_drop"]                                               # doctest: +SKIP
"""
from __future__ import annotations

from typing import Optional

import torch

from .recording import ForwardRecord, check_model, logits_from_stack_input, record_forward


def _trapezoid(values: list) -> float:
    n = len(values) - 1
    if n <= 0:
        return 0.0
    return sum((values[i] + values[i + 1]) / 2 for i in range(n)) / n


@torch.no_grad()
def deletion_curve(model, input_ids: torch.Tensor, scores: torch.Tensor, position: int, target: int,
                   record: Optional[ForwardRecord] = None) -> dict:
    """Deletion curve of one attribution.

    Args:
        model: ``SOSMModel`` in eval mode.
        input_ids: ``[1, T]``.
        scores: ``[T]`` attribution of each position to the target logit (higher first).
        position: the explained position (0..T-1); only positions ``<= position`` are deleted.
        target: the explained token id.
        record: the original pass (recomputed when None).

    Returns:
        ``{"order", "logits", "probs", "auc_logit_drop", "auc_prob"}`` (lists of length n + 1 for the curves).
    """
    check_model(model)
    T = input_ids.shape[1]
    if not isinstance(scores, torch.Tensor) or scores.shape != (T,):
        raise ValueError(f"scores must be a tensor [T={T}], got "
                         f"{tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__}")
    if not 0 <= position < T:
        raise ValueError(f"position={position} is invalid; accepted: 0..{T - 1}")
    record = record or record_forward(model, input_ids)
    n = position + 1
    order = torch.argsort(scores[:n].float(), descending=True, stable=True)
    keep = torch.ones(n + 1, T, 1)
    for k in range(1, n + 1):
        keep[k:, order[k - 1]] = 0  # row k deletes the top k tokens
    logits = logits_from_stack_input(model, record.x0 * keep, record.ctx)[:, position]  # [n + 1, V]
    target_logits = logits[:, target]
    probs = torch.softmax(logits.float(), -1)[:, target]
    drop = (target_logits[0] - target_logits).tolist()
    return {"order": order.tolist(), "logits": target_logits.tolist(), "probs": probs.tolist(),
            "auc_logit_drop": _trapezoid(drop), "auc_prob": _trapezoid(probs.tolist())}


def resample(values: list, points: int = 11) -> list:
    """A curve over k = 0..n resampled at ``points`` evenly spaced fractions (linear interpolation)."""
    n = len(values) - 1
    out = []
    for p in range(points):
        x = p / (points - 1) * n
        lo = min(int(x), n - 1) if n > 0 else 0
        frac = x - lo
        out.append(values[lo] if n == 0 else values[lo] * (1 - frac) + values[lo + 1] * frac)
    return out
