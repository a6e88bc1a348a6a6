"""``save_pretrained`` / ``from_pretrained``: safetensors weights + JSON config, written atomically.

Each file is written to a temporary name in the target folder, flushed and fsynced, then
renamed over the final name (``os.replace``), so a crash leaves either the old or the new
file, never a torn one. Loading checks everything it reads and raises ``ValueError`` naming
the file and the mismatch (unreadable JSON, unknown config keys, corrupt safetensors,
missing/unexpected tensors, wrong shapes or dtypes).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..common.files import atomic_write

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def save_pretrained(model, directory) -> None:
    """Write ``config.json`` and ``model.safetensors`` of ``model`` into ``directory`` (created if needed)."""
    from safetensors.torch import save

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    atomic_write(directory / WEIGHTS_NAME, save(tensors, metadata={"format": "pt"}))
    atomic_write(directory / CONFIG_NAME, model.config.to_json())


def load_pretrained(cls, directory, map_location="cpu"):
    """Inverse of :func:`save_pretrained`; returns ``cls(config)`` with the stored weights."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .config import SOSMConfig

    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise ValueError(f"{path} does not exist; from_pretrained needs {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        config = SOSMConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError) as err:
        raise ValueError(f"{config_path} is not a valid SOSMConfig: {err}") from None
    try:
        tensors = load_file(str(weights_path), device=str(map_location))
    except (SafetensorError, OSError, RuntimeError, ValueError) as err:
        raise ValueError(f"{weights_path} is corrupt or not a safetensors file: {err}") from None
    model = cls(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{weights_path} does not match {config_path}: missing tensors {missing[:8]}, "
                         f"unexpected tensors {unexpected[:8]}")
    for name, tensor in tensors.items():
        want = expected[name]
        if tensor.shape != want.shape or tensor.dtype != want.dtype:
            raise ValueError(f"{weights_path}: tensor {name!r} has shape {tuple(tensor.shape)} {tensor.dtype}, "
                             f"the config expects {tuple(want.shape)} {want.dtype}")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(f"{weights_path}: tensor {name!r} holds NaN or Inf values")
    model.load_state_dict(tensors, strict=True)
    return model.to(map_location)
