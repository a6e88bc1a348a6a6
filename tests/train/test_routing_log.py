"""Training a routed model: the auxiliary losses reach the gradient, routing statistics reach log.jsonl."""
from __future__ import annotations

import pytest

from sosm.train import Trainer
from sosm.train.run_log import read_log

MOE = {"model": "transformer", "d_model": 16, "n_heads": 2, "n_layers": 2, "moe_experts": 4, "moe_k": 2,
       "moe_capacity": 1.0}


def test_routing_statistics_are_logged_every_log_interval(make_config, tmp_path):
    config = make_config(max_steps=8, model={**MOE, "mod_every": 2})
    Trainer(config, tmp_path / "run").train()
    records = [r for r in read_log(tmp_path / "run") if r["kind"] == "routing"]
    assert [r["step"] for r in records] == [4, 8]
    record = records[-1]
    assert len(record["layers.0.mlp.load"]) == 4 and sum(record["layers.0.mlp.load"]) == pytest.approx(1, abs=1e-3)
    for key in ("dropped", "unrouted", "entropy", "aux_loss", "experts_per_token"):
        assert isinstance(record[f"layers.0.mlp.{key}"], float), key
    assert 0 < record["layers.1.through"] <= 1  # the Mixture-of-Depths layer (mod_every=2: layer 1)
    assert "layers.1.inner.mlp.load" in record  # its wrapped attention's MoE


def test_the_auxiliary_loss_is_added_to_the_training_loss(make_config, tmp_path):
    """Same run with the balance and z weights at 0 and at 1: the losses diverge after the first update."""
    curves = []
    for weight in (0.0, 1.0):
        model = {**MOE, "moe_balance_weight": weight, "moe_z_weight": weight}
        curves.append(Trainer(make_config(max_steps=3, model=model), tmp_path / f"w{weight}").train().losses)
    assert curves[0][1] == curves[1][1]  # the logged loss is the language-model loss alone
    assert curves[0][3] != curves[1][3]


def test_a_model_without_routing_logs_no_routing_record(make_config, tmp_path):
    Trainer(make_config(max_steps=4, model={"model": "transformer", "d_model": 16, "n_heads": 2, "n_layers": 1}),
            tmp_path / "run").train()
    assert not [r for r in read_log(tmp_path / "run") if r["kind"] == "routing"]
