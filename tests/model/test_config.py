import json

import pytest

from sosm.graph import GraphConfig
from sosm.model import SOSMConfig, matched_config, param_count

from .conftest import tiny_config


def test_defaults_are_valid_and_hybrid_pattern():
    config = SOSMConfig()
    assert config.model == "hybrid" and config.layer_types == ("graph_attention", "mamba", "mamba", "mamba")
    assert SOSMConfig(n_layers=6).layer_types[4:] == ("graph_attention", "mamba")
    assert SOSMConfig(model="transformer").layer_types == ("attention",) * 4
    assert config.graph.num_landmarks == 8


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
    (dict(graph={"num_landmarks": 0}, positional="graph_alibi"), "positional"),
    (dict(d_model=16, n_heads=4, graph={"num_landmarks": 4}, positional="graph_rope"), "positional"),
])
def test_invalid_values_name_the_field(overrides, name):
    with pytest.raises(ValueError, match=f"SOSMConfig.{name}="):
        SOSMConfig(**overrides)


def test_graph_config_not_shared_or_mutated():
    graph = GraphConfig(k=4)
    config = SOSMConfig(graph=graph)
    assert config.graph == graph and config.graph is not graph
    config.graph.k = 5
    assert graph.k == 4


def test_graph_dict_is_laid_over_the_model_graph_defaults():
    assert SOSMConfig().graph.num_landmarks == 8  # the model's default; GraphConfig() alone has none
    config = SOSMConfig(graph={"k": 4})
    assert (config.graph.k, config.graph.window, config.graph.num_landmarks) == (4, 1, 8)
    assert SOSMConfig(graph={"num_landmarks": 0}).graph.num_landmarks == 0


def test_renamed_knobs_still_load_with_a_warning_naming_the_new_name():
    old = {"model": "hybrid", "num_landmarks": 4, "graph": {"block_size": 64, "seed": 3, "k": 4}}
    with pytest.warns(FutureWarning) as record:
        config = SOSMConfig.from_dict(old)
    messages = " ".join(str(w.message) for w in record)
    assert "graph.num_landmarks" in messages and "topk_tile" in messages and "sample_seed" in messages
    assert (config.graph.num_landmarks, config.graph.topk_tile, config.graph.sample_seed) == (4, 64, 3)
    with pytest.raises(ValueError, match="keep only graph.num_landmarks"):
        SOSMConfig.from_dict({"num_landmarks": 4, "graph": {"num_landmarks": 2}})
    with pytest.raises(ValueError, match="keep only 'topk_tile'"):
        GraphConfig.from_dict({"block_size": 64, "topk_tile": 32})


@pytest.mark.parametrize("model", ["transformer", "mamba", "graph_attention"])
def test_matched_config_within_five_percent(model):
    hybrid = SOSMConfig(d_model=64, vocab_size=65, max_seq_len=64)
    matched = matched_config(hybrid, model)
    assert matched.model == model
    assert abs(param_count(matched) - param_count(hybrid)) <= 0.05 * param_count(hybrid)


@pytest.mark.parametrize("model", ["hybrid", "graph_attention", "mamba"])
def test_matched_config_from_a_transformer(model):
    """Matching *to* a baseline: the hybrid's count must include every layer code of its pattern."""
    transformer = SOSMConfig(model="transformer", d_model=64, n_layers=4, vocab_size=65, max_seq_len=64)
    matched = matched_config(transformer, model)
    assert matched.model == model
    assert abs(param_count(matched) - param_count(transformer)) <= 0.05 * param_count(transformer)


def test_model_code_calls_no_triton_kernel_directly():
    from pathlib import Path

    import sosm.model

    for path in Path(sosm.model.__file__).parent.glob("*.py"):
        source = path.read_text()
        assert "import triton" not in source and "triton." not in source, f"{path.name} uses triton directly"
