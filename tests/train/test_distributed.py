"""Training under torchrun (DDP, FSDP2) on CPU with gloo: the one-process curve, resume across world sizes, stops.

The multi-process tests start real processes (``torch.distributed.run``, or plain processes that
find each other through the environment) with a timeout on every wait, so a hang fails the test
instead of stalling CI; they are marked slow (each start costs seconds on a 2-core machine).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sosm.data import BatchSampler
from sosm.train import CheckpointError, TrainConfig, Trainer, read_checkpoint
from sosm.train.checkpoint import (SHARDS_DIR, checkpoint_dir, finish_checkpoint, load_model_state,
                                   one_process_reads_shards)
from sosm.train.distributed import DistContext, ShardedBatches, check_batch_size, local_rows
from sosm.train.run_log import read_log

from .conftest import SHAKESPEARE, FALLBACK

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("dist_worker.py")
HYBRID = {"model": "hybrid", "n_layers": 2, "d_model": 32, "n_heads": 2, "d_state": 8, "struct_dim": 8,
          "graph": {"num_landmarks": 4}}
RTOL = 1e-5  # docs/ANCHORS.md, "Scale-out and serving": per step, over 20 steps


def _config(text: Path, **overrides) -> dict:
    config = {"max_steps": 20, "batch_size": 4, "eval_interval": 10, "eval_iters": 2, "log_interval": 1,
              "checkpoint_interval": 10, "keep_last": 3, "progress_bar": False, "tensorboard": False, "device": "cpu",
              "collective_timeout_s": 60, "data": {"dataset": "text_file", "path": str(text), "block_size": 16},
              "optim": {"warmup_steps": 4, "lr": 3e-3}, "model": HYBRID}
    config.update(overrides)
    return config


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _torchrun(spec: dict, folder: Path, nproc: int = 2, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run the worker under torchrun on ``nproc`` CPU processes; the spec's run folder gets ``rank<r>.json``."""
    spec_file = folder / f"{Path(spec['out']).name}.spec.json"
    spec_file.write_text(json.dumps(spec))
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                           str(WORKER), str(spec_file)], cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=timeout)


def _losses(run: Path, rank: int = 0) -> dict:
    record = json.loads((run / f"rank{rank}.json").read_text())
    return {int(step): loss for step, loss in record["losses"].items()}


def _in_process(config: dict, out: Path, resume: bool = False):
    return Trainer(TrainConfig.from_dict(config), out, resume=resume).train()


def _assert_close(expected: dict, actual: dict) -> None:
    assert sorted(actual) == sorted(expected)
    worst = max(abs(actual[s] - expected[s]) / abs(expected[s]) for s in expected)
    assert worst <= RTOL, f"largest relative difference {worst:.2e} > {RTOL}"


def _only(run: Path, keep: str, into: Path) -> Path:
    """A copy of ``run`` holding only checkpoint ``keep`` (a run stopped there)."""
    shutil.copytree(run, into)
    for path in (into / "checkpoints").iterdir():
        if path.name != keep:
            shutil.rmtree(path)
    for path in into.glob("rank*.json"):
        path.unlink()
    return into


# ---- one process: the sharding of batches, configs, a sharded checkpoint read back ----

@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_the_ranks_rows_are_the_one_process_batch_in_its_order(world_size):
    data = torch.arange(1000)
    single = BatchSampler(data, batch_size=8, block_size=5, seed=3)
    ranks = [ShardedBatches(BatchSampler(data, 8, 5, seed=3), DistContext(rank=r, world_size=world_size))
             for r in range(world_size)]
    for _ in range(3):
        whole = next(single)
        parts = [next(rank) for rank in ranks]
        assert torch.equal(torch.cat([p.input_ids for p in parts]), whole.input_ids)
        assert torch.equal(torch.cat([p.targets for p in parts]), whole.targets)
    assert all(torch.equal(r.state_dict()["generator_state"], single.state_dict()["generator_state"]) for r in ranks)


def test_a_global_batch_that_does_not_split_evenly_is_refused():
    with pytest.raises(ValueError, match=r"batch_size=6 is invalid for 4 processes.*multiple of the world size 4"):
        check_batch_size(6, DistContext(rank=0, world_size=4))
    batch = BatchSampler(torch.arange(100), 2, 4).__next__()
    assert local_rows(batch, DistContext()) is batch


def test_distributed_knobs_are_validated_and_do_not_change_the_trajectory():
    with pytest.raises(ValueError, match=r"train.distributed='zero'.*'ddp', 'fsdp'"):
        TrainConfig.from_dict({"distributed": "zero"})
    with pytest.raises(ValueError, match="collective_timeout_s"):
        TrainConfig.from_dict({"collective_timeout_s": 0})
    a, b = TrainConfig.from_dict({}), TrainConfig.from_dict({"distributed": "fsdp", "collective_timeout_s": 9})
    assert a.trajectory_dict() == b.trajectory_dict()  # a run may resume under the other strategy


def test_one_process_reads_a_sharded_checkpoint_and_its_manifest_guards_the_shards(tmp_path):
    import torch.distributed.checkpoint as dcp

    model = torch.nn.Linear(4, 3)
    with checkpoint_dir(tmp_path, 5) as tmp:
        with one_process_reads_shards():  # no process group: one writer (torch warns that it assumes so)
            dcp.save({"model": model.state_dict()}, checkpoint_id=str(tmp / SHARDS_DIR))
        finish_checkpoint(tmp, 5, config={}, trainer_state={"step": 5})
    checkpoint = read_checkpoint(tmp_path)
    assert checkpoint.layout == "sharded" and checkpoint.model_state is None and checkpoint.step == 5
    other = torch.nn.Linear(4, 3)
    load_model_state(other, checkpoint)
    assert torch.equal(other.weight, model.weight) and torch.equal(other.bias, model.bias)
    with pytest.raises(CheckpointError, match=r"shards does not match the model.*missing tensors \['0.bias', '0.weight'\]"):
        load_model_state(torch.nn.Sequential(torch.nn.Linear(4, 3)), checkpoint)
    shard = next(p for p in (checkpoint.shards_dir).iterdir() if p.suffix == ".distcp")
    data = shard.read_bytes()
    shard.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(CheckpointError, match=rf"{shard.name}.*sha256"):
        read_checkpoint(tmp_path)


# ---- several processes ----

@pytest.fixture(scope="module")
def text(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "text.txt"
    path.write_text(SHAKESPEARE.read_text(encoding="utf-8")[:30_000] if SHAKESPEARE.is_file() else FALLBACK)
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory, text) -> dict:
    """The same 20 steps in one process, under 2-process DDP and under 2-process FSDP."""
    folder = tmp_path_factory.mktemp("runs")
    torch.set_num_threads(1)
    out = {"single": folder / "single"}
    single = _in_process(_config(text), out["single"])
    (out["single"] / "rank0.json").write_text(json.dumps({"losses": single.losses}))
    for strategy in ("ddp", "fsdp"):
        out[strategy] = folder / strategy
        done = _torchrun({"config": _config(text, distributed=strategy), "out": str(out[strategy])}, folder)
        assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_follow_the_one_process_curve(runs, strategy):
    single, run = _losses(runs["single"]), runs[strategy]
    assert len(single) == 20
    for rank in (0, 1):
        _assert_close(single, _losses(run, rank))
    evals = [json.loads((run / f"rank{r}.json").read_text())["evals"] for r in (0, 1)]
    assert evals[0] == evals[1] and len(evals[0]) == 2
    train_records = [r["step"] for r in read_log(run) if r["kind"] == "train"]
    assert train_records == list(range(1, 21)), "rank 0 alone writes the log"
    checkpoint = read_checkpoint(run / "checkpoints" / "step_0000020")
    assert checkpoint.layout == ("sharded" if strategy == "fsdp" else "full")
    if strategy == "fsdp":
        assert sorted(p.name for p in checkpoint.shards_dir.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert checkpoint.trainer_state["world_size"] == 2 and set(checkpoint.trainer_state["rng_by_rank"]) == {"1"}


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_one_process_resumes_a_two_process_checkpoint(runs, text, strategy, tmp_path):
    part = _only(runs[strategy], "step_0000010", tmp_path / "part")
    resumed = _in_process(_config(text), part, resume=True)
    assert resumed.start_step == 10
    _assert_close({s: l for s, l in _losses(runs["single"]).items() if s > 10}, resumed.losses)


@pytest.mark.slow
def test_fsdp_resumes_a_one_process_checkpoint(runs, text, tmp_path):
    part = _only(runs["single"], "step_0000010", tmp_path / "part")
    done = _torchrun({"config": _config(text, distributed="fsdp"), "out": str(part), "resume": True}, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_close({s: l for s, l in _losses(runs["single"]).items() if s > 10}, _losses(part))


@pytest.mark.slow
def test_sigterm_on_one_rank_stops_every_rank_with_a_checkpoint_and_resume_is_exact(runs, text, tmp_path):
    run = tmp_path / "stopped"
    spec = {"config": _config(text, distributed="ddp"), "out": str(run), "signal_at": [1, 7]}
    start = time.monotonic()
    done = _torchrun(spec, tmp_path)
    assert time.monotonic() - start < 120
    records = [json.loads((run / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [(r["stopped_by"], r["final_step"]) for r in records] == [("SIGTERM", 7)] * 2, done.stderr[-3000:]
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_0000007"]
    spec.update(signal_at=None, resume=True)
    done = _torchrun(spec, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    uninterrupted = _losses(runs["ddp"])
    assert _losses(run) == {s: l for s, l in uninterrupted.items() if s > 7}  # bit for bit: same ranks, same order


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_a_rank_that_dies_ends_the_others_instead_of_hanging(text, tmp_path):
    """No torchrun to clean up: the surviving rank must fail on its own, well within the collective timeout."""
    run = tmp_path / "dead"
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps({"config": _config(text, collective_timeout_s=30), "out": str(run),
                                     "crash_at": [1, 3]}))
    port = _free_port()
    children = [subprocess.Popen([sys.executable, str(WORKER), str(spec_file)], cwd=REPO, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True,
                                 env={**_env(), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                                      "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2"})
                for rank in (0, 1)]
    try:
        codes = [child.wait(timeout=150) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    assert codes[1] == 3 and codes[0] != 0
    assert not (run / "rank0.json").exists()


@pytest.mark.slow
def test_torchrun_runs_the_train_command(text, tmp_path):
    """``torchrun ... -m sosm.cli train``: rank 0 prints and writes; SIGTERM to torchrun stops both ranks with a checkpoint."""
    config = _config(text, max_steps=400, checkpoint_interval=0, log_interval=1)
    (tmp_path / "run.yaml").write_text(json.dumps(config))
    out = tmp_path / "run"
    child = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                              "-m", "sosm.cli", "train", "--config", str(tmp_path / "run.yaml"), "--out", str(out)],
                             cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and child.poll() is None:
            if (out / "log.jsonl").is_file() and '"step": 3,' in (out / "log.jsonl").read_text():
                break
            time.sleep(0.2)
        assert child.poll() is None, child.communicate()
        child.send_signal(signal.SIGTERM)
        stdout, stderr = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    assert stdout.count("training run:") == 1 and "output " + str(out) in stdout, stdout
    stopped = [r for r in read_log(out) if r.get("event") == "stopped"]
    assert len(stopped) == 1 and stopped[0]["signal"] == "SIGTERM", (stdout, stderr[-3000:])
    [checkpoint] = (out / "checkpoints").iterdir()
    assert read_checkpoint(checkpoint).step == stopped[0]["step"] < 400
