"""topk_similarity: the fused Triton kernel against the dense oracle, and the contract's rules."""
import importlib

import pytest
import torch

from sosm.kernels import topk_similarity
from sosm.kernels._backend import interpreter_enabled
from sosm.kernels.topk_similarity import topk_similarity_ref
from sosm.common.features import featurize
from tests.conftest import DEVICES

WEIGHTS = [0.5, 0.0, 0.0, 0.3, 0.2] + [0.0] * 11  # I, R2, K as in DEFAULT_BLOCK_WEIGHTS


def projection_matrix(d_out=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(64, d_out, generator=g))
    return q.T.contiguous()  # [d', 64], orthonormal rows


def mode_kwargs(mode, device):
    if mode == "blocks":
        return dict(similarity="blocks", block_weights=WEIGHTS)
    if mode == "projection":
        return dict(similarity="projection", projection=projection_matrix().to(device))
    return dict(similarity="full")


def states(batch, length, device, seed=0, ties=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, 64, generator=g)
    if ties:  # exact duplicates: equal similarities that only the index rule can order
        x[:, 7::5] = x[:, 2:3]
        x[:, 11::9] = x[:, 4:5]
    return x.to(device)


def needs_interpreter(device):
    if device == "cpu" and not interpreter_enabled():
        pytest.skip("CPU tensors on the Triton path need TRITON_INTERPRET=1 (set when no CUDA)")


def assert_same_result(actual, expected, exact=True):
    """Indices equal (exact=False tolerates float32 near-tie swaps); values to float32 rounding."""
    idx_a, sim_a, blk_a = actual
    idx_e, sim_e, blk_e = expected
    assert idx_a.dtype == torch.long and idx_a.shape == idx_e.shape
    assert torch.isfinite(sim_a).all() and torch.isfinite(blk_a).all()
    differ = idx_a != idx_e
    if exact:
        assert not differ.any(), f"{int(differ.sum())} indices differ from the oracle"
    else:
        assert (sim_a[differ] - sim_e[differ]).abs().max().item() <= 1e-6 if differ.any() else True
    torch.testing.assert_close(sim_a, sim_e, rtol=0, atol=1e-6)
    same = ~differ
    torch.testing.assert_close(blk_a[same], blk_e[same], rtol=0, atol=1e-6)


@pytest.fixture
def garbage_outputs(monkeypatch):
    """Kernel outputs start as NaN / a wrong index: anything the kernel skips shows up."""
    triton_topk = pytest.importorskip("sosm.kernels.topk_similarity.triton_topk")

    def fill(shape, dtype, device):
        value = float("nan") if dtype.is_floating_point else -7
        return torch.full(shape, value, dtype=dtype, device=device)
    monkeypatch.setattr(triton_topk, "_new_output", fill)


TRITON_CASES = [  # mode, causal, window, k, ties
    ("full", True, 1, 5, True),
    ("blocks", True, 0, 8, True),
    ("projection", True, 3, 4, False),
    ("full", False, 2, 8, True),
    ("projection", False, 0, 32, False),
]


@pytest.mark.interpreter
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode, causal, window, k, ties", TRITON_CASES)
def test_triton_matches_oracle(device, mode, causal, window, k, ties, garbage_outputs):
    needs_interpreter(device)
    x = states(2, 70 if device == "cpu" else 300, device, ties=ties)
    kwargs = dict(mode_kwargs(mode, device), causal=causal, window=window)
    actual = topk_similarity(x, k, backend="triton", **kwargs)
    assert_same_result(actual, topk_similarity_ref(x, k, **kwargs))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", ["full", "projection"])
def test_cuda_large_matches_oracle(mode, garbage_outputs):
    x = states(1, 3000, "cuda", seed=3, ties=True)
    kwargs = mode_kwargs(mode, "cuda")
    assert_same_result(topk_similarity(x, 8, **kwargs), topk_similarity_ref(x, 8, **kwargs), exact=False)


def test_hand_built_example_and_tie_rule():
    e0, e1 = torch.zeros(64), torch.zeros(64)
    e0[0], e1[5] = 1.0, 1.0
    x = torch.stack([e0, e1, e0, e1, e0, e0])[None]  # [1, 6, 64]
    idx, sim, blk = topk_similarity_ref(x, 2, window=1)
    assert idx[0].tolist() == [[-1, -1], [-1, -1], [0, -1], [1, 0], [0, 2], [0, 2]]
    assert sim[0].tolist() == [[0, 0], [0, 0], [1, 0], [1, 0], [1, 1], [1, 1]]
    assert blk[0, 4, 0].tolist() == [1.0] + [0.0] * 15  # all of the cosine is block 0's
    assert (blk[0, 0] == 0).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_causal_rows_ignore_the_future(device, backend):
    if backend == "triton":
        needs_interpreter(device)
    x = states(1, 40, device, seed=1)
    t = 23
    y = x.clone()
    y[:, t + 1:] = torch.randn(1, 40 - t - 1, 64).to(device)
    first = topk_similarity(x, 6, backend=backend)
    second = topk_similarity(y, 6, backend=backend)
    for a, b in zip(first, second):
        assert torch.equal(a[:, :t + 1], b[:, :t + 1])


@pytest.mark.parametrize("mode", ["full", "blocks"])
def test_block_similarities_decompose_the_similarity(mode):
    x = states(1, 30, "cpu", seed=2)
    kwargs = mode_kwargs(mode, "cpu")
    idx, sim, blk = topk_similarity_ref(x, 4, **kwargs)
    if mode == "full":  # shares of the cosine add up to it
        recon = blk.sum(-1)
    else:  # weighted per-block cosines add up to it
        w = torch.tensor(WEIGHTS)
        recon = (blk * (w / w.sum())).sum(-1)
    torch.testing.assert_close(recon, sim, rtol=0, atol=1e-6)


def test_features_follow_the_contract():
    x = states(1, 5, "cpu")
    f = featurize(x, "blocks", WEIGHTS)
    xb = x.unflatten(-1, (16, 4))
    cos = (xb[0, 1] * xb[0, 3]).sum(-1) / (xb[0, 1].norm(dim=-1) * xb[0, 3].norm(dim=-1))
    w = torch.tensor(WEIGHTS)
    torch.testing.assert_close((f[0, 1] * f[0, 3]).sum(), (w / w.sum() * cos).sum())
    p = projection_matrix()
    fp = featurize(x, "projection", projection=p)
    torch.testing.assert_close(fp[0, 2] @ fp[0, 4], torch.cosine_similarity(p @ x[0, 2], p @ x[0, 4], 0))


def test_cpu_dispatch_warns_once():
    backend = importlib.import_module("sosm.kernels._backend")
    backend._warned.discard(("topk_similarity", "device-cpu"))
    x = states(1, 12, "cpu")
    with pytest.warns(RuntimeWarning, match="topk_similarity"):
        topk_similarity(x, 2)
    assert_same_result(topk_similarity(x, 2), topk_similarity_ref(x, 2))


@pytest.mark.parametrize("args, message", [
    (dict(x=torch.randn(2, 10, 63)), "x must be"),
    (dict(x=torch.full((1, 4, 64), float("nan"))), "NaN"),
    (dict(x=torch.ones(1, 4, 64, dtype=torch.long)), "x must be a floating"),
    (dict(k=0), "k must be"),
    (dict(similarity="dot"), "similarity must be"),
    (dict(window=-1), "window must be"),
    (dict(similarity="blocks"), "block_weights"),
    (dict(similarity="blocks", block_weights=[1.0] * 15), "block_weights must be"),
    (dict(similarity="blocks", block_weights=[-1.0] * 16), "block_weights must be"),
    (dict(similarity="projection", projection=torch.randn(8, 32)), "projection"),
])
def test_bad_inputs_name_the_argument(args, message):
    call = dict(x=torch.randn(1, 10, 64), k=3)
    call.update(args)
    x, k = call.pop("x"), call.pop("k")
    with pytest.raises((ValueError, TypeError), match=message):
        topk_similarity(x, k, **call)


@pytest.mark.parametrize("device", DEVICES)
def test_triton_rejects_k_above_32(device):
    needs_interpreter(device)
    with pytest.raises(ValueError, match=r"k must be an int in \[1, 32\]"):
        topk_similarity(torch.randn(1, 40, 64, device=device), 33, backend="triton")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("causal", [True, False])
def test_zero_states_are_no_candidates_on_every_path(device, causal, garbage_outputs):
    """Issue 12 item 5: a zero state (all features zero) is no candidate and gets no neighbours."""
    needs_interpreter(device)
    x = states(2, 70, device)
    x[0, 3] = 0.0
    x[0, 40] = 0.0
    x[1, 66] = 0.0
    x[1, 10:12, 0:4] = 0.0
    x[1, 10:12, 16:20] = 0.0  # zero in both weighted blocks of WEIGHTS[0, 3, 4]... and block 4:
    x[1, 10:12, 12:16] = 0.0
    for kwargs in (dict(similarity="full"), dict(similarity="blocks", block_weights=WEIGHTS)):
        expected = topk_similarity_ref(x, 5, causal=causal, **kwargs)
        zero = ~featurize(x, **kwargs).ne(0).any(-1)
        assert int(zero.sum()) == (3 if kwargs["similarity"] == "full" else 5)
        idx = expected[0]
        assert (idx[zero] == -1).all()
        keys = idx.clamp_min(0) + torch.arange(2, device=device)[:, None, None] * 70
        assert not zero.reshape(-1)[keys[idx >= 0]].any()
        assert_same_result(topk_similarity(x, 5, causal=causal, backend="triton", **kwargs), expected)


@pytest.mark.parametrize("device", DEVICES)
def test_extreme_scales_give_the_unscaled_neighbours(device, garbage_outputs):
    """Issue 12 item 6: float32 states times 1e20 and float64 states of 1e39 normalise safely."""
    needs_interpreter(device)
    x = states(1, 40, device)
    expected = topk_similarity_ref(x, 4)
    for scaled in (x * 1e20, x.double() * 1e39):
        for backend in ("reference", "triton"):
            assert_same_result(topk_similarity(scaled, 4, backend=backend), expected)
