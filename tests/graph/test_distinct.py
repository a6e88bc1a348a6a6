"""distinct_topk: equal to the dense reference when exact, whatever the repetition, window, mode or tie."""
import pytest
import torch

from sosm.graph.distinct import distinct_topk, exact_rows
from sosm.graph.topk import dense_topk


def _case(seed, distinct, nodes, dim=6, zero_rows=0, tied_rows=0):
    gen = torch.Generator().manual_seed(seed)
    rows = torch.nn.functional.normalize(torch.randn(distinct, dim, generator=gen), dim=-1)
    rows[:zero_rows] = 0.0
    if tied_rows:  # rows with equal scores to a common query: same first coordinate, rest zero
        rows[zero_rows:zero_rows + tied_rows] = 0.0
        rows[zero_rows:zero_rows + tied_rows, 0] = torch.linspace(0.5, 1.0, tied_rows)
    skew = torch.rand(distinct, generator=gen) ** 3 + 1e-3  # a few frequent rows, many rare ones
    inverse = torch.multinomial(skew, nodes, replacement=True, generator=gen)
    return rows, inverse


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("window", [0, 1, 3])
@pytest.mark.parametrize("per_row", [2, 5, 64])
def test_exact_mode_equals_dense(causal, window, per_row):
    for seed in range(3):
        rows, inverse = _case(seed, distinct=23, nodes=160, zero_rows=1 + seed % 2, tied_rows=3 * (seed == 2))
        k = 4
        found = distinct_topk(rows, inverse, k, causal=causal, window=window, per_row=per_row, chunk=37)
        idx, val = dense_topk(rows[inverse][None], k, causal=causal, window=window)
        assert torch.equal(found.indices.long(), idx[0]), (seed, (found.indices.long() != idx[0]).nonzero()[:5])
        assert torch.equal(found.scores, val[0])
        assert found.direct + found.listed + found.rescored == inverse.numel()
        some = torch.tensor([0, 5, 77, 159])
        ref_idx, ref_val = exact_rows(rows, inverse, some, k, causal=causal, window=window)
        assert torch.equal(ref_idx, idx[0, some]) and torch.equal(ref_val, val[0, some])


def test_all_distinct_and_all_equal():
    rows = torch.nn.functional.normalize(torch.randn(50, 5, generator=torch.Generator().manual_seed(0)), dim=-1)
    for inverse in (torch.arange(50), torch.zeros(50, dtype=torch.long)):
        found = distinct_topk(rows, inverse, 3, causal=True, window=1, per_row=4)
        idx, _ = dense_topk(rows[inverse][None], 3, causal=True, window=1)
        assert torch.equal(found.indices.long(), idx[0])


def test_approximate_ranking_stays_causal():
    rows, inverse = _case(5, distinct=40, nodes=300)

    def poor_ranking(features, per_row):  # deliberately wrong candidates: every other row, shuffled
        return torch.roll(torch.arange(features.shape[0]), 7)[:, None].repeat(1, 1) * 0 + \
            torch.randperm(features.shape[0], generator=torch.Generator().manual_seed(1))[:per_row][None].repeat(
                features.shape[0], 1)

    found = distinct_topk(rows, inverse, 4, causal=True, window=2, rank_fn=poor_ranking, per_row=6)
    idx = found.indices.long()
    nodes = torch.arange(300)[:, None]
    assert bool(((idx < 0) | (idx <= nodes - 3)).all())  # only earlier positions, window excluded
    assert bool((idx[20:] >= 0).all())


def test_bad_input():
    with pytest.raises(ValueError, match="inverse"):
        distinct_topk(torch.randn(3, 4), torch.tensor([0, 5]), 2)
    with pytest.raises(ValueError, match="k="):
        distinct_topk(torch.randn(3, 4), torch.tensor([0, 1]), 0)


def test_exact_ranking_equals_streaming_topk():
    from sosm.graph.distinct import exact_ranking
    from sosm.graph.topk import streaming_topk

    rows, _ = _case(7, distinct=300, nodes=10, zero_rows=2, tied_rows=4)
    rows = torch.cat([rows, rows[10:30]])  # duplicated rows tie exactly
    got = exact_ranking(rows, 9, block=64)
    want = streaming_topk(rows[None], 8, causal=False, window=0)[0][0]
    assert torch.equal(got, want)


def test_hnsw_ranking_is_deterministic_and_finds_the_exact_lists():
    from sosm.graph.distinct import exact_ranking
    from sosm.memory.ann import hnsw_ranking

    rows, inverse = _case(11, distinct=500, nodes=3000, dim=8)
    first, second = hnsw_ranking(rows, 16), hnsw_ranking(rows, 16)
    assert torch.equal(first, second)
    exact = exact_ranking(rows, 16)
    found = sum(len(set(a) & set(b)) for a, b in zip(first.tolist(), exact.tolist()))
    assert found / exact.numel() >= 0.95
    approx = distinct_topk(rows, inverse, 5, causal=True, window=1, rank_fn=hnsw_ranking, per_row=16)
    truth, _ = dense_topk(rows[inverse][None], 5, causal=True, window=1)
    hits = (approx.indices.long()[:, :, None] == truth[0][:, None, :]).any(1).float().mean()
    assert hits >= 0.95
