"""Checkpoints: atomic writes survive a crash mid-save; corrupt or mismatched files name themselves."""
from __future__ import annotations

import json

import pytest
import torch

from sosm.train import CheckpointError, Trainer, read_checkpoint
from sosm.train import checkpoint as ckpt
from sosm.train.checkpoint import find_checkpoint, list_checkpoints, load_model_state, write_checkpoint

from .toys import TinyCausalLM, tiny_factory


def _write(run_dir, step, model):
    return write_checkpoint(run_dir, step, model_state=model.state_dict(), config={"seed": 1},
                            optimizer_state={"state": {}, "param_groups": []}, trainer_state={"step": step})


def test_round_trip_with_tied_weights(tmp_path):
    model = TinyCausalLM(32)
    model.head = torch.nn.Linear(16, 32, bias=False)
    model.head.weight = model.embed.weight  # tied: stored once, restored under both names
    path = _write(tmp_path, 3, model)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["aliases"] == {"head.weight": "embed.weight"}
    loaded = read_checkpoint(tmp_path)
    assert loaded.step == 3 and loaded.path == path
    fresh = TinyCausalLM(32)
    fresh.head = torch.nn.Linear(16, 32, bias=False)
    fresh.head.weight = fresh.embed.weight
    load_model_state(fresh, loaded)
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name
    assert fresh.head.weight is fresh.embed.weight


def test_crash_during_save_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch):
    model = TinyCausalLM(32)
    _write(tmp_path, 1, model)
    real = ckpt.write_synced
    calls = {"n": 0}

    def dying_write(path, data):
        calls["n"] += 1
        if calls["n"] == 3:  # after model.safetensors and config.json, before the rest
            real(path, data[: len(data) // 2])
            raise OSError("simulated power loss")
        real(path, data)

    monkeypatch.setattr(ckpt, "write_synced", dying_write)
    with torch.no_grad():
        model.embed.weight.add_(1.0)
    with pytest.raises(OSError, match="simulated power loss"):
        _write(tmp_path, 2, model)
    monkeypatch.setattr(ckpt, "write_synced", real)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0000001"]
    assert read_checkpoint(tmp_path).step == 1  # the half-written temp dir is ignored
    _write(tmp_path, 2, model)  # the next save cleans the leftovers
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))
    assert read_checkpoint(tmp_path).step == 2


def test_truncated_safetensors_names_the_file(tmp_path):
    path = _write(tmp_path, 1, TinyCausalLM(32))
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"model\.safetensors has 100 bytes.*truncated"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match=r"model\.safetensors is not a readable safetensors file"):
        read_checkpoint(path, verify=False)


def test_edited_config_shape_names_the_file(make_config, tmp_path):
    Trainer(make_config(max_steps=4), tmp_path / "r", model_factory=tiny_factory).train()
    path = find_checkpoint(tmp_path / "r")
    config = json.loads((path / "config.json").read_text())
    config["model"]["width"] = 24
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"config\.json has .* manifest records"):
        read_checkpoint(path)
    loaded = read_checkpoint(path, verify=False)  # with the hash check off, the shape check still names both
    with pytest.raises(CheckpointError, match=r"model\.safetensors has tensor shapes .*config\.json: "
                                              r"embed\.weight: file \(\d+, 16\) vs model \(\d+, 24\)"):
        load_model_state(tiny_factory(loaded.config["model"], 256, 16), loaded)


def test_invalid_json_and_missing_files_name_the_file(tmp_path):
    path = _write(tmp_path, 1, TinyCausalLM(32))
    (path / "trainer_state.json").unlink()
    with pytest.raises(CheckpointError, match=r"trainer_state\.json is missing"):
        read_checkpoint(path)
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"manifest\.json is not valid JSON"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        read_checkpoint(tmp_path / "nothing-here")


def test_mismatched_model_names_missing_tensors(tmp_path):
    _write(tmp_path, 1, TinyCausalLM(32))
    other = torch.nn.Sequential(torch.nn.Linear(3, 3))
    with pytest.raises(CheckpointError, match=r"model\.safetensors does not match.*missing tensors \['0\.bias'"):
        load_model_state(other, read_checkpoint(tmp_path))


def test_keep_last_and_overwrite_same_step(tmp_path):
    model = TinyCausalLM(32)
    for step in (1, 2, 3, 4):
        write_checkpoint(tmp_path, step, model_state=model.state_dict(), config={}, keep_last=2,
                         optimizer_state={}, trainer_state={"step": step})
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0000003", "step_0000004"]
    _write(tmp_path, 4, model)
    assert read_checkpoint(tmp_path).step == 4
    with pytest.raises(ValueError, match=r"keep_last=0 is invalid"):
        write_checkpoint(tmp_path, 5, model_state={}, config={}, optimizer_state={}, trainer_state={}, keep_last=0)


def test_a_corrupt_newest_checkpoint_points_to_the_older_one_that_loads(make_config, tmp_path):
    Trainer(make_config(max_steps=16), tmp_path / "r", model_factory=tiny_factory).train()
    newest, older = find_checkpoint(tmp_path / "r"), tmp_path / "r" / "checkpoints" / "step_0000008"
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=rf"model\.safetensors has 100 bytes.*; the older checkpoint {older} "
                                              rf"\(step 8\) loads: move {newest} aside"):
        read_checkpoint(tmp_path / "r")
    with pytest.raises(CheckpointError, match=r"model\.safetensors has 100 bytes.*truncated[^;]*$"):
        read_checkpoint(newest)  # a checkpoint folder named on its own: no other checkpoint to suggest
    older.joinpath("optimizer.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"no older checkpoint of .* loads either"):
        read_checkpoint(tmp_path / "r")
