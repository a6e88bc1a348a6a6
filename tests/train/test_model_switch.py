"""`sosm train --model`: one switch picks the model, sized to the config model's parameter count."""
import pytest

from sosm.cli.train_cmd import switch_model
from sosm.model import SOSMConfig, param_count
from sosm.train import TrainConfig


@pytest.mark.parametrize("model", ["transformer", "mamba", "graph_attention"])
def test_switch_model_matches_parameter_count(model):
    config = TrainConfig.from_dict({"data": {"tokenizer": "byte", "block_size": 32},
                                    "model": {"model": "hybrid", "d_model": 64, "n_heads": 4, "n_layers": 4}})
    section = switch_model(config, model)
    assert section["model"] == model
    filled = {"vocab_size": 256, "max_seq_len": 32}
    reference = param_count(SOSMConfig.from_dict({**config.model, **filled}))
    switched = param_count(SOSMConfig.from_dict({**section, **filled}))
    assert abs(switched - reference) <= 0.05 * reference


def test_switch_to_same_model_keeps_section():
    config = TrainConfig.from_dict({"model": {"model": "hybrid", "d_model": 64}})
    assert switch_model(config, "hybrid") == config.model


def test_switch_to_an_unknown_model_names_the_accepted_ones():
    config = TrainConfig.from_dict({"data": {"tokenizer": "byte", "block_size": 32},
                                    "model": {"model": "hybrid", "d_model": 64, "n_heads": 4, "n_layers": 4}})
    with pytest.raises(ValueError, match=r"model='lstm' is invalid; accepted: one of \('hybrid', 'transformer'"):
        switch_model(config, "lstm")
