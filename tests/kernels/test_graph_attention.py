"""graph_attention: every path, forward and dq/dk/dv, against the dense float32 reference.

The Triton kernels run under TRITON_INTERPRET=1 on CPU (few, small cases: the interpreter
runs programs one by one) and natively on CUDA (the full grid, bf16 included). Every Triton
output buffer is poisoned with NaN first, so a row the kernel skips cannot pass.
"""
import warnings

import pytest
import torch

from sosm.kernels import GraphLayout, graph_attention
from sosm.kernels._backend import ENV_VAR, force_backend, interpreter_enabled, resolve
from sosm.kernels.graph_attention import graph_attention_ref
from tests.conftest import DEVICES
from tests.kernels.tolerance import assert_close

LOW_PRECISION = (torch.float16, torch.bfloat16)


def make_graph(batch, seq_len, width, causal=True, seed=0, device="cpu"):
    """Random neighbour lists: ascending, -1 padded at the end, self excluded, some rows empty."""
    g = torch.Generator().manual_seed(seed)
    nbrs = torch.full((batch, seq_len, width), -1, dtype=torch.long)
    for b in range(batch):
        for i in range(seq_len):
            pool = torch.arange(i) if causal else torch.cat([torch.arange(i), torch.arange(i + 1, seq_len)])
            if i % 5 == 3 or len(pool) == 0:  # rows with zero neighbours
                continue
            take = int(torch.randint(1, width + 1, (1,), generator=g))
            chosen = pool[torch.randperm(len(pool), generator=g)[:take]].sort().values
            nbrs[b, i, :len(chosen)] = chosen
    return nbrs.to(device)


def make_inputs(batch, seq_len, heads, head_dim, landmarks, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(batch, seq_len, heads, head_dim, generator=g) for _ in range(3))
    slopes = torch.rand(heads, generator=g) + 0.1
    coords = torch.randint(0, 6, (batch, seq_len, landmarks), generator=g).float()
    return [t.to(dtype).to(device) for t in (q, k, v)], slopes.to(device), coords.to(device)


def run(fn, q, k, v, nbrs, seed=1, **kwargs):
    """Output and (dq, dk, dv) of a fixed random projection of the output."""
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    out = fn(*leaves, nbrs, **kwargs)
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(out.shape, generator=g).to(out.device)
    (out.float() * weight).sum().backward()
    return [out.detach()] + [t.grad for t in leaves]


def check_against_reference(fn, dtype, device, seq_len, alibi, causal=True, batch=1, heads=2,
                            head_dim=16, width=6, **kwargs):
    (q, k, v), slopes, coords = make_inputs(batch, seq_len, heads, head_dim, 3, dtype, device)
    nbrs = make_graph(batch, seq_len, width, causal=causal, device=device)
    extra = {"alibi_slopes": slopes, "alibi_coords": coords} if alibi else {}
    actual = run(fn, q, k, v, nbrs, **extra, **kwargs)
    expected = run(graph_attention_ref, q.float(), k.float(), v.float(), nbrs, **extra)
    baseline = run(graph_attention_ref, q, k, v, nbrs, **extra) if dtype in LOW_PRECISION else None
    for name, a, e, base in zip(("out", "dq", "dk", "dv"), actual, expected,
                                baseline or [None] * 4):
        assert a.dtype == dtype, name
        if seq_len == 1 and name in ("dq", "dk"):  # one key: constant softmax, zero grads
            assert torch.isfinite(a).all() and float(a.abs().max()) <= 1e-3, name
            continue
        assert_close(a, e, dtype, base, name=name)


@pytest.fixture
def nan_buffers(monkeypatch):
    """Every buffer the Triton wrapper allocates starts as NaN."""
    from sosm.kernels.graph_attention import triton_graph_attention as module

    def poisoned(shape, dtype, device):
        return torch.full(shape, float("nan"), dtype=dtype, device=device)

    monkeypatch.setattr(module, "_empty", poisoned)


def triton_cases():
    cases = []
    if interpreter_enabled():  # Triton on CPU tensors needs TRITON_INTERPRET=1 (conftest sets it)
        cases += [("cpu", 1, torch.float32, False, True), ("cpu", 63, torch.float32, True, True),
                  ("cpu", 77, torch.float16, True, False)]
    if "cuda" in DEVICES:
        cases += [("cuda", t, dt, alibi, causal) for t in (1, 63, 77, 200)
                  for dt in (torch.float32, torch.float16, torch.bfloat16)
                  for alibi in (False, True) for causal in (True, False)]
    return cases


@pytest.mark.parametrize("device,seq_len,dtype,alibi,causal", triton_cases())
def test_triton_matches_reference(device, seq_len, dtype, alibi, causal, nan_buffers, monkeypatch):
    from sosm.kernels.graph_attention import triton_graph_attention as module

    heads = 3 if device == "cuda" else 2
    if device == "cuda" and seq_len == 77:  # wider programs: a partial block of heads
        monkeypatch.setitem(module.CONFIG, "BLOCK_H", 2)
    check_against_reference(graph_attention, dtype, device, seq_len, alibi, causal=causal,
                            batch=2 if device == "cuda" else 1, heads=heads, backend="triton")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seq_len", [1, 63, 77, 200])
@pytest.mark.parametrize("alibi", [False, True])
def test_vectorized_matches_reference(device, seq_len, alibi):
    check_against_reference(graph_attention, torch.float32, device, seq_len, alibi, batch=2,
                            heads=3, head_dim=8, causal=seq_len != 77, backend="vectorized")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_vectorized_low_precision(device, dtype):
    check_against_reference(graph_attention, dtype, device, 40, True, batch=2,
                            backend="vectorized")


@pytest.mark.parametrize("device", DEVICES)
def test_auto_dispatch_and_layout_reuse(device):
    (q, k, v), slopes, coords = make_inputs(2, 33, 2, 8, 2, torch.float32, device)
    nbrs = make_graph(2, 33, 4, device=device)
    layout = GraphLayout.build(nbrs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fresh = graph_attention(q, k, v, nbrs, alibi_slopes=slopes, alibi_coords=coords)
        reused = graph_attention(q, k, v, nbrs, alibi_slopes=slopes, alibi_coords=coords,
                                 layout=layout)
    torch.testing.assert_close(fresh, reused, rtol=0, atol=0)
    assert_close(fresh, graph_attention_ref(q, k, v, nbrs, alibi_slopes=slopes, alibi_coords=coords))


@pytest.mark.parametrize("backend", ["vectorized", "reference"]
                         + (["triton"] if "cuda" in DEVICES else []))
def test_duplicates_and_self_entries_are_merged(backend):
    """Set semantics: a repeated neighbour or an explicit self entry counts once."""
    device = "cuda" if backend == "triton" else "cpu"
    (q, k, v), _, _ = make_inputs(1, 6, 2, 8, 1, torch.float32, device)
    clean = torch.tensor([[[-1, -1, -1], [0, -1, -1], [0, 1, -1], [1, -1, -1], [0, 2, -1],
                           [1, 3, 4]]], device=device)
    messy = torch.tensor([[[0, -1, 0], [0, 0, 1], [2, 0, 1], [1, 1, -1], [-1, 2, 0],
                           [4, 3, 1]]], device=device)
    torch.testing.assert_close(graph_attention(q, k, v, messy, backend=backend),
                               graph_attention(q, k, v, clean, backend=backend))


def test_layout_is_canonical():
    layout = GraphLayout.build(torch.tensor([[[-1, -1], [0, 0], [1, 0], [-1, 1]]]))
    assert layout.neighbors.tolist() == [[[0, -1, -1], [0, 1, -1], [0, 1, 2], [1, 3, -1]]]
    assert layout.counts.tolist() == [[1, 2, 3, 2]]
    # key 0 <- queries 0, 1, 2; key 1 <- 1, 2, 3; key 2 <- 2; key 3 <- 3
    assert layout.rev_ptr.tolist() == [0, 3, 6, 7, 8]
    assert layout.rev_idx.tolist() == [0, 1, 2, 1, 2, 3, 2, 3]
    assert "edges=8" in repr(layout)


def test_bidirectional_and_empty_width():
    (q, k, v), _, _ = make_inputs(1, 9, 2, 8, 1, torch.float32, "cpu")
    later = torch.tensor([[[8], [5], [-1], [0], [8], [1], [2], [0], [3]]])
    assert_close(graph_attention(q, k, v, later, backend="vectorized"),
                 graph_attention_ref(q, k, v, later))
    empty = torch.empty(1, 9, 0, dtype=torch.long)  # Kn = 0: every query attends to itself
    torch.testing.assert_close(graph_attention(q, k, v, empty, backend="vectorized"), v)


def test_bad_inputs_name_the_argument():
    (q, k, v), slopes, coords = make_inputs(1, 8, 2, 4, 2, torch.float32, "cpu")
    nbrs = make_graph(1, 8, 3)
    call = lambda *a, **kw: graph_attention(*a, backend="vectorized", **kw)  # noqa: E731
    cases = [
        (ValueError, "q must be", (q[0], k[0], v[0], nbrs), {}),
        (ValueError, "k must have q's shape", (q, k[:, :4], v, nbrs), {}),
        (TypeError, "v must have q's dtype", (q, k, v.double(), nbrs), {}),
        (TypeError, "q must have dtype", (q.int(), k.int(), v.int(), nbrs), {}),
        (TypeError, "neighbors must have dtype", (q, k, v, nbrs.float()), {}),
        (ValueError, "neighbors must be", (q, k, v, nbrs[:, :5]), {}),
        (ValueError, r"neighbors entries must lie in \[-1, T=8\)", (q, k, v, nbrs + 8), {}),
        (ValueError, r"neighbors entries must lie in \[-1, T=8\)", (q, k, v, nbrs - 9), {}),
        (ValueError, "given together", (q, k, v, nbrs), {"alibi_slopes": slopes}),
        (ValueError, r"alibi_slopes must be \[H=2\]", (q, k, v, nbrs),
         {"alibi_slopes": slopes[:1], "alibi_coords": coords}),
        (ValueError, "alibi_coords must be", (q, k, v, nbrs),
         {"alibi_slopes": slopes, "alibi_coords": coords[:, :3]}),
        (ValueError, "scale must be a finite float > 0", (q, k, v, nbrs), {"scale": -1.0}),
        (TypeError, "layout must be a GraphLayout", (q, k, v, nbrs), {"layout": "dense"}),
        (ValueError, "layout was built for", (q, k, v, nbrs),
         {"layout": GraphLayout.build(make_graph(1, 8, 2))}),
    ]
    for error, message, args, kwargs in cases:
        with pytest.raises(error, match=message):
            call(*args, **kwargs)
    with pytest.raises(ValueError, match="backend must be one of"):
        graph_attention(q, k, v, nbrs, backend="cuda")
    with pytest.raises(ValueError, match=r"neighbors entries must lie in \[-1, T=8\)"):
        graph_attention_ref(q, k, v, nbrs + 8)


def test_backend_forcing_and_warn_once(monkeypatch):
    with force_backend("reference"):
        assert resolve("graph_attention_probe", "cpu") == "reference"
    monkeypatch.setenv(ENV_VAR, "reference")
    assert resolve("graph_attention_probe", "cpu") == "reference"
    assert resolve("graph_attention_probe", "cpu", backend="vectorized") == "vectorized"
    monkeypatch.setenv(ENV_VAR, "auto")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert resolve("graph_attention_probe", "cpu") == "vectorized"
        assert resolve("graph_attention_probe", "cpu") == "vectorized"
    assert len(caught) == 1 and "vectorised PyTorch path" in str(caught[0].message)
    monkeypatch.setenv(ENV_VAR, "fast")
    with pytest.raises(ValueError, match=ENV_VAR):
        resolve("graph_attention_probe", "cpu")


@pytest.mark.skipif("cuda" not in DEVICES, reason="needs CUDA")
def test_triton_backward_is_deterministic():
    (q, k, v), slopes, coords = make_inputs(2, 300, 4, 64, 3, torch.bfloat16, "cuda")
    nbrs = make_graph(2, 300, 12, device="cuda")
    first = run(graph_attention, q, k, v, nbrs, alibi_slopes=slopes, alibi_coords=coords)
    second = run(graph_attention, q, k, v, nbrs, alibi_slopes=slopes, alibi_coords=coords)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@pytest.mark.parametrize("seq_len", [1, 63, 77, 200])
@pytest.mark.parametrize("alibi", [False, True])
@pytest.mark.parametrize("dense", [False, True])
def test_vectorized_gather_and_dense_paths(seq_len, alibi, dense, monkeypatch):
    """The CPU path's two forms (chunked gather; one dense masked SDPA for short sequences) both match the reference."""
    from sosm.kernels.graph_attention import vectorized

    monkeypatch.setattr(vectorized, "DENSE_ELEMENTS", 1 << 40 if dense else 0)
    check_against_reference(graph_attention, torch.float32, "cpu", seq_len, alibi, batch=2,
                            heads=3, head_dim=8, causal=seq_len != 77, backend="vectorized")


def _lse_cases():
    cases = [("vectorized", "dense"), ("vectorized", "gather"), ("reference", None)]
    if interpreter_enabled():
        cases.append(("triton", None))
    return cases


@pytest.mark.parametrize("backend, vectorized_path", _lse_cases())
@pytest.mark.parametrize("alibi", [False, True])
def test_log_sum_exp_output_and_its_gradient(backend, vectorized_path, alibi, monkeypatch):
    """``return_lse``: each query's natural log-sum-exp equals the dense scores', and a loss that reads it
    back-propagates into q and k exactly as through the reference (the memory merge relies on both)."""
    from sosm.kernels.graph_attention import vectorized
    from sosm.kernels.graph_attention.reference import graph_attention_scores

    if vectorized_path is not None:
        monkeypatch.setattr(vectorized, "DENSE_ELEMENTS", 1 << 40 if vectorized_path == "dense" else 0)
    (q, k, v), slopes, coords = make_inputs(1, 19, 2, 8, 3, torch.float32, "cpu")
    nbrs = make_graph(1, 19, 5)
    extra = {"alibi_slopes": slopes, "alibi_coords": coords} if alibi else {}
    results = {}
    for name in (backend, "reference"):
        leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
        out, lse = graph_attention(*leaves, nbrs, backend=name, return_lse=True, **extra)
        weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
        ((out * weight).sum() + (lse * torch.tensor([0.7, -1.3])).sum()).backward()
        results[name] = [out.detach(), lse.detach()] + [t.grad for t in leaves]
    scores = graph_attention_scores(q, k, nbrs, 8 ** -0.5, *(extra.values() if alibi else ()))
    assert_close(results["reference"][1], torch.logsumexp(scores, -1).transpose(1, 2), name="reference lse")
    for what, a, e in zip(("out", "lse", "dq", "dk", "dv"), results[backend], results["reference"]):
        assert_close(a, e, name=f"{backend} {what}")
