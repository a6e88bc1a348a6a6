"""Native CPU landmark BFS: identical to the torch BFS and to scipy csgraph; fallback without a compiler."""
import warnings

import pytest
import torch

from sosm.common import native as _native
from sosm.graph import landmarks as lm
from sosm.graph import native_landmarks
from sosm.graph.config import GraphConfig
from sosm.graph.builder import GraphBuilder
from sosm.graph.types import UNREACHABLE

from .test_landmarks import oracle, random_edges

needs_compiler = pytest.mark.skipif(_native.find_compiler() is None, reason="no C compiler on this machine")


@pytest.fixture
def native():
    native_landmarks._reset()
    ok, reason = native_landmarks.status()
    if not ok:
        pytest.skip(f"native landmark BFS unavailable: {reason}")
    yield native_landmarks.landmark_bfs_native
    native_landmarks._reset()


def three_ways(native, ei, B, T, marks, max_distance, causal):
    """native, torch path, public entry point: all identical (exact int equality); returns the result."""
    got = native(ei, B, T, marks, max_distance, causal).long().reshape(B, T, -1)
    ref = lm._landmark_distances_torch(ei, B, T, marks, max_distance, causal)
    public = lm.landmark_distances(ei, B, T, marks, max_distance=max_distance, causal=causal)
    assert torch.equal(got, ref)
    assert torch.equal(public, ref)
    assert public.dtype == torch.long
    return got


@needs_compiler
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("B,T,m,L,max_distance,seed", [
    (1, 40, 60, 4, 64, 0), (3, 77, 40, 70, 64, 1),     # sparse: disconnected nodes; L > 64, not a multiple
    (2, 150, 400, 130, 3, 2), (4, 33, 20, 33, 0, 3),   # depth cap, cap 0 (landmarks only)
    (2, 200, 700, 64, 64, 4), (1, 150, 150, 1, 5, 5)])
def test_native_matches_torch_and_scipy(native, B, T, m, L, max_distance, seed, causal):
    gen = torch.Generator().manual_seed(seed)
    ei = random_edges(B, T, m, gen, causal)
    ei = ei[:, ((ei % T) != T - 1).all(0)]  # position T-1 isolated in every sample
    if causal:
        marks = lm.select_landmarks(ei, B, T, L, rule="stride", causal=True)
    else:
        marks = torch.randint(0, T, (B, L), generator=gen)  # random, with repeats
    got = three_ways(native, ei, B, T, marks, max_distance, causal)
    assert torch.equal(got, oracle(ei, B, T, marks, max_distance, causal))
    last = got[:, T - 1]  # [B, L]: 0 where the landmark is that node, else unreachable
    assert torch.equal(last, torch.where(marks == T - 1, 0, UNREACHABLE))


@needs_compiler
@pytest.mark.parametrize("causal", [True, False])
def test_native_filters_edges_like_the_torch_path(native, causal):
    """Backward, self, cross-sample, negative and memory (>= B*T) edges; duplicates; a strided view."""
    B, T = 3, 30
    gen = torch.Generator().manual_seed(7)
    ei = torch.randint(-3, B * T + 10, (2, 600), generator=gen)
    ei = torch.cat([ei, ei[:, :50], torch.arange(B * T).repeat(2, 1)], dim=1)  # duplicates, self-loops
    strided = torch.stack([ei[0], ei[1], ei[0]], dim=1).T[:2]  # stride(1) == 3
    assert not strided.is_contiguous()
    marks = lm.select_landmarks(ei.clamp(0, B * T - 1), B, T, 5, rule="stride", causal=True)
    got = three_ways(native, strided, B, T, marks, 64, causal)
    assert torch.equal(got, three_ways(native, ei, B, T, marks, 64, causal))
    valid = (ei >= 0).all(0) & (ei < B * T).all(0)
    assert torch.equal(got, oracle(ei[:, valid], B, T, marks, 64, causal))


@needs_compiler
def test_native_on_edges_without_any(native):
    ei = torch.empty(2, 0, dtype=torch.long)
    marks = torch.tensor([[0, 2], [1, 1]])
    got = three_ways(native, ei, 2, 3, marks, 8, True)
    assert int((got == 0).sum()) == 4 and int((got == UNREACHABLE).sum()) == 8


@needs_compiler
@pytest.mark.parametrize("causal", [True, False])
def test_native_on_builder_graphs_with_padding(native, causal):
    torch.manual_seed(0)
    cfg = GraphConfig(k=4, causal=causal, num_landmarks=70, max_distance=6,
                      landmark_rule="stride" if causal else "degree")
    states = torch.randn(2, 96, 64)
    mask = torch.ones(2, 96, dtype=torch.bool)
    mask[1, 70:] = False
    g = GraphBuilder(cfg).build(states, padding_mask=mask)
    got = three_ways(native, g.edge_index, 2, 96, g.landmarks, 6, causal)
    assert torch.equal(got, g.landmark_distances)
    assert torch.equal(got, oracle(g.edge_index, 2, 96, g.landmarks, 6, causal))


@needs_compiler
def test_public_entry_runs_native_on_cpu(native, monkeypatch):
    calls = []
    real = native_landmarks.landmark_bfs_native
    monkeypatch.setattr(native_landmarks, "landmark_bfs_native", lambda *a: calls.append(1) or real(*a))
    ei = torch.tensor([[0, 1, 2], [1, 2, 3]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = lm.landmark_distances(ei, 1, 4, torch.tensor([[0, 2]]), max_distance=8, causal=True)
    assert calls == [1] and out[0].tolist() == [[0, 32767], [1, 32767], [2, 0], [3, 1]]
    monkeypatch.setenv(_native.ENV_SWITCH, "0")  # switched off: the torch path, nothing built
    monkeypatch.setattr(native_landmarks, "_build", lambda: pytest.fail("switched off, yet built"))
    native_landmarks._reset()
    assert torch.equal(lm.landmark_distances(ei, 1, 4, torch.tensor([[0, 2]]), max_distance=8, causal=True), out)
    assert calls == [1]


def test_missing_compiler_warns_once_and_falls_back(monkeypatch, tmp_path):
    monkeypatch.setenv("SOSM_CACHE_DIR", str(tmp_path))  # no library built earlier is found
    monkeypatch.delenv(_native.ENV_SWITCH, raising=False)
    monkeypatch.setattr(native_landmarks, "find_compiler", lambda: None)
    native_landmarks._reset()
    try:
        gen = torch.Generator().manual_seed(3)
        ei = random_edges(2, 50, 80, gen, True)
        marks = lm.select_landmarks(ei, 2, 50, 5, rule="stride", causal=True)
        with pytest.warns(RuntimeWarning, match="no C compiler") as record:
            first = lm.landmark_distances(ei, 2, 50, marks, max_distance=64, causal=True)
            second = lm.landmark_distances(ei, 2, 50, marks, max_distance=64, causal=True)
        assert len([w for w in record if "native CPU BFS" in str(w.message)]) == 1
        assert torch.equal(first, second)
        assert torch.equal(first, lm._landmark_distances_torch(ei, 2, 50, marks, 64, True))
        assert torch.equal(first, oracle(ei, 2, 50, marks, 64, True))
        assert not native_landmarks.status()[0]
        with pytest.raises(RuntimeError, match="unavailable"):
            native_landmarks.landmark_bfs_native(ei, 2, 50, marks, 64, True)
    finally:
        native_landmarks._reset()


@needs_compiler
def test_failing_build_falls_back(monkeypatch, tmp_path):
    fake = tmp_path / "fakecc"
    fake.write_text("#!/bin/sh\necho 'internal error' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    monkeypatch.setenv("SOSM_CACHE_DIR", str(tmp_path / "cache"))
    native_landmarks._reset()
    try:
        ok, reason = native_landmarks.status()
        assert not ok and "internal error" in reason
        ei = torch.tensor([[0, 1], [1, 2]])
        with pytest.warns(RuntimeWarning, match="torch BFS"):
            out = lm.landmark_distances(ei, 1, 3, torch.tensor([[0]]), max_distance=4, causal=True)
        assert out[0, :, 0].tolist() == [0, 1, 2]
    finally:
        native_landmarks._reset()
