"""Attention layers without an MLP (``mlp_ratio=0``, the models of Zoology's MQAR figure): every form agrees."""
import pytest
import torch

from sosm.analysis import DePass
from sosm.model import SOSMConfig, SOSMModel, param_count

VOCAB, SEQ = 40, 12


def _model(name: str) -> SOSMModel:
    torch.manual_seed(0)
    graph = name in ("hybrid", "graph_attention")
    config = SOSMConfig(model=name, vocab_size=VOCAB, max_seq_len=24, d_model=16, n_heads=2, n_layers=2,
                        layer_pattern="MA", d_state=4, struct_dim=4,
                        graph={"k": 3, "window": 1, "num_landmarks": 3 if graph else 0}, mlp_ratio=0)
    net = SOSMModel(config).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net


@pytest.mark.parametrize("name", ["transformer", "graph_attention", "hybrid"])
def test_no_mlp_layers_are_causal_decodable_and_decomposable(name):
    model = _model(name)
    assert not any("mlp" in n for n, _ in model.named_parameters())
    assert param_count(model.config) == sum(p.numel() for p in model.parameters())
    ids = torch.randint(0, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(1))
    logits, _ = model(ids)
    changed = ids.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % VOCAB
    torch.testing.assert_close(model(changed)[0][:, :7], logits[:, :7], rtol=0, atol=0)
    decoder = model.decoder(batch_size=2)
    stepped = torch.stack([decoder.step(ids[:, t]) for t in range(SEQ)], dim=1)
    torch.testing.assert_close(stepped, logits, rtol=1e-4, atol=1e-4)
    result = DePass(model).run(ids, by="token")
    assert (result.logits.sum(0) - logits).abs().max() <= 1e-4 * logits.abs().max()


def test_mlp_ratio_range():
    assert SOSMConfig(mlp_ratio=0, d_model=64).mlp_hidden == 0
    assert SOSMConfig(mlp_ratio=4.0, d_model=64).mlp_hidden == 256
    for bad in (-1.0, 0.001, True):
        with pytest.raises(ValueError, match="mlp_ratio"):
            SOSMConfig(mlp_ratio=bad, d_model=64)
    full = param_count(SOSMConfig(model="transformer", d_model=64, n_layers=2))
    bare = param_count(SOSMConfig(model="transformer", d_model=64, n_layers=2, mlp_ratio=0))
    assert full - bare == 2 * (64 * 256 + 256 + 256 * 64 + 64 + 64)  # fc_in, fc_out (+ biases), norm_mlp per layer
