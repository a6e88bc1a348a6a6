"""Trainer: exact resume after a stop or a crash, determinism, schedule, logs, config checks."""
from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from sosm.train import CheckpointError, TrainConfig, Trainer, lr_at
from sosm.train.run_log import read_log

from .toys import tiny_factory


def run(config, out, **kwargs):
    return Trainer(config, out, model_factory=tiny_factory, **kwargs).train()


def test_same_seed_same_loss_curve(make_config, tmp_path):
    a = run(make_config(), tmp_path / "a")
    b = run(make_config(), tmp_path / "b")
    assert a.losses == b.losses and len(a.losses) == 24
    c = run(make_config(seed=7), tmp_path / "c")
    assert c.losses != a.losses


@pytest.mark.parametrize("stop", [5, 8, 13])
def test_stop_then_resume_reproduces_curve_exactly(make_config, tmp_path, stop):
    full = run(make_config(), tmp_path / "full")
    first = run(make_config(max_steps=stop), tmp_path / "part")
    second = run(make_config(), tmp_path / "part", resume=True)
    assert first.final_step == stop and second.start_step == stop
    assert {**first.losses, **second.losses} == full.losses  # bit-for-bit on CPU
    assert second.evals[-1] == full.evals[-1]


def test_crash_mid_run_then_resume_reproduces_curve_exactly(make_config, tmp_path):
    full = run(make_config(), tmp_path / "full")

    def crash(trainer, step, loss):
        if step == 19:
            raise RuntimeError("simulated kill")

    seen = {}
    with pytest.raises(RuntimeError, match="simulated kill"):
        Trainer(make_config(), tmp_path / "crash", model_factory=tiny_factory,
                step_callback=lambda t, s, l: (seen.__setitem__(s, l), crash(t, s, l))).train()
    resumed = run(make_config(), tmp_path / "crash", resume=True)
    assert resumed.start_step == 16  # the newest checkpoint before the crash
    assert {s: l for s, l in seen.items() if s <= 16} == {s: full.losses[s] for s in range(1, 17)}
    assert resumed.losses == {s: full.losses[s] for s in range(17, 25)}
    steps = [r["step"] for r in read_log(tmp_path / "crash") if r["kind"] == "train"]
    assert steps == sorted(set(steps)), "records of the crashed steps 17-19 must be dropped on resume"


@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_signal_stops_after_the_step_with_a_checkpoint_and_resume_is_exact(make_config, tmp_path, name):
    """timeout / preemption / one Ctrl-C: stop after the current step, save it, --resume continues bit for bit."""
    number = getattr(signal, name)
    before = signal.getsignal(number)
    full = run(make_config(), tmp_path / "full")

    def send(trainer, step, loss):
        if step == 11:  # not a checkpoint step (every 8)
            os.kill(os.getpid(), number)

    stopped = Trainer(make_config(), tmp_path / "part", model_factory=tiny_factory, step_callback=send).train()
    assert stopped.stopped_by == name and stopped.final_step == 11
    assert stopped.checkpoint.endswith("0000011") and stopped.losses == {s: full.losses[s] for s in range(1, 12)}
    assert signal.getsignal(number) == before, "the trainer must put the previous handler back"
    summary = json.loads((tmp_path / "part" / "summary.json").read_text())
    assert summary["finished"] is False and summary["stopped_by"] == name and summary["steps"] == 11
    assert [r["signal"] for r in read_log(tmp_path / "part") if r.get("event") == "stopped"] == [name]
    resumed = run(make_config(), tmp_path / "part", resume=True)
    assert resumed.start_step == 11 and resumed.stopped_by is None
    assert resumed.losses == {s: full.losses[s] for s in range(12, 25)}
    assert json.loads((tmp_path / "part" / "summary.json").read_text())["finished"] is True


def test_extending_max_steps_keeps_the_pinned_schedule(make_config, tmp_path):
    cfg = make_config(optim={"lr_decay_steps": None})
    run(cfg.replace(max_steps=8), tmp_path / "r")
    trainer = Trainer(cfg, tmp_path / "r", resume=True, model_factory=tiny_factory)
    assert trainer.config.optim.lr_decay_steps == 8


def test_resume_with_changed_config_names_the_file_and_difference(make_config, tmp_path):
    run(make_config(max_steps=8), tmp_path / "r")
    with pytest.raises(CheckpointError, match=r"config\.json.*optim\.lr: 0\.003 -> 0\.01"):
        Trainer(make_config(optim={"lr": 1e-2}), tmp_path / "r", resume=True, model_factory=tiny_factory)
    with pytest.raises(CheckpointError, match=r"model\.width: <absent> -> 24"):
        Trainer(make_config(model={"width": 24}), tmp_path / "r", resume=True, model_factory=tiny_factory)


def test_refuses_to_overwrite_a_run_without_resume(make_config, tmp_path):
    run(make_config(max_steps=8), tmp_path / "r")
    with pytest.raises(ValueError, match="already holds checkpoints"):
        Trainer(make_config(), tmp_path / "r", model_factory=tiny_factory)


def test_logs_summary_and_keep_last(make_config, tmp_path):
    result = run(make_config(), tmp_path / "r")
    records = read_log(tmp_path / "r")
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == [4, 8, 12, 16, 20, 24]
    assert all({"loss", "lr", "grad_norm", "tokens_per_s"} <= set(r) for r in train)
    assert [r["step"] for r in records if r["kind"] == "eval"] == [8, 16, 24]
    assert sorted(p.name for p in (tmp_path / "r" / "checkpoints").iterdir()) == ["step_0000016", "step_0000024"]
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["steps"] == 24 and summary["leaky"] is False and summary["parameters"] == result.parameters
    assert result.evals[-1]["val_loss"] < result.evals[0]["val_loss"] + 0.5


def test_leaky_run_is_labelled(make_config, tmp_path, capsys):
    cfg = make_config(max_steps=4, model={"graph": {"causal": False}})
    assert cfg.leaky and cfg.display_name.startswith("LEAKY")
    run(cfg, tmp_path / "r")
    assert "LEAKY" in capsys.readouterr().out
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["display_name"].startswith("LEAKY")
    assert all(r.get("leaky") is True for r in read_log(tmp_path / "r") if r["kind"] in ("train", "eval"))


def test_schedule_values():
    kw = dict(lr=1.0, min_lr=0.1, warmup_steps=4, decay_steps=12)
    assert [lr_at(s, **kw) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_at(4, **kw) == 1.0
    assert lr_at(8, **kw) == pytest.approx(0.55)  # half-way down the cosine
    assert lr_at(12, **kw) == lr_at(1000, **kw) == 0.1
    values = [lr_at(s, **kw) for s in range(4, 13)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert lr_at(0, lr=1.0, min_lr=0.0, warmup_steps=0, decay_steps=10) == 1.0
    with pytest.raises(ValueError, match="warmup_steps"):
        lr_at(0, lr=1.0, min_lr=0.0, warmup_steps=-1, decay_steps=10)


def test_config_rejects_unknown_keys_and_bad_values(tmp_path):
    with pytest.raises(ValueError, match=r"unknown keys \['lrate'\] in config section 'optim'; valid keys are \['lr'"):
        TrainConfig.from_dict({"optim": {"lrate": 1}})
    with pytest.raises(ValueError, match=r"unknown keys \['epochs'\].*valid keys are"):
        TrainConfig.from_dict({"epochs": 3})
    with pytest.raises(ValueError, match=r"data\.tokenizer='char' is invalid; accepted: one of"):
        TrainConfig.from_dict({"data": {"tokenizer": "char"}})
    with pytest.raises(ValueError, match=r"train\.batch_size=0"):
        TrainConfig.from_dict({"batch_size": 0})
    with pytest.raises(ValueError, match=r"optim\.min_lr"):
        TrainConfig.from_dict({"optim": {"lr": 1e-3, "min_lr": 1e-2}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_steps: 10\nwarmup: 3\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: unknown keys \['warmup'\]"):
        TrainConfig.from_yaml(bad)


def test_config_misspelt_key_suggests_the_right_one():
    with pytest.raises(ValueError, match=r"unknown keys \['max_step'\] in config section 'train'; valid keys are .*"
                                         r"; did you mean 'max_steps'\?$"):
        TrainConfig.from_dict({"max_step": 10})
    with pytest.raises(ValueError, match=r"unknown keys \['warmup_step'\] in config section 'optim'.*"
                                         r"; did you mean 'warmup_steps'\?$"):
        TrainConfig.from_dict({"optim": {"warmup_step": 10}})


def test_gradient_checkpointing_moved_into_the_model_section():
    with pytest.warns(FutureWarning, match="now 'model.gradient_checkpointing'"):
        cfg = TrainConfig.from_dict({"gradient_checkpointing": True, "model": {"model": "mamba"}})
    assert cfg.model == {"model": "mamba", "gradient_checkpointing": True}
    with pytest.raises(ValueError, match="keep only model.gradient_checkpointing"):
        TrainConfig.from_dict({"gradient_checkpointing": True, "model": {"gradient_checkpointing": False}})
    old_checkpoint_config = {"gradient_checkpointing": False, "model": {"model": "mamba"}}  # every config before 0.2
    assert TrainConfig.from_dict(old_checkpoint_config).model == {"model": "mamba"}


def test_config_yaml_round_trip(tmp_path):
    cfg = TrainConfig.from_dict({"max_steps": 5, "data": {"block_size": 32}, "model": {"model": "transformer"}})
    cfg.to_yaml(tmp_path / "c.yaml")
    assert TrainConfig.from_yaml(tmp_path / "c.yaml") == cfg


def test_every_field_is_commented():
    import inspect

    from sosm.train import config as module
    for cls in (module.TrainConfig, module.DataConfig, module.OptimConfig):
        source = inspect.getsource(cls)
        for name in cls.__dataclass_fields__:
            line = next(l for l in source.splitlines() if l.strip().startswith(f"{name}:"))
            assert "#" in line, f"{cls.__name__}.{name} has no comment"


def test_bf16_autocast_path_runs_on_cpu(make_config, tmp_path):
    result = run(make_config(max_steps=2, dtype="bfloat16"), tmp_path / "r")
    assert all(torch.isfinite(torch.tensor(l)) for l in result.losses.values())


def test_resume_from_a_checkpoint_of_every_kind_of_step(make_config, tmp_path):
    """A stop at any step, before the first evaluation (best_val_loss null), on one, between two, at a
    checkpoint step or not, resumes onto the uninterrupted curve (checkpoints every 3, evals every 8)."""
    config = make_config(checkpoint_interval=3, max_steps=12)
    full = run(config, tmp_path / "full")
    for stop in range(1, 12):
        def send(trainer, step, loss, stop=stop):
            if step == stop:
                os.kill(os.getpid(), signal.SIGTERM)

        out = tmp_path / f"stop{stop}"
        stopped = Trainer(config, out, model_factory=tiny_factory, step_callback=send).train()
        assert stopped.stopped_by == "SIGTERM" and stopped.final_step == stop
        resumed = run(config, out, resume=True)
        assert resumed.start_step == stop, stop
        assert {**stopped.losses, **resumed.losses} == full.losses, stop
        assert resumed.evals[-1] == full.evals[-1], stop
        best = json.loads((out / "summary.json").read_text())["best_val_loss"]
        assert best == json.loads((tmp_path / "full" / "summary.json").read_text())["best_val_loss"], stop


def test_resuming_a_finished_run_trains_nothing_and_writes_nothing(make_config, tmp_path):
    config = make_config(max_steps=8)
    run(config, tmp_path / "r")
    files = {p: p.read_bytes() for p in (tmp_path / "r").rglob("*") if p.is_file()}
    again = run(config, tmp_path / "r", resume=True)
    assert again.nothing_to_do and again.final_step == 8 and again.losses == {}
    assert again.evals and again.evals[-1]["step"] == 8, "the finished run's evaluations are reported from its log"
    assert {p: p.read_bytes() for p in (tmp_path / "r").rglob("*") if p.is_file()} == files
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["final_val_loss"] == again.evals[-1]["val_loss"] is not None


def test_max_steps_below_the_checkpoint_is_refused(make_config, tmp_path):
    run(make_config(max_steps=8), tmp_path / "r")
    summary = (tmp_path / "r" / "summary.json").read_bytes()
    with pytest.raises(ValueError, match=r"max_steps=5 is below step 8 of the newest checkpoint.*accepted: "
                                         r"max_steps >= 8"):
        Trainer(make_config(max_steps=5), tmp_path / "r", resume=True, model_factory=tiny_factory)
    assert (tmp_path / "r" / "summary.json").read_bytes() == summary


@pytest.mark.parametrize("text, missing", [
    ("", "max_steps, data.dataset, model.model"),
    ("# only a comment\n", "max_steps, data.dataset, model.model"),
    ("max_steps: 10\n", "data.dataset, model.model"),
    ("max_steps: 10\ndata: {block_size: 32}\nmodel: {model: mamba}\n", "data.dataset"),
    ("max_steps: 10\ndata: {dataset: default}\nmodel:\n", "model.model"),
])
def test_config_file_must_name_what_a_run_needs(tmp_path, text, missing):
    """An empty or section-less file is not a silent 2,000-step default run."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"c\.yaml.* needs {missing}"):
        TrainConfig.from_yaml(path)


def test_config_file_errors_name_the_file(tmp_path):
    with pytest.raises(IsADirectoryError, match=rf"config file {tmp_path} is a directory; accepted: a YAML file"):
        TrainConfig.from_yaml(tmp_path)
    binary = tmp_path / "weights.bin"
    binary.write_bytes(b"\x00\xd7\xff\xfe" * 8)
    with pytest.raises(ValueError, match=r"config file .*weights\.bin is not UTF-8 text .*byte offset 1"):
        TrainConfig.from_yaml(binary)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match=r"list\.yaml: a training config must be a mapping, got list"):
        TrainConfig.from_yaml(listed)


def test_a_text_too_short_for_the_context_says_how_long_it_must_be(make_config, tmp_path):
    short = tmp_path / "two.txt"
    short.write_text("ab")
    config = make_config(data={"path": str(short), "block_size": 16})
    with pytest.raises(ValueError, match=r"the train split of .*two\.txt has 1 tokens? .* data\.block_size=16 needs at "
                                         r"least 18 tokens in each split"):
        Trainer(config, tmp_path / "r", model_factory=tiny_factory)


def test_state_matrices_marked_by_a_mixer_are_not_decayed(tmp_path):
    from sosm.model import SOSMConfig, SOSMModel

    model = SOSMModel(SOSMConfig(model="mamba", d_model=32, n_heads=2, n_layers=1, vocab_size=16))
    trainer = Trainer.__new__(Trainer)  # only the optimiser builder is exercised
    trainer.device = torch.device("cpu")
    trainer.config = TrainConfig.from_dict({"optim": {"weight_decay": 0.1}})
    decay_group, plain_group = trainer._build_optimizer(model).param_groups
    decayed = {id(p) for p in decay_group["params"]}
    a_log = model.stack.layers[0].A_log
    assert id(a_log) not in decayed and any(p is a_log for p in plain_group["params"])
    assert id(model.stack.layers[0].in_proj.weight) in decayed and decay_group["weight_decay"] == 0.1


def test_no_decay_marks_survive_replaced_parameters():
    """FSDP2 replaces every parameter object: the groups (and their order) must not change with them."""
    from sosm.model import SOSMConfig, SOSMModel
    from sosm.model.mixers.base import no_weight_decay
    from sosm.train.components import optimizer_groups

    model = SOSMModel(SOSMConfig(model="mamba", d_model=32, n_heads=2, n_layers=2, vocab_size=16))
    before = [[name for p in group["params"] for name, q in model.named_parameters() if q is p]
              for group in optimizer_groups(model, 0.1)]
    model.load_state_dict({k: v.clone() for k, v in model.state_dict().items()}, assign=True)  # new objects
    after = [[name for p in group["params"] for name, q in model.named_parameters() if q is p]
             for group in optimizer_groups(model, 0.1)]
    assert after == before and "stack.layers.0.A_log" in before[1] and "stack.layers.1.A_log" in before[1]
    with pytest.raises(ValueError, match="no parameters"):
        no_weight_decay(model.stack.layers[0], "not_a_parameter")
