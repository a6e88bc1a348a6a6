"""Shared test set-up: Triton's interpreter on CPU (set before any @triton.jit runs)."""
import os
from pathlib import Path

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from sosm.common.blocks import SEMANTIC_DIM  # noqa: E402


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny tensors everywhere: one intra-op thread avoids spin-waiting on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def states():
    """A small reproducible batch of semantic states, [2, 40, 64]."""
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 40, SEMANTIC_DIM, generator=g)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


SHAKESPEARE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tinyshakespeare.txt"
SHAKESPEARE_EXCERPT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
                       "First Citizen:\nYou are all resolved rather to die than to famish?\n\n") * 200


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A tiny hybrid trained for 2 steps through ``sosm train`` on 20 kB of text: a run folder for the
    commands that need a checkpoint (eval, generate, inspect, graph --states). Do not write into it."""
    import yaml

    from sosm.cli import main

    folder = tmp_path_factory.mktemp("tiny_run")
    text = SHAKESPEARE.read_text(encoding="utf-8")[:20_000] if SHAKESPEARE.is_file() else SHAKESPEARE_EXCERPT
    (folder / "text.txt").write_text(text, encoding="utf-8")
    config = {"name": "tiny", "seed": 0, "batch_size": 2, "max_steps": 2, "eval_interval": 2, "eval_iters": 1,
              "checkpoint_interval": 2, "progress_bar": False, "tensorboard": False, "device": "cpu",
              "data": {"dataset": "text_file", "path": str(folder / "text.txt"), "block_size": 24},
              "model": {"model": "hybrid", "n_layers": 2, "d_model": 32, "n_heads": 2, "d_state": 8,
                        "struct_dim": 8, "graph": {"num_landmarks": 4}}}
    (folder / "tiny.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", "--config", str(folder / "tiny.yaml"), "--out", str(folder / "run")]) == 0
    finally:
        torch.set_num_threads(threads)
    return folder / "run"
