"""Bidirectional models (causal=False) and the issue-15 mixers against naive references written here, at odd lengths.

FNet against explicit DFT matrices, Linformer against per-head loops, multi-block heads against a
per-head loop over their block groups, the triple hybrid's local band against a masked loop and the
whole layer against its branches recombined by hand.
"""
import math

import pytest
import torch

from sosm.model import SOSMConfig, SOSMModel
from sosm.model.context import LayerContext
from sosm.model.mixers import FNet, Linformer, MultiBlockAttention, TripleHybrid, build_mixer
from sosm.model.mixers.multi_block import block_groups
from sosm.model.mixers.triple import LocalAttention

from .conftest import VOCAB, random_ids, tiny_model

LENGTHS = (7, 13)


def config(**overrides) -> SOSMConfig:
    settings = dict(d_model=32, n_heads=2, vocab_size=VOCAB, max_seq_len=16, mlp_ratio=0, causal=False)
    settings.update(overrides)
    return SOSMConfig(**settings)


def dft(n: int) -> torch.Tensor:
    """The orthonormal DFT matrix ``[n, n]`` (complex128), written out."""
    k = torch.arange(n, dtype=torch.float64)
    return torch.exp(-2j * math.pi * k[:, None] * k[None, :] / n) / math.sqrt(n)


@pytest.mark.parametrize("T", LENGTHS)
@pytest.mark.parametrize("glu", [False, True])
def test_fnet_equals_explicit_dft_matrices(T, glu):
    torch.manual_seed(0)
    layer = FNet(config(model="fnet", fnet_glu=glu)).double()
    x = torch.randn(2, T, 32, dtype=torch.float64)
    u = layer.norm_mix(x).to(torch.complex128)
    mixed = (dft(T) @ u @ dft(32).T).real  # FFT over the sequence of FFT over the hidden axis
    if glu:
        mixed = mixed * torch.sigmoid(layer.gate(layer.norm_mix(x)))
    torch.testing.assert_close(layer(x, LayerContext()), x + layer.out_proj(mixed))


@pytest.mark.parametrize("T", LENGTHS)
def test_fnet_linear_mode_is_exact(T):
    """One component holding the whole input reproduces the output; two components sum to it (the DFT is linear)."""
    torch.manual_seed(1)
    layer = FNet(config(model="fnet", fnet_glu=True, mlp_ratio=2.0))
    x = torch.randn(1, T, 32)
    parts = torch.stack([0.3 * x, 0.7 * x])
    out, out_c, _ = layer.linear_mode(x, parts, LayerContext(), bias_index=1)
    torch.testing.assert_close(out_c.sum(0), out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, layer(x, LayerContext()))


@pytest.mark.parametrize("T", LENGTHS)
def test_linformer_equals_a_per_head_loop(T):
    torch.manual_seed(2)
    layer = Linformer(config(model="linformer", linformer_k=5)).double()
    x = torch.randn(2, T, 32, dtype=torch.float64)
    q, k, v = layer.qkv(layer.norm_attn(x)).view(2, T, 3, 2, 16).unbind(2)  # no positions: ctx.angles is None
    heads = []
    for h in range(2):
        keys = layer.E[:, :T] @ k[:, :, h]  # [B, k, hd]
        values = layer.F[:, :T] @ v[:, :, h]
        probs = torch.softmax(q[:, :, h] @ keys.transpose(1, 2) / 4.0, dim=-1)  # [B, T, k]
        heads.append(probs @ values)
    expected = x + layer.out_proj(torch.cat(heads, dim=-1))
    torch.testing.assert_close(layer(x, LayerContext()), expected)


def test_linformer_refuses_a_causal_model_saying_why_and_a_too_long_input():
    with pytest.raises(ValueError, match="'linformer' is bidirectional only \\(it mixes every position with every other"):
        SOSMConfig(model="linformer")
    layer = Linformer(config(model="linformer", max_seq_len=8))
    with pytest.raises(ValueError, match="sequence length 9 exceeds max_seq_len=8"):
        layer(torch.randn(1, 9, 32), LayerContext())


@pytest.mark.parametrize("T", LENGTHS)
@pytest.mark.parametrize("causal", [True, False])
def test_multi_block_heads_read_their_block_group(T, causal):
    torch.manual_seed(3)
    layer = MultiBlockAttention(config(model="multi_block", n_heads=4, causal=causal,
                                       graph={"causal": causal})).double()
    x, semantic = torch.randn(2, T, 32, dtype=torch.float64), torch.randn(2, T, 64, dtype=torch.float64)
    values = layer.value(layer.norm_attn(x)).view(2, T, 4, 8)
    heads = []
    for h, group in enumerate(block_groups(4)):
        assert len(group) == 4
        s = layer.norm_semantic(semantic[..., 16 * h:16 * (h + 1)])  # blocks 4h .. 4h+3, 4 dims each
        scores = (s @ layer.q_weight[h]) @ (s @ layer.k_weight[h]).transpose(1, 2) / math.sqrt(8)  # [B, T, T]
        if causal:
            scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
        heads.append(torch.softmax(scores, -1) @ values[:, :, h])
    expected = x + layer.out_proj(torch.cat(heads, dim=-1))
    torch.testing.assert_close(layer(x, LayerContext(semantic=semantic)), expected)


def test_multi_block_needs_heads_dividing_the_blocks_and_the_semantic_state():
    with pytest.raises(ValueError, match="SOSMConfig.n_heads=3 is invalid; accepted: a divisor of the 16 semantic blocks"):
        SOSMConfig(model="hybrid", layer_pattern="multi_block,mamba", d_model=48, n_heads=3)
    with pytest.raises(ValueError, match="n_heads=3 is invalid for multi_block"):
        block_groups(3)
    layer = MultiBlockAttention(config(model="multi_block", n_heads=2, causal=True))
    with pytest.raises(ValueError, match="multi_block needs ctx.semantic"):
        layer(torch.randn(1, 5, 32), LayerContext())


@pytest.mark.parametrize("T", LENGTHS)
@pytest.mark.parametrize("causal", [True, False])
def test_local_band_equals_a_masked_loop(T, causal):
    torch.manual_seed(4)
    layer = LocalAttention(config(model="transformer", causal=causal), window=3).double()
    x = torch.randn(1, T, 32, dtype=torch.float64)
    q, k, v = layer.qkv(layer.norm_attn(x)).view(1, T, 3, 2, 16).unbind(2)
    out = torch.zeros(1, T, 2, 16, dtype=torch.float64)
    for i in range(T):
        keys = [j for j in range(T) if (0 <= i - j < 3 if causal else abs(i - j) < 3)]
        for h in range(2):
            scores = torch.stack([q[0, i, h] @ k[0, j, h] for j in keys]) / 4.0
            out[0, i, h] = (torch.softmax(scores, 0)[:, None] * v[0, keys, h]).sum(0)
    torch.testing.assert_close(layer(x, LayerContext()), x + layer.out_proj(out.reshape(1, T, 32)))


def _registered(name):
    from sosm.model.mixers import mixer_names
    return pytest.mark.skipif(name not in mixer_names(), reason=f"{name} is not registered in this build")


@pytest.mark.parametrize("T", LENGTHS)
@pytest.mark.parametrize("causal, global_mixer", [(True, "attention"), (False, "fnet"), (False, "linformer"),
                                                  pytest.param(True, "cosformer", marks=_registered("cosformer")),
                                                  pytest.param(False, "performer", marks=_registered("performer"))])
def test_triple_is_its_branches_mixed_by_the_gate(T, causal, global_mixer):
    torch.manual_seed(5)
    layer = TripleHybrid(config(model="triple", causal=causal, triple_global=global_mixer, triple_window=3,
                                mlp_ratio=2.0, linformer_k=4))
    torch.nn.init.normal_(layer.gate.weight, 0.0, 0.5)  # a gate that is not uniform
    x = torch.randn(2, T, 32)
    ctx = LayerContext()
    assert type(layer.global_mixer).name == global_mixer and type(layer.ossm).name == "ossm"
    gates = torch.softmax(layer.gate(layer.norm_gate(x)).view(2, T, 3, 32), dim=2)
    branches = [layer.local(x, ctx), layer.ossm(x, ctx), layer.global_mixer(x, ctx)]
    mid = x + sum(gates[:, :, b] * (branches[b] - x) for b in range(3))
    torch.testing.assert_close(layer(x, ctx), mid + layer.mlp(layer.norm_mlp(mid)), rtol=1e-5, atol=1e-5)


def test_triple_global_is_checked_against_the_registry_and_causality():
    with pytest.raises(ValueError, match="triple_global='fnet' is invalid; accepted: a causal global mixer"):
        SOSMConfig(model="triple", triple_global="fnet")
    with pytest.raises(ValueError, match="triple_global='lstm' is invalid; accepted: one of"):
        SOSMConfig(model="triple", triple_global="lstm", causal=False)
    SOSMConfig(triple_global="lstm")  # checked only where a triple layer is built
    from sosm.model.mixers import mixer_names
    if "cosformer" in mixer_names():  # the default, valid once registered
        assert SOSMConfig(model="triple").triple_global == "cosformer"
        with pytest.raises(ValueError, match="triple_global='fnet' is invalid; accepted: a causal global mixer in a "
                                             "causal model \\(\\['cosformer', 'performer', 'attention'\\]\\)"):
            SOSMConfig(model="triple", triple_global="fnet")
    else:
        with pytest.raises(ValueError, match="'cosformer' is not registered in this build"):
            SOSMConfig(model="triple")


def test_a_bidirectional_model_reads_later_tokens_and_refuses_incremental_decoding():
    model = SOSMModel(config(model="transformer", mlp_ratio=4.0)).eval()
    ids = random_ids(batch=1, seq=9)
    changed = ids.clone()
    changed[:, 8] = (changed[:, 8] + 1) % VOCAB
    assert not torch.equal(model(ids)[0][:, 0], model(changed)[0][:, 0])
    with pytest.raises(ValueError, match="incremental decoding needs a causal model; this model has causal=False"):
        model.decoder()
    with pytest.raises(NotImplementedError, match="built bidirectional"):
        model.stack.layers[0].step(torch.zeros(1, 1, 32), LayerContext(position=0), {})


def test_bidirectional_configs_are_checked():
    with pytest.raises(ValueError, match="SOSMConfig.causal=False is invalid; accepted: true, or false with a "
                                         "bidirectional graph"):
        SOSMConfig(model="hybrid", causal=False)
    with pytest.raises(ValueError, match="every layer of \\('mamba', 'mamba'\\) is causal-only"):
        SOSMConfig(model="mamba", n_layers=2, causal=False)
    with pytest.raises(ValueError, match="SOSMConfig.causal='no' is invalid"):
        SOSMConfig(causal="no")
    hybrid = SOSMConfig(model="hybrid", layer_pattern="mamba,graph_attention", causal=False, graph={"causal": False})
    assert not hybrid.causal  # causal-only mixers (Mamba) run left to right inside it


def test_a_bidirectional_graph_model_reads_later_tokens():
    model = tiny_model("hybrid", causal=False, layer_pattern="AM", graph={"k": 4, "window": 1, "max_distance": 16,
                                                                          "causal": False})
    ids = random_ids(batch=1)
    changed = ids.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % VOCAB
    assert not torch.equal(model(ids)[0][:, :10], model(changed)[0][:, :10])


def test_build_mixer_refuses_bidirectional_only_in_a_causal_stack():
    with pytest.raises(ValueError, match="'fnet' is bidirectional only .*so a causal model cannot use it"):
        build_mixer("fnet", config(model="fnet"), causal=True)
