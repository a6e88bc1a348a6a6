"""Mask-predict: the masking of the training objective and iterative-refinement decoding of bidirectional models.

A bidirectional model (``SOSMConfig.causal=False``) is trained to predict masked tokens from
everything else (``TrainConfig.objective="mask_predict"``). The vocabulary has one more id than
the tokenizer, the ``[MASK]`` id (the last one: ``mask_id = tokenizer.vocab_size``).

- :func:`sample_ratios`: per sequence a masking ratio ``r ~ U(0, 1]`` (``1 - U[0, 1)``): every
  share from a single token to the whole sequence is trained, which is what decoding needs — it
  starts from an all-masked span and unmasks it step by step (CMLM training, Ghazvininejad et al.
  2019, samples the number of masks uniformly in the same way).
- :func:`mask_tokens`: ``ceil(r · T)`` positions per sequence (at least one), chosen uniformly
  without replacement, replaced by ``mask_id``; the loss is taken on those positions only
  (:func:`masked_cross_entropy`).
- :func:`mask_predict_decode`: Mask-Predict (Ghazvininejad et al. 2019, "Mask-Predict: Parallel
  Decoding of Conditional Masked Language Models"): predict every masked position; then for
  ``t = 1 .. N-1`` re-mask the ``floor(n · (N - t) / N)`` least confident of the ``n`` positions
  that started masked and predict those again, each keeping its probability from the pass that
  chose it. Unmasked (given) tokens are never changed (infilling). Greedy by default
  (deterministic); with ``temperature > 0`` tokens are sampled from a seeded generator.

Example:
    >>> import torch
    >>> from sosm.model import SOSMConfig, SOSMModel
    >>> model = SOSMModel(SOSMConfig(model="transformer", causal=False, d_model=32, n_heads=2, n_layers=1,
    ...                              vocab_size=17, max_seq_len=16)).eval()
    >>> ids = torch.tensor([[3, 4, 16, 16, 16, 5]])                  # 16: the [MASK] id
    >>> out = mask_predict_decode(model, ids, mask_id=16, iterations=3)
    >>> out[0, [0, 1, 5]].tolist(), bool((out != 16).all())
    ([3, 4, 5], True)
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
import torch.nn.functional as F


def _logits(model, input_ids: torch.Tensor) -> torch.Tensor:
    out = model(input_ids)
    return (out[0] if isinstance(out, (tuple, list)) else out).float()  # [B, T, V]


def sample_ratios(batch_size: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Masking ratios ``[B]`` drawn from ``U(0, 1]`` (``1 - U[0, 1)``: never 0, sometimes the whole sequence)."""
    return 1.0 - torch.rand(batch_size, generator=generator)


def mask_tokens(input_ids: torch.Tensor, ratios: Union[float, torch.Tensor], mask_id: int,
                generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace ``ceil(r · T)`` uniformly chosen positions of each row by ``mask_id``.

    Args:
        input_ids: ``[B, T]`` long ids (not modified).
        ratios: a float in (0, 1] for every row, or ``[B]`` per row.
        mask_id: the ``[MASK]`` id.
        generator: a CPU ``torch.Generator`` choosing the positions (None: the global one).

    Returns:
        ``(masked_ids [B, T], mask [B, T] bool)``; every row has at least one masked position.
    """
    B, T = input_ids.shape
    ratios = torch.as_tensor(ratios, dtype=torch.float64).expand(B)
    if not bool(((ratios > 0) & (ratios <= 1)).all()):
        raise ValueError(f"masking ratios must lie in (0, 1], got {ratios.tolist()}")
    counts = torch.ceil(ratios * T).long().clamp(1, T)  # [B]
    ranks = torch.rand(B, T, generator=generator).argsort(dim=1).argsort(dim=1)  # a random rank per position
    mask = (ranks < counts[:, None]).to(input_ids.device)
    return input_ids.masked_fill(mask, mask_id), mask


def masked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the masked positions only: ``logits [B, T, V]``, ``targets``/``mask [B, T]``."""
    return F.cross_entropy(logits[mask].float(), targets[mask])


@torch.no_grad()
def mask_predict_decode(model, input_ids: torch.Tensor, mask_id: int, iterations: int = 10,
                        temperature: float = 0.0, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Fill every ``mask_id`` position of ``input_ids [B, T]`` by Mask-Predict iterative refinement.

    Args:
        model: a bidirectional model, ``model(ids) -> logits [B, T, V]`` (or a tuple starting with them).
        input_ids: ``[B, T]`` ids; positions equal to ``mask_id`` are to be predicted, the others are kept.
        mask_id: the ``[MASK]`` id (never predicted).
        iterations: N >= 1 refinement passes.
        temperature: 0 (default): argmax, deterministic; > 0: sample at this temperature from ``generator``.
        generator: the random generator of sampling (on the ids' device).

    Returns:
        ``[B, T]`` ids with no ``mask_id`` left; the given tokens unchanged.
    """
    if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 1:
        raise ValueError(f"iterations={iterations!r} is invalid; accepted: an int >= 1")
    if not temperature >= 0:
        raise ValueError(f"temperature={temperature!r} is invalid; accepted: a float >= 0 (0: greedy)")
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "causal", False):
        raise ValueError("mask-predict decoding needs a bidirectional model (SOSMConfig.causal=False); this model is "
                         "causal: it cannot read the tokens after a masked position")
    ids = input_ids.clone()
    start = ids == mask_id  # [B, T]: the positions to fill
    counts = start.sum(1)  # [B]
    confidence = torch.full(ids.shape, math.inf, device=ids.device)  # given tokens: never re-masked
    remask = start
    for t in range(iterations):
        logits = _logits(model, ids)
        logits[..., mask_id] = -math.inf
        probs = torch.softmax(logits / temperature if temperature > 0 else logits, dim=-1)  # [B, T, V]
        if temperature > 0:
            chosen = torch.multinomial(probs.flatten(0, 1), 1, generator=generator).view(ids.shape)
        else:
            chosen = probs.argmax(-1)
        chosen_p = probs.gather(-1, chosen[..., None])[..., 0]
        ids = torch.where(remask, chosen, ids)
        confidence = torch.where(remask, chosen_p, confidence)
        if t == iterations - 1:
            break
        n = torch.div(counts * (iterations - 1 - t), iterations, rounding_mode="floor")  # [B]: n·(N - t')/N, t' = t+1
        order = confidence.masked_fill(~start, math.inf).argsort(dim=1, stable=True)  # least confident first
        ranks = order.argsort(dim=1)
        remask = start & (ranks < n[:, None])
        if not bool(remask.any()):
            break
        ids = ids.masked_fill(remask, mask_id)
    return ids
