"""Synthetic recall tasks (sosm.data.recall): layout, determinism, disjoint splits, power law, bad arguments."""
from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch

import sosm.data.recall as recall_module
from sosm.data import (IGNORE_INDEX, RecallTaskConfig, answer_sources, induction_head, make_recall_splits, mqar,
                       selective_copying)


def test_module_doctest_runs():
    result = doctest.testmod(recall_module)
    assert result.attempted >= 5 and result.failed == 0


@pytest.mark.parametrize("random_non_queries", [True, False])
def test_mqar_layout(random_non_queries):
    V, T, kv = 512, 64, 4
    data = mqar(200, T, kv, V, seed=3, random_non_queries=random_non_queries)
    x, y = data.inputs, data.targets
    assert x.shape == y.shape == (200, T) and x.dtype == y.dtype == torch.long
    assert int(x.min()) >= 0 and int(x.max()) < V
    keys, values = x[:, 0:2 * kv:2], x[:, 1:2 * kv:2]
    assert bool(((keys >= 1) & (keys < V // 2)).all()) and bool(((values >= V // 2) & (values < V)).all())
    assert all(len(set(row)) == kv for row in keys.tolist()) and all(len(set(row)) == kv for row in values.tolist())
    answer = y != IGNORE_INDEX
    assert bool((answer.sum(1) == kv).all())
    assert not bool(answer[:, :2 * kv].any())                       # no answer inside the pair section
    rows, cols = answer.nonzero(as_tuple=True)
    assert bool(((cols - 2 * kv) % 2 == 0).all())                   # queries sit at the start of a slot
    for r, c in zip(rows.tolist(), cols.tolist()):                  # the answer is the value of the queried key
        key = int(x[r, c])
        i = keys[r].tolist().index(key)
        assert int(y[r, c]) == int(values[r, i])
    if not random_non_queries:                                      # filler is 0, queries are the only tokens
        assert torch.equal((x[:, 2 * kv:] != 0), answer[:, 2 * kv:])
    else:                                                           # filler varies and reaches both halves
        filler = x[:, 2 * kv:][~answer[:, 2 * kv:]]
        assert int(filler.min()) < V // 2 <= int(filler.max()) and filler.unique().numel() > V // 2


def test_mqar_power_law_placement():
    T, space = 64, 30
    slots = (mqar(20_000, T, 2, 512, seed=1, power_a=0.01).targets[:, 4:] != IGNORE_INDEX).nonzero()[:, 1] // 2
    first = (mqar(20_000, T, 1, 512, seed=2, power_a=0.01).targets[:, 2:] != IGNORE_INDEX).nonzero()[:, 1] // 2
    p = np.arange(1, 32, dtype=float) ** -0.99
    p /= p.sum()
    freq = np.bincount(first.numpy(), minlength=31) / 20_000        # one key: the slot law itself
    assert np.abs(freq - p).max() < 0.01
    assert abs(freq[0] / freq[1] - 2 ** 0.99) < 0.15 and abs(freq[0] / freq[3] - 4 ** 0.99) < 0.4
    uniform = (mqar(20_000, T, 2, 512, seed=1, power_a=1.0).targets[:, 4:] != IGNORE_INDEX).nonzero()[:, 1] // 2
    assert int(slots.max()) < space and float(slots.float().mean()) < 0.6 * float(uniform.float().mean())
    counts = np.bincount(uniform.numpy(), minlength=space) / 40_000
    assert np.abs(counts - 1 / space).max() < 0.01                  # power_a = 1: uniform slots


def test_determinism_by_seed():
    a, b, c = (mqar(50, 64, 4, 8192, seed=s) for s in (7, 7, 8))
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.inputs, c.inputs)
    config = RecallTaskConfig(seq_len=64, num_kv_pairs=4, vocab_size=512, num_train=40, num_test=20, seed=5)
    s1, s2 = make_recall_splits(config), make_recall_splits(config)
    assert torch.equal(s1.train.inputs, s2.train.inputs) and torch.equal(s1.test.targets, s2.test.targets)
    assert s1.fingerprint() == s2.fingerprint()
    r1, r2 = np.random.default_rng(9), np.random.default_rng(9)
    assert torch.equal(s1.fresh_batch(8, r1).inputs, s2.fresh_batch(8, r2).inputs)


def test_train_test_disjoint_where_collisions_are_likely():
    # induction head with T=4, V=3 has only 8 distinct rows: independent draws collide all the time
    config = RecallTaskConfig(task="induction_head", seq_len=4, vocab_size=3, num_train=3, num_test=4, seed=0)
    splits = make_recall_splits(config)
    assert len(splits.test.inputs) == 4 and splits.overlap() == 0
    train = {tuple(r) for r in splits.train.inputs.tolist()}
    assert not train & {tuple(r) for r in splits.test.inputs.tolist()}
    fresh = splits.fresh_batch(64, np.random.default_rng(0))
    assert not {tuple(r) for r in fresh.inputs.tolist()} & {tuple(r) for r in splits.test.inputs.tolist()}
    with pytest.raises(ValueError, match="too few distinct rows"):
        make_recall_splits(RecallTaskConfig(task="induction_head", seq_len=4, vocab_size=3, num_train=400, num_test=4))


def test_induction_head_layout():
    V, T = 16, 32
    x, y = induction_head(300, T, V, seed=0)
    special = x == V - 1
    assert bool((special.sum(1) == 2).all()) and bool(special[:, -1].all()) and not bool(special[:, -2].any())
    first = special.int().argmax(1)
    assert torch.equal(y[:, -1], x[torch.arange(300), first + 1])
    assert bool((y[:, :-1] == IGNORE_INDEX).all())


def test_selective_copying_layout():
    x, y = selective_copying(100, 40, num_tokens=6, vocab_size=10, seed=0)
    body = x[:, :34]
    assert bool((x[:, 34:] == 1).all()) and not bool((body == 1).any())
    assert bool(((body != 0).sum(1) == 6).all())
    data = torch.stack([row[row != 0] for row in body])            # the data tokens in order
    assert torch.equal(y[:, 34:], data) and bool((y[:, :34] == IGNORE_INDEX).all())
    assert int(data.min()) >= 2 and int(data.max()) <= 9


def test_answer_sources_point_at_key_and_value():
    x, y = mqar(30, 64, 4, 512, seed=4)
    rows, query, key_pos, value_pos = answer_sources(x, y)
    assert len(rows) == 120 and bool((key_pos >= 0).all()) and bool((key_pos < 8).all())
    assert torch.equal(x[rows, key_pos], x[rows, query]) and torch.equal(x[rows, value_pos], y[rows, query])
    xi, yi = induction_head(30, 20, 16, seed=1)
    rows, query, key_pos, value_pos = answer_sources(xi, yi)
    assert bool((query == 19).all()) and torch.equal(xi[rows, value_pos], yi[rows, query])


@pytest.mark.parametrize("kwargs, name", [
    (dict(seq_len=14, num_kv_pairs=4), "seq_len"),          # 4 pairs need T >= 16
    (dict(seq_len=63, num_kv_pairs=4), "seq_len"),          # odd
    (dict(num_kv_pairs=0), "num_kv_pairs"),
    (dict(vocab_size=8, num_kv_pairs=4), "vocab_size"),     # 3 keys for 4 pairs
    (dict(power_a=0.0), "power_a"),
    (dict(power_a=1.5), "power_a"),
    (dict(task="copy"), "task"),
    (dict(num_train=0), "num_train"),
    (dict(num_test=-1), "num_test"),
    (dict(seed=-1), "seed"),
    (dict(random_non_queries=1), "random_non_queries"),
    (dict(task="selective_copying", seq_len=20, num_tokens=16), "seq_len"),
    (dict(task="induction_head", vocab_size=2), "vocab_size"),
])
def test_bad_arguments_name_themselves(kwargs, name):
    with pytest.raises(ValueError, match=rf"^{name}=.*accepted"):
        RecallTaskConfig(**kwargs)


def test_from_dict_rejects_unknown_keys():
    assert RecallTaskConfig.from_dict(RecallTaskConfig(seq_len=32).to_dict()).seq_len == 32
    with pytest.raises(ValueError, match="num_pairs.*valid keys"):
        RecallTaskConfig.from_dict({"num_pairs": 4})
