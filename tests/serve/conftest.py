"""Tiny checkpoints trained by the trainer, and ``sosm serve`` running in a real process on 127.0.0.1."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TEXT = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer.\n" * 30
KINDS = ("transformer", "mamba", "hybrid")


def train_tiny(root: Path, kind: str) -> Path:
    """A ``kind`` model (d_model 16, context 24) trained for 3 steps on a small text; returns the run folder."""
    from sosm.train import TrainConfig, Trainer

    corpus = root / "corpus.txt"
    if not corpus.exists():
        corpus.write_text(TEXT, encoding="utf-8")
    model = {"model": kind, "n_layers": 2, "d_model": 16, "n_heads": 2, "d_state": 4, "max_seq_len": 24}
    if kind == "hybrid":
        model.update(layer_pattern="AM", struct_dim=4, graph={"num_landmarks": 3})
    config = TrainConfig.from_dict({
        "name": f"serve_{kind}", "seed": 0, "batch_size": 2, "max_steps": 3, "eval_interval": 3, "eval_iters": 1,
        "log_interval": 1, "checkpoint_interval": 3, "device": "cpu", "dtype": "float32", "progress_bar": False,
        "tensorboard": False,
        "data": {"dataset": "text_file", "path": str(corpus), "tokenizer": "byte", "block_size": 24},
        "model": model,
    })
    Trainer(config, root / kind).train()
    return root / kind


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory) -> dict:
    """``{kind: run folder}`` for the Transformer, Mamba and the hybrid."""
    root = tmp_path_factory.mktemp("serve_runs")
    return {kind: train_tiny(root, kind) for kind in KINDS}


class ServerProcess:
    """``python -m sosm.cli serve ... --port 0`` in a subprocess; ``url`` once it listens."""

    def __init__(self, checkpoint, *args: str, log_dir: Path):
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        self.stdout = open(log_dir / "server.out", "w+")
        self.stderr = open(log_dir / "server.err", "w+")
        self.process = subprocess.Popen([sys.executable, "-m", "sosm.cli", "serve", "--checkpoint", str(checkpoint),
                                         "--port", "0", "--threads", "1", *args], cwd=REPO, env=env,
                                        stdout=self.stdout, stderr=self.stderr)
        self.url = self._wait_for_url()

    def _wait_for_url(self, timeout: float = 120.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.stdout.seek(0)
            found = re.search(r"listening on (http://127\.0\.0\.1:\d+)", self.stdout.read())
            if found:
                return found.group(1)
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        self.stderr.seek(0)
        raise RuntimeError(f"sosm serve did not start (exit {self.process.poll()}):\n{self.stderr.read()[-3000:]}")

    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.stdout.close()
        self.stderr.close()
        return self.process.returncode


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


@pytest.fixture(scope="session")
def hybrid_server(tiny_runs, tmp_path_factory):
    """A server over the tiny hybrid with small limits (the limits tests name them)."""
    server = ServerProcess(tiny_runs["hybrid"], "--queue-size", "4", "--max-tokens", "64", "--max-body-bytes", "4096",
                           "--max-text-tokens", "200", log_dir=tmp_path_factory.mktemp("hybrid_server"))
    yield server
    server.stop()
