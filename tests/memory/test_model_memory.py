"""Long-term memory inside the model: off/empty equality, exact merge against a dense softmax,
causality of memory reads, and the Mamba window-to-window carry."""
import pytest
import torch

from sosm.model import SOSMConfig, SOSMModel
from sosm.model.mixers import GraphAttention, TopologicalMamba
from sosm.model.context import LayerContext
from sosm.model.memory_attention import ModelMemory, memory_slots
from sosm.model.positional import apply_rotary, rope_angles

VOCAB, SEQ = 30, 24


def _model(memory=True, **kw):
    torch.manual_seed(0)
    base = dict(vocab_size=VOCAB, d_model=32, n_heads=2, n_layers=5, max_seq_len=SEQ, memory=memory)
    base.update(kw)
    return SOSMModel(SOSMConfig(**base)).eval()


def _write(model, bank, ids, start):
    record = []
    _, state = model(ids, memory=bank, stream_offset=start, record_kv=record)
    T = ids.shape[1]
    bank.write(state.semantic[0], [k[0] for k, _ in record], [v[0] for _, v in record],
               positions=torch.arange(start, start + T))


def test_config_switch_defaults_off_and_validates():
    assert SOSMConfig().memory is False
    with pytest.raises(ValueError, match="memory_k"):
        SOSMConfig(memory_k=0)
    with pytest.raises(ValueError, match="memory"):
        SOSMConfig(model="transformer", memory=True)
    with pytest.raises(ValueError, match="SOSMConfig.memory=False"):
        _model(memory=False)(torch.zeros(1, 4, dtype=torch.long), memory=ModelMemory(1, 2, 16))


@pytest.mark.parametrize("positional", ["rope", "graph_alibi"])
def test_empty_memory_equals_memory_off_exactly(positional):
    on, off = _model(True, positional=positional), _model(False, positional=positional)
    off.load_state_dict(on.state_dict())
    ids = torch.randint(0, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = off(ids)[0]
        assert torch.equal(on(ids)[0], ref)
        assert torch.equal(on(ids, memory=ModelMemory.for_model(on), stream_offset=100)[0], ref)


def _dense_reference(block, q, k, v, nbrs, mem_k, mem_v, slots, angles, coords):
    """Softmax over (self + graph neighbours) ∪ memory keys, one query at a time, float64."""
    B, T, H, d = q.shape
    qr, kr = apply_rotary(q, angles).double(), apply_rotary(k, angles).double()
    out = torch.zeros(B, T, H, d, dtype=torch.float64)
    for b in range(B):
        for t in range(T):
            keys = sorted({t, *[j for j in nbrs[b, t].tolist() if j >= 0]})
            s_g = torch.einsum("hd,nhd->nh", qr[b, t], kr[b, keys]) / d ** 0.5
            if block.use_alibi:
                dist = (coords[b, t][None] - coords[b, keys]).abs().amax(-1).double()
                s_g = s_g - dist[:, None] * block.alibi_slopes.double()
            m = [i for i, s in enumerate(slots[b, t].tolist()) if s >= 0]
            s_m = torch.einsum("hd,nhd->nh", q[b, t].double(), mem_k[b, t, m].double()) / d ** 0.5
            if block.use_alibi:
                s_m = s_m - block.alibi_slopes.double() * (block.max_distance + 1)
            p = torch.softmax(torch.cat([s_g, s_m]), dim=0)
            out[b, t] = torch.einsum("nh,nhd->hd", p, torch.cat([v[b, keys].double(), mem_v[b, t, m].double()]))
    return out


@pytest.mark.parametrize("positional", ["rope", "graph_alibi"])
def test_merged_attention_equals_dense_softmax_over_graph_and_memory_keys(positional):
    g = torch.Generator().manual_seed(2)
    config = SOSMConfig(vocab_size=VOCAB, d_model=32, n_heads=2, model="graph_attention", memory=True,
                        positional=positional, max_seq_len=SEQ)
    block = GraphAttention(config)
    B, T, H, d, N = 2, 9, 2, 16, 12
    q, k, v = (torch.randn(B, T, H, d, generator=g) for _ in range(3))
    nbrs = torch.randint(-1, T, (B, T, 3), generator=g)
    nbrs = torch.where(nbrs < torch.arange(T).view(1, T, 1), nbrs, torch.full_like(nbrs, -1))
    bank = ModelMemory(1, H, d)
    bank.write(torch.randn(N, 64, generator=g), [torch.randn(N, H, d, generator=g)],
               [torch.randn(N, H, d, generator=g)], positions=torch.zeros(N, dtype=torch.long))
    slots = torch.randint(-1, N, (B, T, 4), generator=g)
    slots[0, 0] = -1  # a query with no memory key
    angles = rope_angles(torch.arange(T) + 3, d, 10000.0)[None]
    coords = torch.randint(0, 5, (B, T, 8), generator=g).float()
    ctx = LayerContext(neighbors=nbrs, angles=angles, alibi_coords=coords, memory=bank, memory_slots=slots)
    got = block.attend(apply_rotary(q, angles), apply_rotary(k, angles), v, ctx)
    mem_k, mem_v = bank.gather(0, slots)
    want = _dense_reference(block, q, k, v, nbrs, mem_k, mem_v, slots, angles, coords)
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)


def test_memory_slots_reads_memory_edges_in_order():
    model = _model()
    bank = ModelMemory.for_model(model)
    ids = torch.randint(0, VOCAB, (1, SEQ), generator=torch.Generator().manual_seed(3))
    _write(model, bank, ids, 0)
    _, state = model(ids, memory=bank, stream_offset=SEQ)
    slots = memory_slots(state.graph, 1, SEQ)
    assert slots.shape[:2] == (1, SEQ) and 1 <= slots.shape[2] <= model.config.memory_k
    assert int((slots >= 0).sum()) == int((state.graph.edge_type == 3).sum())


def test_memory_written_at_or_after_a_query_never_influences_it():
    """Two memories agree on entries at positions < 40 and differ after; queries at positions <= 40 agree."""
    model = _model()
    g = torch.Generator().manual_seed(4)
    past = torch.randint(0, VOCAB, (1, SEQ), generator=g)
    futures = [torch.randint(0, VOCAB, (1, SEQ), generator=g) for _ in range(2)]
    logits = []
    for future in futures:
        bank = ModelMemory.for_model(model)
        _write(model, bank, past, 16)          # positions 16..39
        _write(model, bank, future, 40)        # positions 40..63: the "future" of the query window
        query = torch.randint(0, VOCAB, (1, SEQ), generator=torch.Generator().manual_seed(5))
        with torch.no_grad():
            logits.append(model(query, memory=bank, stream_offset=30)[0])  # token t at position 30 + t
    cut = 40 - 30  # tokens t <= 10 (positions <= 40) see only entries at positions < 40
    assert torch.equal(logits[0][:, :cut + 1], logits[1][:, :cut + 1])
    assert not torch.equal(logits[0][:, cut + 1:], logits[1][:, cut + 1:])  # later tokens do read the future entries


def test_gradient_flows_through_memory_attention():
    model = _model().train()
    bank = ModelMemory.for_model(model)
    ids = torch.randint(0, VOCAB, (1, SEQ), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        _write(model, bank, ids, 0)
    logits, _ = model(ids, memory=bank, stream_offset=SEQ)
    logits.sum().backward()
    assert model.stack.layers[0].qkv.weight.grad.abs().sum() > 0


def test_mamba_forward_carry_equals_token_by_token_steps():
    config = SOSMConfig(d_model=32, n_heads=2, model="mamba", vocab_size=VOCAB)
    torch.manual_seed(7)
    layer = TopologicalMamba(config, struct_dim=None).eval()
    x = torch.randn(2, 11, 32)
    window_cache, step_cache = {}, {}
    with torch.no_grad():
        first = layer.forward_carry(x[:, :5], LayerContext(), window_cache)
        second = layer.forward_carry(x[:, 5:], LayerContext(), window_cache)
        steps = torch.cat([layer.step(x[:, t:t + 1], LayerContext(), step_cache) for t in range(11)], dim=1)
    torch.testing.assert_close(torch.cat([first, second], dim=1), steps, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(window_cache["ssm"], step_cache["ssm"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(window_cache["conv"], step_cache["conv"])


def test_mamba_state_carry_over_windows_equals_one_long_forward():
    torch.manual_seed(8)
    model = SOSMModel(SOSMConfig(d_model=32, n_heads=2, model="mamba", n_layers=2, vocab_size=VOCAB,
                                 max_seq_len=32)).eval()
    ids = torch.randint(0, VOCAB, (1, 32), generator=torch.Generator().manual_seed(9))
    carry = [dict() for _ in model.stack.layers]
    with torch.no_grad():
        full = model(ids)[0]
        parts = [model(ids[:, s:s + 8], mamba_state=carry)[0] for s in range(0, 32, 8)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("positional", ["rope", "graph_alibi"])
def test_incremental_decoding_with_memory_equals_the_full_forward(positional):
    model = _model(positional=positional, n_layers=3, layer_pattern="AMA")
    bank = ModelMemory.for_model(model)
    g = torch.Generator().manual_seed(7)
    _write(model, bank, torch.randint(0, VOCAB, (1, SEQ), generator=g), 0)  # positions 0..23
    ids = torch.randint(0, VOCAB, (2, 12), generator=g)
    with torch.no_grad():
        full, state = model(ids, memory=bank, stream_offset=SEQ)
    assert int((state.graph.edge_type == 3).sum()) > 0  # the window really reads memory
    decoder = model.decoder(batch_size=2, memory=bank, stream_offset=SEQ)
    stepped = torch.stack([decoder.step(ids[:, t]) for t in range(12)], dim=1)
    torch.testing.assert_close(stepped, full, rtol=1e-5, atol=1e-5)
    plain = model.decoder(batch_size=2)  # without memory it decodes as the memory-free forward
    without = torch.stack([plain.step(ids[:, t]) for t in range(12)], dim=1)
    assert not torch.allclose(without, full, atol=1e-4)
    with pytest.raises(ValueError, match="memory was given but SOSMConfig.memory=False"):
        _model(memory=False).decoder(memory=bank)
