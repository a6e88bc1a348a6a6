"""Factorized embeddings (ALBERT, ``SOSMConfig.embed_dim``): every model kind, the tied head through the same
factor, exact parameter counts, decoding equal to the forward."""
from __future__ import annotations

import pytest
import torch

from sosm.model import SOSMConfig, SOSMModel, param_count

V, D, E = 97, 32, 8


def _config(model: str, **changes) -> SOSMConfig:
    base = {"model": model, "vocab_size": V, "d_model": D, "n_heads": 2, "n_layers": 2, "max_seq_len": 32,
            "d_state": 4, "struct_dim": 4, "graph": {"num_landmarks": 2}}
    return SOSMConfig.from_dict({**base, **changes})


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("model", ["hybrid", "transformer", "mamba", "graph_attention", "mamba2", "rwkv", "retnet"])
@pytest.mark.parametrize("tie", [True, False])
def test_every_model_kind_factors_and_param_count_stays_exact(model, tie):
    config = _config(model, embed_dim=E, tie_embeddings=tie)
    built = SOSMModel(config)
    assert param_count(config) == _count(built)
    assert built.token_embedding.weight.shape == (V, E)
    logits, _ = built(torch.randint(0, V, (2, 9)))
    assert logits.shape == (2, 9, V) and torch.isfinite(logits).all()


@pytest.mark.parametrize("model", ["transformer", "mamba"])
def test_a_baseline_trades_v_times_d_for_v_times_e_plus_the_two_projections(model):
    plain, factored = _config(model), _config(model, embed_dim=E)
    assert param_count(plain) - param_count(factored) == V * D - (V * E + E * D + D * E)  # embedding, in, head
    untied = _config(model, embed_dim=E, tie_embeddings=False)
    assert param_count(untied) - param_count(_config(model, tie_embeddings=False)) == V * E + E * D - V * D


def test_the_graph_models_factor_already_and_embed_dim_sets_their_inner_width():
    default, explicit = _config("hybrid"), _config("hybrid", embed_dim=128)
    assert param_count(default) == param_count(explicit)  # 0 means the built-in vocab -> 128 -> 64
    narrow = _config("hybrid", embed_dim=E)
    # token embedding V·e, to_semantic e·64, block gates e·16 + 16, temporal from_token e·32, head_proj d·e
    per_unit_of_e = V + 64 + 16 + 32 + D
    assert param_count(default) - param_count(narrow) == (128 - E) * per_unit_of_e


def test_the_tied_head_reads_the_embedding_through_the_same_factor():
    model = SOSMModel(_config("transformer", embed_dim=E)).eval()
    x = torch.randn(1, 3, D)
    expected = (x @ model.head_proj.weight.T) @ model.token_embedding.weight.T  # d -> e -> V
    assert torch.allclose(model.logits_from_hidden(x), expected, atol=1e-6)
    assert model.embed_tokens(torch.tensor([[5]])).shape == (1, 1, D)


@pytest.mark.parametrize("model", ["transformer", "hybrid"])
def test_decoding_step_by_step_equals_the_forward_when_factorized(model):
    torch.manual_seed(0)
    built = SOSMModel(_config(model, embed_dim=E)).eval()
    ids = torch.randint(0, V, (1, 7))
    full, _ = built(ids)
    decoder = built.decoder(1)
    steps = torch.stack([decoder.step(ids[:, t]) for t in range(7)], dim=1)
    assert torch.allclose(steps, full, atol=1e-5)


def test_embed_dim_is_validated():
    with pytest.raises(ValueError, match=r"SOSMConfig.embed_dim=-1 is invalid"):
        _config("transformer", embed_dim=-1)
