"""Distillation: the loss against a hand computation, the teacher frozen in eval mode, the command line."""
from __future__ import annotations

import json
import math

import pytest
import torch
import yaml

from sosm.train import Trainer
from sosm.train.distill import DistillConfig, DistillTrainer, distillation_loss

from .toys import TinyCausalLM, tiny_factory


def _hand(student, teacher, targets, T, kl_weight, ce_weight) -> float:
    """Per token, in float64 with plain Python: kl_weight * T^2 * sum_v p_t (log p_t - log p_s) + ce_weight * CE."""
    total, count = 0.0, 0
    for s_row, t_row, y in zip(student.reshape(-1, student.shape[-1]).tolist(),
                               teacher.reshape(-1, teacher.shape[-1]).tolist(), targets.reshape(-1).tolist()):
        def log_softmax(row, temperature):
            scaled = [v / temperature for v in row]
            top = max(scaled)
            norm = top + math.log(sum(math.exp(v - top) for v in scaled))
            return [v - norm for v in scaled]
        log_ps, log_pt, log_p1 = log_softmax(s_row, T), log_softmax(t_row, T), log_softmax(s_row, 1.0)
        kl = sum(math.exp(lt) * (lt - ls) for lt, ls in zip(log_pt, log_ps))
        total += kl_weight * T * T * kl + ce_weight * -log_p1[y]
        count += 1
    return total / count


@pytest.mark.parametrize("T, kl_weight, ce_weight", [(1.0, 1.0, 0.0), (2.0, 0.3, 0.7), (4.0, 0.5, 0.5)])
def test_distillation_loss_equals_a_hand_computation(T, kl_weight, ce_weight):
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 3, 7, generator=g) * 3, torch.randn(2, 3, 7, generator=g) * 3
    targets = torch.randint(0, 7, (2, 3), generator=g)
    config = DistillConfig(temperature=T, kl_weight=kl_weight, ce_weight=ce_weight)
    got = distillation_loss(student, teacher, targets, config).item()
    assert got == pytest.approx(_hand(student, teacher, targets, T, kl_weight, ce_weight), rel=1e-5)


def test_the_soft_term_vanishes_on_the_teachers_own_logits_and_the_config_is_checked():
    z = torch.randn(1, 4, 5)
    assert distillation_loss(z, z, torch.zeros(1, 4, dtype=torch.long),
                             DistillConfig(kl_weight=1.0, ce_weight=0.0)).item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match=r"distill.temperature=0 is invalid"):
        DistillConfig(temperature=0)
    with pytest.raises(ValueError, match="both 0"):
        DistillConfig(kl_weight=0, ce_weight=0)
    with pytest.raises(ValueError, match="vocabulary"):
        distillation_loss(z, torch.randn(1, 4, 6), torch.zeros(1, 4, dtype=torch.long), DistillConfig())


def test_teacher_stays_frozen_in_eval_mode_and_hard_labels_alone_are_plain_training(make_config, tmp_path):
    config = make_config(max_steps=6, model={"dropout": 0.0})
    torch.manual_seed(5)
    teacher = TinyCausalLM(256, width=16, dropout=0.5)
    before = {n: p.clone() for n, p in teacher.state_dict().items()}
    plain = Trainer(config, tmp_path / "plain", model_factory=tiny_factory).train()
    hard_only = DistillTrainer(config, tmp_path / "hard", model_factory=tiny_factory, teacher=teacher,
                               distill=DistillConfig(kl_weight=0.0, ce_weight=1.0))
    assert hard_only.train().losses == plain.losses  # the teacher's term at weight 0 changes nothing, bit for bit
    assert not hard_only.teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(before[n], p) for n, p in teacher.state_dict().items())
    soft = DistillTrainer(config, tmp_path / "soft", model_factory=tiny_factory, teacher=teacher,
                          distill=DistillConfig(temperature=2.0, kl_weight=0.5, ce_weight=0.5)).train()
    assert soft.losses != plain.losses
    assert [e["val_loss"] for e in soft.evals] != [e["val_loss"] for e in plain.evals]


def test_distill_command_trains_a_student_from_a_teacher(tiny_run, tmp_path):
    from sosm.cli import main
    from sosm.train.loading import load_trained

    teacher = load_trained(tiny_run)
    config = {"name": "student", "max_steps": 4, "batch_size": 2, "eval_interval": 2, "eval_iters": 1,
              "progress_bar": False, "tensorboard": False, "device": "cpu", "data": teacher.config.to_dict()["data"],
              "model": {**teacher.config.model, "d_model": 16, "n_heads": 2},
              "distill": {"temperature": 2.0, "kl_weight": 0.7, "ce_weight": 0.3}}
    (tmp_path / "student.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "student"
    assert main(["distill", "--teacher", str(tiny_run), "--config", str(tmp_path / "student.yaml"),
                 "--out", str(out)]) == 0
    result = json.loads((out / "distill_result.json").read_text())
    assert result["student_parameters"] < result["teacher_parameters"] and result["steps"] == 4
    student = load_trained(out)
    assert student.model.config.d_model == 16
    config["data"]["block_size"] = 8
    (tmp_path / "student.yaml").write_text(yaml.safe_dump(config))
    assert main(["distill", "--teacher", str(tiny_run), "--config", str(tmp_path / "student.yaml"),
                 "--out", str(tmp_path / "other")]) == 2  # the student must share the teacher's context
