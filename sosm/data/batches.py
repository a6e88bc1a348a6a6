"""Train/val split and a seeded, resumable random-window batch sampler (nanoGPT style).

Example:
    >>> import torch
    >>> ids = torch.arange(1000)
    >>> data = TokenSplits.from_ids(ids)              # 90 % train, 10 % val
    >>> g = torch.Generator().manual_seed(0)
    >>> batch = data.get_batch("train", 4, 16, g)
    >>> batch.input_ids.shape, batch.targets.shape
    (torch.Size([4, 16]), torch.Size([4, 16]))

Exact resume: every batch is a pure function of the generator state, so saving
``generator.get_state()`` (or :meth:`BatchSampler.state_dict`) with a checkpoint and
restoring it replays the same batches from there on.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence, Union

import torch

SPLITS = ("train", "val")


class Batch(NamedTuple):
    """``input_ids`` and ``targets``, both ``LongTensor[B, T]``; ``targets[:, t] = input_ids[:, t + 1]`` in the text."""

    input_ids: torch.Tensor
    targets: torch.Tensor


def split_ids(ids: Union[torch.Tensor, Sequence[int]], val_fraction: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a token sequence into the first ``1 - val_fraction`` (train) and the rest (val).

    The split is contiguous (like nanoGPT's ``shakespeare_char``), not shuffled, so no
    validation window overlaps a training window.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction!r} is invalid; accepted: a float in (0, 1)")
    ids = torch.as_tensor(ids, dtype=torch.long)
    if ids.dim() != 1:
        raise ValueError(f"ids must be 1-D, got shape {tuple(ids.shape)}")
    n_train = int(len(ids) * (1.0 - val_fraction))
    if n_train < 2 or len(ids) - n_train < 2:
        raise ValueError(f"ids has {len(ids)} tokens: too few to split with val_fraction={val_fraction}")
    return ids[:n_train], ids[n_train:]


def get_batch(data: torch.Tensor, batch_size: int, block_size: int, generator: torch.Generator) -> Batch:
    """``batch_size`` random windows of ``block_size`` tokens and their next-token targets.

    Args:
        data: ``LongTensor[N]`` token ids (one split).
        batch_size: B >= 1.
        block_size: T, 1 <= T <= N - 1.
        generator: a seeded CPU ``torch.Generator``; it is the only source of randomness.

    Returns:
        :class:`Batch` with ``input_ids`` and ``targets`` of shape ``[B, T]`` on the CPU.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is invalid; accepted: an int >= 1")
    if not isinstance(block_size, int) or not 1 <= block_size <= len(data) - 1:
        raise ValueError(f"block_size={block_size!r} is invalid; accepted: an int in [1, {len(data) - 1}] "
                         f"for a split of {len(data)} tokens")
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)  # (B,)
    offsets = torch.arange(block_size)                                                   # (T,)
    index = starts[:, None] + offsets[None, :]                                           # (B, T)
    return Batch(data[index], data[index + 1])


@dataclass
class TokenSplits:
    """A token sequence split into ``train`` and ``val`` (see :func:`split_ids`)."""

    train: torch.Tensor
    val: torch.Tensor

    @classmethod
    def from_ids(cls, ids, val_fraction: float = 0.1) -> "TokenSplits":
        return cls(*split_ids(ids, val_fraction))

    def split(self, name: str) -> torch.Tensor:
        if name not in SPLITS:
            raise ValueError(f"split={name!r} is invalid; accepted: one of {SPLITS}")
        return self.train if name == "train" else self.val

    def get_batch(self, split: str, batch_size: int, block_size: int, generator: torch.Generator) -> Batch:
        """:func:`get_batch` on the named split (``"train"`` or ``"val"``)."""
        return get_batch(self.split(split), batch_size, block_size, generator)


class BatchSampler:
    """An endless, resumable stream of batches from one split.

    ``state_dict()`` holds the generator state and the number of batches drawn;
    ``load_state_dict`` restores both, after which the stream continues exactly where
    the saved one was.

    Example:
        >>> import torch
        >>> s = BatchSampler(torch.arange(500), batch_size=2, block_size=8, seed=1)
        >>> _ = next(s); state = s.state_dict(); a = next(s)
        >>> s2 = BatchSampler(torch.arange(500), 2, 8, seed=99); s2.load_state_dict(state)
        >>> torch.equal(next(s2).input_ids, a.input_ids)
        True
    """

    def __init__(self, data: torch.Tensor, batch_size: int, block_size: int, seed: int = 0):
        self.data = torch.as_tensor(data, dtype=torch.long)
        self.batch_size, self.block_size = batch_size, block_size
        self.generator = torch.Generator().manual_seed(seed)
        self.step = 0
        get_batch(self.data[: block_size + 1], 1, block_size, torch.Generator())  # validate sizes early
        if len(self.data) <= block_size:
            raise ValueError(f"block_size={block_size} needs more than {block_size} tokens, got {len(self.data)}")

    def __iter__(self) -> "BatchSampler":
        return self

    def __next__(self) -> Batch:
        batch = get_batch(self.data, self.batch_size, self.block_size, self.generator)
        self.step += 1
        return batch

    def state_dict(self) -> dict:
        return {"generator_state": self.generator.get_state(), "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator_state"])
        self.step = int(state["step"])
