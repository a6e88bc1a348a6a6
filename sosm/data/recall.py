"""Synthetic recall tasks: MQAR (Zoology), induction-head copy and selective copying (Mamba).

Every generator returns a :class:`RecallData` of ``inputs`` and ``targets``, both
``LongTensor[N, T]``, with ``targets == -100`` (``IGNORE_INDEX``, ignored by the loss and the
accuracy) everywhere except the positions that must produce an answer. Targets are aligned with
the inputs as in a language model: ``targets[:, t]`` is what the model must output after reading
``inputs[:, : t + 1]``. Everything is a pure function of the seed (numpy ``default_rng``).

- **MQAR** (multi-query associative recall, Arora et al. 2023, Zoology's ``multiquery_ar``):
  keys from ``1 .. V/2 - 1``, values from ``V/2 .. V - 1``, each drawn without replacement per
  row; the ``kv`` pairs ``k1 v1 k2 v2 ...`` fill the first ``2 kv`` positions. The rest is
  ``(T - 2 kv) / 2`` slots of two tokens; key i is queried in slot ``g_i`` (position
  ``2 kv + 2 g_i``), the slots drawn without replacement with ``P(g) ∝ (g + 1) ** (power_a - 1)``
  (``power_a = 0.01``: near queries are likelier). The target at a query is the value of its key.
  Every other token is filler: uniform over the whole vocabulary with ``random_non_queries``
  (Zoology's default) or 0. Zoology's figure-2 configs set ``random_non_queries=False``.
- **Induction head** (H3 / Mamba paper): ``T - 1`` uniform tokens over ``0 .. V - 2``, the special
  token ``V - 1`` at a random position p in ``0 .. T - 3`` followed by the answer token, and the
  special token again at ``T - 1``, whose target is the answer (the token after p).
- **Selective copying** (Mamba paper, S4's variable copying): ``M`` data tokens from ``2 .. V - 1``
  at random sorted positions among ``T - M`` noise tokens 0, then ``M`` markers 1; the target
  at the i-th marker is the i-th data token (the data tokens in order).

Train and test sets (:func:`make_recall_splits`) come from independent streams of one seed
(``default_rng([seed, 0])`` and ``default_rng([seed, 1, ...])``); then every test row whose
inputs equal a training row is dropped and redrawn, so the sets are disjoint by construction
(``RecallSplits.overlap()`` counts shared rows: 0). Training batches drawn fresh each step
(:meth:`RecallSplits.fresh_batch`) are filtered against the test rows the same way.

Example:
    >>> data = mqar(num_examples=1, seq_len=16, num_kv_pairs=2, vocab_size=12, seed=0,
    ...             random_non_queries=False)
    >>> print(format_example(data, 0))
    inputs : 5 9 4 7 4 0 5 0 0 0 0 0 0 0 0 0
    targets: . . . . 7 . 9 . . . . . . . . .
    >>> config = RecallTaskConfig(task="mqar", seq_len=64, num_kv_pairs=4, vocab_size=512,
    ...                           num_train=8, num_test=4)
    >>> splits = make_recall_splits(config)
    >>> splits.train.inputs.shape, splits.test.targets.shape, splits.overlap()
    (torch.Size([8, 64]), torch.Size([4, 64]), 0)
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import NamedTuple, Optional

import numpy as np
import torch

IGNORE_INDEX = -100  # target of every position that needs no answer (cross-entropy's ignore_index)
TASKS = ("mqar", "induction_head", "selective_copying")


class RecallData(NamedTuple):
    """``inputs`` and ``targets``, ``LongTensor[N, T]``; ``targets`` is ``IGNORE_INDEX`` off the answer positions."""

    inputs: torch.Tensor
    targets: torch.Tensor


def _need(cond: bool, name: str, value, accepted: str) -> None:
    if not cond:
        raise ValueError(f"{name}={value!r} is invalid; accepted: {accepted}")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _sample_distinct(rng: np.random.Generator, low: int, high: int, n: int, k: int) -> np.ndarray:
    """``[n, k]`` ints from ``low .. high - 1``, distinct within each row (uniform, by redrawing clashing rows)."""
    out = rng.integers(low, high, size=(n, k))
    while True:
        ordered = np.sort(out, axis=1)
        clash = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)  # [n]
        if not clash.any():
            return out
        out[clash] = rng.integers(low, high, size=(int(clash.sum()), k))


def power_law_slots(rng: np.random.Generator, n: int, space: int, k: int, power_a: float) -> np.ndarray:
    """``[n, k]`` slots from ``0 .. space - 1`` without replacement, ``P(g) ∝ (g + 1) ** (power_a - 1)``.

    Successive draws without replacement (numpy's ``choice(replace=False, p=p)``, as Zoology),
    done for all rows at once by the Gumbel-top-k trick, which has the same distribution.
    """
    log_p = (power_a - 1.0) * np.log(np.arange(1, space + 1, dtype=np.float64))  # [space]
    scores = log_p[None, :] + rng.gumbel(size=(n, space))                        # [n, space]
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]                      # [n, k] in draw order


def check_mqar_args(seq_len: int, num_kv_pairs: int, vocab_size: int, power_a: float) -> None:
    """Raise ``ValueError`` naming the first MQAR argument out of its accepted range."""
    _need(_is_int(num_kv_pairs) and num_kv_pairs >= 1, "num_kv_pairs", num_kv_pairs, "an int >= 1")
    _need(_is_int(seq_len) and seq_len % 2 == 0 and seq_len >= 4 * num_kv_pairs, "seq_len", seq_len,
          f"an even int >= 4 * num_kv_pairs = {4 * num_kv_pairs} (the pairs plus one query slot per key)")
    _need(_is_int(vocab_size) and vocab_size // 2 - 1 >= num_kv_pairs, "vocab_size", vocab_size,
          f"an int with vocab_size // 2 - 1 >= num_kv_pairs={num_kv_pairs} (enough distinct keys)")
    _need(isinstance(power_a, (int, float)) and not isinstance(power_a, bool) and 0 < power_a <= 1, "power_a",
          power_a, "a float in (0, 1] (1: uniform query slots)")


def mqar(num_examples: int, seq_len: int, num_kv_pairs: int, vocab_size: int = 8192, seed: int = 0,
         power_a: float = 0.01, random_non_queries: bool = True,
         rng: Optional[np.random.Generator] = None) -> RecallData:
    """Multi-query associative recall rows (module docstring for the layout).

    Args:
        num_examples: N >= 1 rows.
        seq_len: T, even, >= 4 * num_kv_pairs.
        num_kv_pairs: key-value pairs per row (>= 1); every key is queried once.
        vocab_size: V >= 2 * num_kv_pairs + 2 (default 8192); keys ``1 .. V/2 - 1``, values ``V/2 .. V - 1``.
        seed: seeds ``numpy.random.default_rng`` (ignored when ``rng`` is given).
        power_a: power-law exponent of the query slots, in (0, 1] (default 0.01, Zoology).
        random_non_queries: filler uniform over ``0 .. V - 1`` (default, Zoology's default) or 0.
        rng: a generator to draw from instead of ``seed``.

    Returns:
        :class:`RecallData` ``[N, T]``; ``num_kv_pairs`` answer positions per row.
    """
    check_mqar_args(seq_len, num_kv_pairs, vocab_size, power_a)
    _need(_is_int(num_examples) and num_examples >= 1, "num_examples", num_examples, "an int >= 1")
    rng = np.random.default_rng(seed) if rng is None else rng
    n, kv, context = num_examples, num_kv_pairs, 2 * num_kv_pairs
    keys = _sample_distinct(rng, 1, vocab_size // 2, n, kv)                   # [N, kv]
    values = _sample_distinct(rng, vocab_size // 2, vocab_size, n, kv)         # [N, kv]
    slots = power_law_slots(rng, n, (seq_len - context) // 2, kv, power_a)     # [N, kv]
    inputs = np.zeros((n, seq_len), dtype=np.int64)
    inputs[:, 0:context:2], inputs[:, 1:context:2] = keys, values
    query_pos = context + 2 * slots                                            # [N, kv]
    np.put_along_axis(inputs, query_pos, keys, axis=1)
    targets = np.full((n, seq_len), IGNORE_INDEX, dtype=np.int64)
    np.put_along_axis(targets, query_pos, values, axis=1)
    filler = inputs == 0                                                       # keys start at 1: 0 is free
    if random_non_queries:
        inputs[filler] = rng.integers(0, vocab_size, size=int(filler.sum()))
    return RecallData(torch.from_numpy(inputs), torch.from_numpy(targets))


def induction_head(num_examples: int, seq_len: int, vocab_size: int = 16, seed: int = 0,
                   rng: Optional[np.random.Generator] = None) -> RecallData:
    """Induction-head copy rows: after the second special token, output the token that followed the first.

    Args:
        num_examples: N >= 1.
        seq_len: T >= 4.
        vocab_size: V >= 3 (default 16, the Mamba paper); token ``V - 1`` is the special token.
        seed / rng: as :func:`mqar`.

    Returns:
        :class:`RecallData` ``[N, T]``; one answer position per row (``T - 1``).
    """
    _need(_is_int(num_examples) and num_examples >= 1, "num_examples", num_examples, "an int >= 1")
    _need(_is_int(seq_len) and seq_len >= 4, "seq_len", seq_len, "an int >= 4")
    _need(_is_int(vocab_size) and vocab_size >= 3, "vocab_size", vocab_size, "an int >= 3")
    rng = np.random.default_rng(seed) if rng is None else rng
    special, rows = vocab_size - 1, np.arange(num_examples)
    inputs = rng.integers(0, special, size=(num_examples, seq_len))            # [N, T], no special token
    first = rng.integers(0, seq_len - 2, size=num_examples)                    # [N] position p of the first special
    inputs[rows, first] = special
    inputs[:, -1] = special
    targets = np.full((num_examples, seq_len), IGNORE_INDEX, dtype=np.int64)
    targets[:, -1] = inputs[rows, first + 1]
    return RecallData(torch.from_numpy(inputs), torch.from_numpy(targets))


def selective_copying(num_examples: int, seq_len: int, num_tokens: int = 16, vocab_size: int = 16,
                      seed: int = 0, rng: Optional[np.random.Generator] = None) -> RecallData:
    """Selective-copying rows: ``num_tokens`` data tokens scattered in noise, then that many markers.

    Args:
        num_examples: N >= 1.
        seq_len: T >= 2 * num_tokens (the data tokens, the markers; the rest is noise).
        num_tokens: M >= 1 data tokens to copy (default 16, the Mamba paper).
        vocab_size: V >= 3 (default 16): 0 noise, 1 marker, data tokens ``2 .. V - 1``.
        seed / rng: as :func:`mqar`.

    Returns:
        :class:`RecallData` ``[N, T]``; M answer positions per row (the last M).
    """
    _need(_is_int(num_examples) and num_examples >= 1, "num_examples", num_examples, "an int >= 1")
    _need(_is_int(num_tokens) and num_tokens >= 1, "num_tokens", num_tokens, "an int >= 1")
    _need(_is_int(seq_len) and seq_len >= 2 * num_tokens, "seq_len", seq_len,
          f"an int >= 2 * num_tokens = {2 * num_tokens}")
    _need(_is_int(vocab_size) and vocab_size >= 3, "vocab_size", vocab_size, "an int >= 3")
    rng = np.random.default_rng(seed) if rng is None else rng
    n, m, body = num_examples, num_tokens, seq_len - num_tokens
    data = rng.integers(2, vocab_size, size=(n, m))                              # [N, M]
    positions = np.sort(np.argsort(rng.random((n, body)), axis=1)[:, :m], axis=1)  # [N, M] distinct, ascending
    inputs = np.zeros((n, seq_len), dtype=np.int64)
    np.put_along_axis(inputs, positions, data, axis=1)
    inputs[:, body:] = 1
    targets = np.full((n, seq_len), IGNORE_INDEX, dtype=np.int64)
    targets[:, body:] = data
    return RecallData(torch.from_numpy(inputs), torch.from_numpy(targets))


@dataclass
class RecallTaskConfig:
    """One synthetic recall task and the sizes of its train and test sets (validated on construction)."""

    task: str = "mqar"                  # "mqar" | "induction_head" | "selective_copying"
    seq_len: int = 64                   # T: input length
    num_kv_pairs: int = 4               # mqar: key-value pairs (and queries) per row
    vocab_size: int = 8192              # V (Zoology: 8192; the Mamba paper's copy tasks: 16)
    power_a: float = 0.01               # mqar: power law of the query slots, in (0, 1]
    random_non_queries: bool = True     # mqar: filler uniform over the vocabulary (True) or 0
    num_tokens: int = 16                # selective_copying: data tokens to copy
    num_train: int = 100_000            # rows of the fixed training set (Zoology: 100k)
    num_test: int = 3_000               # rows of the held-out test set (Zoology: 3k)
    seed: int = 0                       # data seed: train and test streams derive from it

    def __post_init__(self):
        self.validate()

    def validate(self) -> "RecallTaskConfig":
        _need(self.task in TASKS, "task", self.task, f"one of {TASKS}")
        _need(_is_int(self.num_train) and self.num_train >= 1, "num_train", self.num_train, "an int >= 1")
        _need(_is_int(self.num_test) and self.num_test >= 1, "num_test", self.num_test, "an int >= 1")
        _need(_is_int(self.seed) and self.seed >= 0, "seed", self.seed, "an int >= 0")
        _need(isinstance(self.random_non_queries, bool), "random_non_queries", self.random_non_queries,
              "true or false")
        self.generate(1, np.random.default_rng(0))  # the generator checks its own arguments
        return self

    def generate(self, num_examples: int, rng: np.random.Generator) -> RecallData:
        """``num_examples`` rows of this task drawn from ``rng``."""
        if self.task == "mqar":
            return mqar(num_examples, self.seq_len, self.num_kv_pairs, self.vocab_size, power_a=self.power_a,
                        random_non_queries=self.random_non_queries, rng=rng)
        if self.task == "induction_head":
            return induction_head(num_examples, self.seq_len, self.vocab_size, rng=rng)
        return selective_copying(num_examples, self.seq_len, self.num_tokens, self.vocab_size, rng=rng)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "RecallTaskConfig":
        """Build from a dict; unknown keys raise ``ValueError`` listing the valid ones."""
        valid = sorted(f.name for f in fields(cls))
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ValueError(f"RecallTaskConfig keys {unknown} are unknown; valid keys: {valid}")
        return cls(**data)


def row_hashes(inputs: torch.Tensor) -> list:
    """One digest per row of ``inputs [N, T]`` (blake2b of the int64 bytes), for set membership."""
    array = np.ascontiguousarray(inputs.numpy().astype(np.int64))
    return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in array]


def _keep_rows(data: RecallData, keep: np.ndarray) -> RecallData:
    index = torch.from_numpy(np.flatnonzero(keep))
    return RecallData(data.inputs[index], data.targets[index])


def _draw_excluding(config: RecallTaskConfig, count: int, rng: np.random.Generator, exclude: set) -> RecallData:
    """``count`` rows from ``rng`` whose inputs are not in ``exclude`` (rows that are get redrawn)."""
    parts, have, barren = [], 0, 0
    while have < count:
        data = config.generate(count - have, rng)
        keep = np.array([h not in exclude for h in row_hashes(data.inputs)])
        parts.append(_keep_rows(data, keep))
        have += int(keep.sum())
        barren = 0 if keep.any() else barren + 1
        if barren == 100:
            raise ValueError(f"cannot draw rows of {config.task} (seq_len={config.seq_len}, vocab_size="
                             f"{config.vocab_size}) outside the {len(exclude)} excluded ones: the task has too few "
                             f"distinct rows; accepted: a larger seq_len or vocab_size, or a smaller num_train")
    return RecallData(torch.cat([p.inputs for p in parts]), torch.cat([p.targets for p in parts]))


class RecallSplits:
    """A fixed training set and a disjoint test set of one :class:`RecallTaskConfig` (see the module docstring).

    Attributes:
        config: the task.
        train, test: :class:`RecallData` of ``num_train`` / ``num_test`` rows.
    """

    def __init__(self, config: RecallTaskConfig, train: RecallData, test: RecallData):
        self.config, self.train, self.test = config, train, test
        self._test_hashes = set(row_hashes(test.inputs))

    def overlap(self) -> int:
        """Number of test rows whose inputs equal a training row (0 by construction)."""
        return sum(h in self._test_hashes for h in row_hashes(self.train.inputs))

    def fresh_batch(self, batch_size: int, rng: np.random.Generator) -> RecallData:
        """``batch_size`` newly drawn training rows, none equal to a test row."""
        return _draw_excluding(self.config, batch_size, rng, self._test_hashes)

    def fingerprint(self) -> str:
        """Short digest of the config and the test inputs (for result files)."""
        digest = hashlib.blake2b(json.dumps(self.config.to_dict(), sort_keys=True).encode(), digest_size=8)
        digest.update(self.test.inputs.numpy().tobytes())
        return digest.hexdigest()


def make_recall_splits(config: RecallTaskConfig) -> RecallSplits:
    """Training set from ``default_rng([seed, 0])``; test set from ``default_rng([seed, 1])`` minus training rows.

    Example:
        >>> splits = make_recall_splits(RecallTaskConfig(task="induction_head", seq_len=32, vocab_size=16,
        ...                                               num_train=64, num_test=16))
        >>> splits.overlap()
        0
    """
    if not isinstance(config, RecallTaskConfig):
        raise TypeError(f"config must be a RecallTaskConfig, got {type(config).__name__}")
    train = config.generate(config.num_train, np.random.default_rng([config.seed, 0]))
    test = _draw_excluding(config, config.num_test, np.random.default_rng([config.seed, 1]),
                           set(row_hashes(train.inputs)))
    return RecallSplits(config, train, test)


def format_example(data: RecallData, row: int = 0) -> str:
    """Two aligned lines, inputs and targets of one row (``.`` for ignored targets)."""
    inputs, targets = data.inputs[row].tolist(), data.targets[row].tolist()
    cells = [(str(i), "." if t == IGNORE_INDEX else str(t)) for i, t in zip(inputs, targets)]
    width = [max(len(a), len(b)) for a, b in cells]
    return ("inputs : " + " ".join(a.rjust(w) for (a, _), w in zip(cells, width)) + "\n"
            + "targets: " + " ".join(b.rjust(w) for (_, b), w in zip(cells, width)))


def answer_sources(inputs: torch.Tensor, targets: torch.Tensor) -> tuple:
    """For every answer position, where its key occurred earlier and where the answer sits after it.

    The key is the token at the answer position (the query); its earlier occurrence is the first
    position before it holding the same token (MQAR: the key in the pair section; induction head:
    the first special token). Selective copying has no key (its queries are markers, which match
    each other): callers leave it out.

    Args:
        inputs, targets: ``[N, T]``.

    Returns:
        ``(rows [A], query_pos [A], key_pos [A], value_pos [A])`` long tensors over the A answer
        positions; ``key_pos = -1`` where the query token has no earlier occurrence, and then
        ``value_pos = -1`` too.
    """
    rows, query = (targets != IGNORE_INDEX).nonzero(as_tuple=True)             # [A] each
    T = inputs.shape[1]
    same = inputs[rows] == inputs[rows, query][:, None]                        # [A, T]
    earlier = same & (torch.arange(T)[None, :] < query[:, None])
    found = earlier.any(dim=1)
    key_pos = torch.where(found, earlier.int().argmax(dim=1), torch.full_like(query, -1))
    value_pos = torch.where(found, key_pos + 1, key_pos)
    return rows, query, key_pos, value_pos
