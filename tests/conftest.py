"""Shared test set-up: Triton's interpreter on CPU (set before any @triton.jit runs)."""
import os

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
