"""Fixtures for the training tests: a small text file and a tiny, fast run config."""
from __future__ import annotations

from pathlib import Path

import pytest

from sosm.train import TrainConfig

SHAKESPEARE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "tinyshakespeare.txt"
FALLBACK = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
            "First Citizen:\nYou are all resolved rather to die than to famish?\n\n") * 200


@pytest.fixture
def text_file(tmp_path) -> Path:
    """30 kB of Tiny Shakespeare (or a repeated excerpt when the shared copy is absent)."""
    text = SHAKESPEARE.read_text(encoding="utf-8")[:30_000] if SHAKESPEARE.is_file() else FALLBACK
    path = tmp_path / "text.txt"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def make_config(text_file):
    """``make_config(**overrides)``: a tiny TrainConfig on ``text_file`` (no progress bar, no TensorBoard)."""
    def make(**overrides) -> TrainConfig:
        base = {"max_steps": 24, "batch_size": 4, "eval_interval": 8, "eval_iters": 2, "log_interval": 4,
                "checkpoint_interval": 8, "keep_last": 2, "progress_bar": False, "tensorboard": False,
                "device": "cpu", "data": {"dataset": "text_file", "path": str(text_file), "block_size": 16},
                "optim": {"warmup_steps": 4, "lr_decay_steps": 24, "lr": 3e-3}, "model": {}}
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                base[key] = {**base[key], **value}
            else:
                base[key] = value
        return TrainConfig.from_dict(base)
    return make


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Run these tests on one intra-op thread: on a shared 2-core machine, two threads that compete
    with other processes make tiny models several times slower. Restored after each test."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
