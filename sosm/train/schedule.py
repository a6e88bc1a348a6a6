"""Learning-rate schedule: linear warmup, then cosine decay to a floor.

Example:
    >>> [round(lr_at(s, lr=1.0, min_lr=0.1, warmup_steps=2, decay_steps=6), 4) for s in range(8)]
    [0.5, 1.0, 1.0, 0.8682, 0.55, 0.2318, 0.1, 0.1]
"""
from __future__ import annotations

import math


def lr_at(step: int, *, lr: float, min_lr: float, warmup_steps: int, decay_steps: int) -> float:
    """Learning rate of optimiser step ``step`` (0-based).

    - ``step < warmup_steps``: ``lr * (step + 1) / warmup_steps`` (reaches ``lr`` at the last warmup step);
    - ``warmup_steps <= step < decay_steps``: half a cosine from ``lr`` down to ``min_lr``;
    - ``step >= decay_steps``: ``min_lr``.

    Args:
        step: an int >= 0.
        lr: peak rate (> 0); min_lr: floor (0 <= min_lr <= lr).
        warmup_steps: an int >= 0; decay_steps: an int >= 1 (if <= warmup_steps the rate drops to
            ``min_lr`` right after warmup).
    """
    if not isinstance(step, int) or step < 0:
        raise ValueError(f"step={step!r} is invalid; accepted: an int >= 0")
    if not lr > 0 or not 0 <= min_lr <= lr:
        raise ValueError(f"lr={lr!r}, min_lr={min_lr!r} are invalid; accepted: lr > 0 and 0 <= min_lr <= lr")
    if not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(f"warmup_steps={warmup_steps!r} is invalid; accepted: an int >= 0")
    if not isinstance(decay_steps, int) or decay_steps < 1:
        raise ValueError(f"decay_steps={decay_steps!r} is invalid; accepted: an int >= 1")
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if step >= decay_steps:
        return min_lr
    progress = (step - warmup_steps) / (decay_steps - warmup_steps)  # in [0, 1)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)
