"""LoRA through peft: adapters on the mixers' projections and MLPs, merge == unmerged, adapters saved alone,
the base frozen bit for bit through ``sosm finetune``."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from sosm.model import SOSMConfig, SOSMModel
from sosm.train.lora import (ADAPTER_CONFIG, ADAPTER_WEIGHTS, DEFAULT_TARGETS, LoRAConfig, add_lora, adapter_state,
                             import_peft, load_adapter, merge, merge_and_unload, parameter_share, save_adapter,
                             unmerge)

try:
    import_peft()  # not pytest.importorskip: run from the repository root, a plain import of peft finds our kernels/
except RuntimeError as err:
    pytest.skip(str(err), allow_module_level=True)


def _model(kind: str = "hybrid") -> SOSMModel:
    torch.manual_seed(0)
    return SOSMModel(SOSMConfig(model=kind, vocab_size=61, d_model=32, n_heads=2, n_layers=2, d_state=4,
                                struct_dim=4, max_seq_len=24, graph={"num_landmarks": 2})).eval()


def _adapted(kind: str = "hybrid", **lora) -> SOSMModel:
    model = add_lora(_model(kind), LoRAConfig(rank=4, alpha=8.0, **lora))
    with torch.no_grad():  # B starts at 0 (the adapted model starts as the base): give it a real update to merge
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.05)
    return model


IDS = torch.randint(0, 61, (2, 17), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("kind", ["hybrid", "transformer", "mamba2", "rwkv", "retnet"])
def test_adapters_target_every_mixers_projections_and_only_they_train(kind):
    model = _adapted(kind)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    wrapped = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if hasattr(m, "lora_A")}
    assert wrapped and wrapped <= set(DEFAULT_TARGETS)
    share = parameter_share(model)
    assert 0 < share["share"] < 0.5 and share["trainable"] == sum(p.numel() for n, p in model.named_parameters()
                                                                   if n in trainable)


def test_merged_output_equals_unmerged_and_unmerge_restores_it():
    model = _adapted()
    base_logits = _model()(IDS)[0]
    unmerged = model(IDS)[0]
    assert not torch.allclose(unmerged, base_logits, atol=1e-4), "the adapters must change the output"
    merge(model)
    torch.testing.assert_close(model(IDS)[0], unmerged, rtol=1e-5, atol=1e-5)
    unmerge(model)
    torch.testing.assert_close(model(IDS)[0], unmerged, rtol=1e-5, atol=1e-5)
    plain = merge_and_unload(model)
    assert not any("lora" in n or "base_layer" in n for n in plain.state_dict())
    assert set(plain.state_dict()) == set(_model().state_dict())  # the base's names again
    torch.testing.assert_close(plain(IDS)[0], unmerged, rtol=1e-5, atol=1e-5)


def test_adapters_are_saved_alone_and_load_onto_a_fresh_base(tmp_path):
    model = _adapted(target_modules=["qkv", "fc_out"])
    config = LoRAConfig(rank=4, alpha=8.0, target_modules=["qkv", "fc_out"])
    save_adapter(model, config, tmp_path / "adapter")
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == sorted([ADAPTER_CONFIG, ADAPTER_WEIGHTS])
    stored = json.loads((tmp_path / "adapter" / ADAPTER_CONFIG).read_text())
    assert stored["r"] == 4 and stored["lora_alpha"] == 8.0 and stored["peft_type"] == "LORA"
    loaded = load_adapter(_model(), tmp_path / "adapter")
    assert set(adapter_state(loaded)) == set(adapter_state(model))
    torch.testing.assert_close(loaded(IDS)[0], model(IDS)[0], rtol=0, atol=0)


def test_bad_lora_settings_are_named():
    with pytest.raises(ValueError, match=r"lora.target_modules names \['q_proj'\].*accepted: names of its nn.Linear"):
        add_lora(_model(), LoRAConfig(target_modules=["q_proj"]))
    with pytest.raises(ValueError, match=r"lora.rank=0 is invalid"):
        LoRAConfig(rank=0)
    with pytest.raises(ValueError, match="rnak"):
        LoRAConfig.from_dict({"rnak": 4})
    with pytest.raises(ValueError, match="no LoRA adapters"):
        merge(_model())


def test_finetune_command_trains_adapters_keeps_the_base_and_writes_adapter_and_merged(tiny_run, tmp_path):
    from safetensors.torch import load_file

    from sosm.cli import main
    from sosm.train import read_checkpoint
    from sosm.train.loading import load_trained

    config = {"name": "ft", "max_steps": 6, "batch_size": 2, "eval_interval": 3, "eval_iters": 1,
              "checkpoint_interval": 3, "progress_bar": False, "tensorboard": False, "device": "cpu",
              "data": {"dataset": "default"}, "optim": {"lr": 1e-2, "warmup_steps": 1},
              "lora": {"rank": 2, "alpha": 4, "target_modules": ["qkv", "in_proj", "fc_out"]}}
    (tmp_path / "ft.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "ft"
    assert main(["finetune", "--checkpoint", str(tiny_run), "--config", str(tmp_path / "ft.yaml"),
                 "--out", str(out)]) == 0
    base = read_checkpoint(tiny_run).model_state
    tuned = read_checkpoint(out).model_state
    for name, tensor in base.items():  # every base tensor, bit for bit (wrapped ones under base_layer)
        prefix, _, leaf = name.rpartition(".")
        key = name if name in tuned else f"{prefix}.base_layer.{leaf}"
        assert torch.equal(tuned[key], tensor), name
    adapters = load_file(str(out / "adapter" / ADAPTER_WEIGHTS))
    assert adapters and all(".lora_" in n for n in adapters)
    assert any(t.abs().max() > 0 for n, t in adapters.items() if "lora_B" in n), "the adapters trained"
    result = json.loads((out / "finetune_result.json").read_text())
    assert 0 < result["share"] < 0.2 and result["before"]["val_loss"] > result["after"]["val_loss"]
    merged = load_trained(out / "merged")
    adapted = load_adapter(load_trained(tiny_run).model, out / "adapter")
    ids = torch.randint(0, 256, (1, 24), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(merged.model(ids)[0], adapted(ids)[0], rtol=1e-5, atol=1e-5)
    config["lora"]["rank"] = 3
    (tmp_path / "ft.yaml").write_text(yaml.safe_dump(config))
    assert main(["finetune", "--checkpoint", str(tiny_run), "--config", str(tmp_path / "ft.yaml"),
                 "--out", str(out), "--resume", "--max-steps", "8"]) == 2  # another LoRA: refused, one line
