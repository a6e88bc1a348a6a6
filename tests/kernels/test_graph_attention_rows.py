"""The CPU gather path: each query row's numbers are a function of that row's own keys only (issue 12 item 9).

The gather path pads every query's key list to the widest list of the batch; its reductions must not
depend on that width (nor on how the queries are cut into chunks), so that a later token with more
neighbours never changes an earlier output, not even in the last bit.
"""
import pytest
import torch

from sosm.kernels import graph_attention
from sosm.kernels.graph_attention import vectorized


def _graph(seq_len, narrow_until, later_width, seed=0):
    """Causal neighbour lists: rows < narrow_until get up to 3 random earlier keys, later rows up to later_width."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(seq_len):
        want = min(i, 3 if i < narrow_until else later_width)
        rows.append(sorted(torch.randperm(i, generator=gen)[:want].tolist()) if i else [])
    width = max(len(r) for r in rows)
    return torch.tensor([[r + [-1] * (width - len(r)) for r in rows]])


@pytest.mark.parametrize("alibi", [False, True])
def test_earlier_rows_are_bit_identical_when_later_rows_gain_neighbours(alibi, monkeypatch):
    monkeypatch.setattr(vectorized, "DENSE_ELEMENTS", 0)  # the gather path at any size
    gen = torch.Generator().manual_seed(1)
    batch, seq_len, heads, dim = 2, 70, 2, 16
    q, k, v = (torch.randn(batch, seq_len, heads, dim, generator=gen) for _ in range(3))
    slopes = torch.tensor([0.5, 0.25]) if alibi else None
    coords = torch.randint(0, 5, (batch, seq_len, 3), generator=gen).float() if alibi else None
    narrow = _graph(seq_len, 40, 3).expand(batch, -1, -1)
    outputs = []
    for later in (3, 9, 31, 60):
        wide = _graph(seq_len, 40, later)
        assert torch.equal(wide[0, :40, :3], narrow[0, :40, :3])
        outputs.append(graph_attention(q, k, v, wide.expand(batch, -1, -1), alibi_slopes=slopes,
                                       alibi_coords=coords, backend="vectorized"))
    for out in outputs[1:]:
        assert torch.equal(out[:, :40], outputs[0][:, :40])


def test_rows_do_not_depend_on_the_chunking(monkeypatch):
    monkeypatch.setattr(vectorized, "DENSE_ELEMENTS", 0)
    gen = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, 50, 2, 8, generator=gen) for _ in range(3))
    nbrs = _graph(50, 25, 20)
    whole = graph_attention(q, k, v, nbrs, backend="vectorized")
    monkeypatch.setattr(vectorized, "GATHER_ELEMENTS", 2 * 8 * 7)  # a few rows per chunk
    assert torch.equal(graph_attention(q, k, v, nbrs, backend="vectorized"), whole)
