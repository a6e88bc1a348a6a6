"""Shared test set-up: Triton's interpreter on CPU (set before any @triton.jit runs)."""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from sosm.graph.blocks import SEMANTIC_DIM  # noqa: E402


@pytest.fixture
def states():
    """A small reproducible batch of semantic states, [2, 40, 64]."""
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 40, SEMANTIC_DIM, generator=g)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
