"""save_pretrained / from_pretrained, and input validation."""
import json

import pytest
import torch

from sosm.model import SOSMModel

from .conftest import random_ids, tiny_model


@pytest.mark.parametrize("model_name", ["transformer", "hybrid"])
def test_save_load_round_trip(tmp_path, model_name):
    model = tiny_model(model_name, "graph_alibi" if model_name == "hybrid" else "rope")
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = SOSMModel.from_pretrained(tmp_path).eval()
    assert loaded.config == model.config
    ids = random_ids()
    assert torch.equal(loaded(ids)[0], model(ids)[0])


def test_corrupt_weights_name_the_file(tmp_path):
    tiny_model("transformer").save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match="model.safetensors"):
        SOSMModel.from_pretrained(tmp_path)


def test_mismatched_config_names_the_file_and_tensor(tmp_path):
    tiny_model("transformer").save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["d_model"] = 64
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"model.safetensors.*shape"):
        SOSMModel.from_pretrained(tmp_path)
    config["model"] = "mamba"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"model.safetensors does not match .*config.json"):
        SOSMModel.from_pretrained(tmp_path)


def test_bad_config_file_names_it(tmp_path):
    tiny_model("mamba").save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json"):
        SOSMModel.from_pretrained(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(ValueError, match="config.json does not exist"):
        SOSMModel.from_pretrained(tmp_path)


@pytest.mark.parametrize("bad, error, match", [
    (torch.zeros(2, 5), TypeError, "integer dtype"),
    (torch.zeros(5, dtype=torch.long), ValueError, r"\[B, T\]"),
    (torch.zeros(1, 33, dtype=torch.long), ValueError, "max_seq_len=32"),
    (torch.full((1, 4), 40, dtype=torch.long), ValueError, "vocab_size-1=39"),
    (torch.full((1, 4), -1, dtype=torch.long), ValueError, "vocab_size"),
    ([[1, 2]], TypeError, "torch.Tensor"),
])
def test_bad_input_ids(bad, error, match):
    with pytest.raises(error, match=match):
        tiny_model("transformer")(bad)


def test_model_needs_a_config():
    with pytest.raises(TypeError, match="SOSMConfig"):
        SOSMModel({"model": "hybrid"})
