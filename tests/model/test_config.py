import json

import pytest

from sosm.graph import GraphConfig
from sosm.model import SOSMConfig, matched_config

from .conftest import tiny_config


def test_defaults_are_valid_and_hybrid_pattern():
    config = SOSMConfig()
    assert config.model == "hybrid" and config.layer_types == "AMMM"
    assert SOSMConfig(n_layers=6).layer_types == "AMMMAM"
    assert SOSMConfig(model="transformer").layer_types == "TTTT"
    assert config.graph.num_landmarks == config.num_landmarks


def test_json_and_yaml_round_trip():
    config = tiny_config("hybrid", "graph_alibi", dropout=0.1)
    assert SOSMConfig.from_json(config.to_json()) == config
    assert SOSMConfig.from_yaml(config.to_yaml()) == config
    assert isinstance(SOSMConfig.from_json(config.to_json()).graph, GraphConfig)
    assert json.loads(config.to_json())["graph"]["k"] == 4


def test_file_round_trip(tmp_path):
    config = tiny_config("mamba")
    (tmp_path / "c.yaml").write_text(config.to_yaml())
    (tmp_path / "c.json").write_text(config.to_json())
    assert SOSMConfig.from_file(tmp_path / "c.yaml") == config == SOSMConfig.from_file(tmp_path / "c.json")


def test_unknown_keys_rejected_listing_valid_ones():
    with pytest.raises(ValueError, match=r"unknown SOSMConfig keys \['n_layer'\].*valid keys.*n_layers"):
        SOSMConfig.from_dict({"n_layer": 3})
    with pytest.raises(ValueError, match="unknown GraphConfig keys"):
        SOSMConfig.from_dict({"graph": {"kk": 3}})


def test_misspelt_key_suggests_the_right_one():
    with pytest.raises(ValueError, match=r"unknown SOSMConfig keys \['d_modle'\]; valid keys are .*'d_model'.*"
                                         r"; did you mean 'd_model'\?$"):
        SOSMConfig.from_dict({"d_modle": 64})


@pytest.mark.parametrize("overrides, name", [
    (dict(model="rnn"), "model"), (dict(d_model=30, n_heads=4), "d_model"), (dict(positional="alibi"), "positional"),
    (dict(layer_pattern="AXM"), "layer_pattern"), (dict(vocab_size=1), "vocab_size"), (dict(dropout=1.0), "dropout"),
    (dict(model="transformer", positional="graph_rope"), "positional"),
    (dict(num_landmarks=0, positional="graph_alibi"), "positional"),
    (dict(d_model=16, n_heads=4, num_landmarks=4, positional="graph_rope"), "positional"),
])
def test_invalid_values_name_the_field(overrides, name):
    with pytest.raises(ValueError, match=f"SOSMConfig.{name}="):
        SOSMConfig(**overrides)


def test_graph_config_not_shared_or_mutated():
    graph = GraphConfig(k=4)
    SOSMConfig(graph=graph, num_landmarks=4)
    assert graph.num_landmarks == 0


@pytest.mark.parametrize("model", ["transformer", "mamba", "graph_attention"])
def test_matched_config_within_five_percent(model):
    hybrid = SOSMConfig(d_model=64, vocab_size=65, max_seq_len=64)
    matched = matched_config(hybrid, model)
    assert matched.model == model
    assert abs(matched.param_count() - hybrid.param_count()) <= 0.05 * hybrid.param_count()


@pytest.mark.parametrize("model", ["hybrid", "graph_attention", "mamba"])
def test_matched_config_from_a_transformer(model):
    """Matching *to* a baseline: the hybrid's count must include every layer code of its pattern."""
    transformer = SOSMConfig(model="transformer", d_model=64, n_layers=4, vocab_size=65, max_seq_len=64)
    matched = matched_config(transformer, model)
    assert matched.model == model
    assert abs(matched.param_count() - transformer.param_count()) <= 0.05 * transformer.param_count()


def test_model_code_calls_no_triton_kernel_directly():
    from pathlib import Path

    import sosm.model

    for path in Path(sosm.model.__file__).parent.glob("*.py"):
        source = path.read_text()
        assert "import triton" not in source and "triton." not in source, f"{path.name} uses triton directly"
