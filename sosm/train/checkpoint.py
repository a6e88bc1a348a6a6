"""Training checkpoints: written atomically, verified on load, errors that name the file.

A checkpoint is a directory ``<run>/checkpoints/step_<NNNNNNN>/`` holding

- ``model.safetensors``  the weights (tied tensors stored once, aliases in the manifest),
- ``config.json``        the full training config (``TrainConfig.to_dict()``),
- ``optimizer.pt``       the optimizer's ``state_dict`` (loaded with ``weights_only=True``),
- ``trainer_state.json`` step, data position, RNG states (torch, CUDA, numpy, python), metrics,
- extra JSON files the trainer adds (for example ``tokenizer.json``),
- ``manifest.json``      format version, step, layout, and the size and sha256 of every file above.

A checkpoint of an FSDP run (``layout: "sharded"``) holds ``shards/`` instead of
``model.safetensors`` and ``optimizer.pt``: the model and optimizer state as
``torch.distributed.checkpoint`` writes them, one file per rank, resharded on load to any
world size (one process included); :func:`load_model_state` reads either layout.

Writing goes to a temporary sibling directory; every file and the directory are
fsync'ed, then the directory is renamed into place in one step. A crash at any point
leaves the previous checkpoints untouched and loadable. Only the newest ``keep_last``
checkpoints are kept.

Example:
    >>> import tempfile, torch
    >>> run = tempfile.mkdtemp()
    >>> path = write_checkpoint(run, 7, model_state={"w": torch.ones(2)}, config={"seed": 1},
    ...                         optimizer_state={"state": {}, "param_groups": []}, trainer_state={"step": 7})
    >>> read_checkpoint(find_checkpoint(run)).step
    7
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np
import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from ..common.files import atomic_dir, write_synced

FORMAT = "sosm-train-checkpoint"
FORMAT_VERSION = 1
CHECKPOINT_DIR = "checkpoints"
STEP_PREFIX = "step_"
TMP_PREFIX = ".tmp-"
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "trainer_state.json"
MANIFEST_FILE = "manifest.json"
SHARDS_DIR = "shards"  # torch.distributed.checkpoint files of a sharded (FSDP) checkpoint
LAYOUTS = ("full", "sharded")

PathLike = Union[str, os.PathLike]


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt or does not match; the message names the file."""


@dataclass
class Checkpoint:
    """A checkpoint read back from disk (tensors on CPU)."""

    path: Path
    step: int
    model_state: dict
    config: dict
    optimizer_state: dict
    trainer_state: dict
    extra: dict = field(default_factory=dict)  # extra JSON files by name
    layout: str = "full"                       # "full": model_state/optimizer_state hold everything;
                                               # "sharded": both are None, the state is under shards_dir

    @property
    def shards_dir(self) -> Path:
        """The ``torch.distributed.checkpoint`` folder of a sharded checkpoint."""
        return self.path / SHARDS_DIR


def step_dir_name(step: int) -> str:
    return f"{STEP_PREFIX}{step:07d}"


def _json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _dedup_shared(state: dict) -> tuple[dict, dict]:
    """Split tensors that share storage (tied weights) into unique tensors + alias map."""
    unique, aliases, seen = {}, {}, {}
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"model_state[{name!r}] must be a tensor, got {type(tensor).__name__}")
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape),
               tuple(tensor.stride()), tensor.dtype) if tensor.numel() else None
        if key is not None and key in seen:
            aliases[name] = seen[key]
        else:
            if key is not None:
                seen[key] = name
            unique[name] = tensor.detach().to("cpu").contiguous()
    return unique, aliases


def write_checkpoint(run_dir: PathLike, step: int, *, model_state: dict, config: dict, optimizer_state: dict,
                     trainer_state: dict, extra_json: Optional[dict] = None, keep_last: int = 3) -> Path:
    """Atomically write checkpoint ``step`` under ``run_dir/checkpoints`` and prune old ones.

    Args:
        run_dir: the run's output directory.
        step: optimiser steps completed (>= 0).
        model_state: ``model.state_dict()``.
        config: JSON-serialisable training config.
        optimizer_state: ``optimizer.state_dict()``.
        trainer_state: JSON-serialisable trainer state (step, RNG, data position, metrics).
        extra_json: more JSON files to store, ``{file name: object}``.
        keep_last: newest checkpoints to keep (>= 1).

    Returns:
        The checkpoint directory.
    """
    if not isinstance(keep_last, int) or keep_last < 1:
        raise ValueError(f"keep_last={keep_last!r} is invalid; accepted: an int >= 1")
    unique, aliases = _dedup_shared(model_state)
    buffer = io.BytesIO()
    torch.save(optimizer_state, buffer)
    with checkpoint_dir(run_dir, step) as tmp:
        finish_checkpoint(tmp, step, config=config, trainer_state=trainer_state, extra_json=extra_json,
                          tensors={MODEL_FILE: safetensors_save(unique), OPTIMIZER_FILE: buffer.getvalue()},
                          aliases=aliases)
    prune_checkpoints(run_dir, keep_last)
    return Path(run_dir) / CHECKPOINT_DIR / step_dir_name(step)


@contextlib.contextmanager
def checkpoint_dir(run_dir: PathLike, step: int) -> Iterator[Path]:
    """A fresh temporary folder that becomes ``run_dir/checkpoints/step_<step>`` in one rename on a clean exit.

    :func:`write_checkpoint` fills it in one process; a sharded (FSDP) checkpoint has every rank
    write its shards into it first (``sosm.train.distributed.write_sharded_checkpoint``), then
    :func:`finish_checkpoint` adds the rest and the manifest.
    """
    if not isinstance(step, int) or step < 0:
        raise ValueError(f"step={step!r} is invalid; accepted: an int >= 0")
    root = Path(run_dir) / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(root)
    with atomic_dir(root / step_dir_name(step), prefix=TMP_PREFIX) as tmp:
        yield tmp


def finish_checkpoint(tmp: Path, step: int, *, config: dict, trainer_state: dict, extra_json: Optional[dict] = None,
                      tensors: Optional[dict] = None, aliases: Optional[dict] = None) -> None:
    """Write the JSON files, ``tensors`` (``{file name: bytes}``) and last the manifest into ``tmp``.

    Files already in ``tmp/shards`` (a sharded checkpoint's) are listed in the manifest with the
    others, so they are verified on load like every file; the layout is ``"sharded"`` when
    ``tensors`` is None.
    """
    files = dict(tensors or {})
    files.update({CONFIG_FILE: _json_bytes(config), STATE_FILE: _json_bytes(trainer_state)})
    for name, obj in (extra_json or {}).items():
        if name in files or name in (MANIFEST_FILE, MODEL_FILE, OPTIMIZER_FILE) or "/" in name:
            raise ValueError(f"extra_json file name {name!r} is invalid; it must be a plain name other than "
                             f"{sorted({*files, MANIFEST_FILE, MODEL_FILE, OPTIMIZER_FILE})}")
        files[name] = _json_bytes(obj)
    for name, data in files.items():
        write_synced(tmp / name, data)
    listed = {name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()} for name, data in files.items()}
    for path in sorted((tmp / SHARDS_DIR).rglob("*")) if (tmp / SHARDS_DIR).is_dir() else []:
        if path.is_file():
            data = path.read_bytes()
            listed[path.relative_to(tmp).as_posix()] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    layout = "full" if tensors else "sharded"
    manifest = {"format": FORMAT, "version": FORMAT_VERSION, "step": step, "layout": layout,
                "aliases": aliases or {}, "files": listed}
    write_synced(tmp / MANIFEST_FILE, _json_bytes(manifest))  # last: its presence marks a complete write


def _remove_stale_tmp(root: Path) -> None:
    for path in root.glob(f"{TMP_PREFIX}*"):
        shutil.rmtree(path, ignore_errors=True)


def list_checkpoints(run_dir: PathLike) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary directories are ignored)."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = []
    for path in root.glob(f"{STEP_PREFIX}*"):
        suffix = path.name[len(STEP_PREFIX):]
        if path.is_dir() and suffix.isdigit():
            found.append((int(suffix), path))
    return [path for _, path in sorted(found)]


def prune_checkpoints(run_dir: PathLike, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` checkpoints."""
    for path in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(path, ignore_errors=True)


def find_checkpoint(path: PathLike) -> Path:
    """Resolve a checkpoint directory, or a run directory to its newest checkpoint."""
    path = Path(path)
    if (path / MANIFEST_FILE).is_file():
        return path
    found = list_checkpoints(path)
    if not found:
        raise CheckpointError(f"no checkpoint found at {path}: expected a checkpoint directory with "
                              f"{MANIFEST_FILE} or a run directory with {CHECKPOINT_DIR}/{STEP_PREFIX}*")
    return found[-1]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"checkpoint file {path} is not valid JSON: {err}") from None


def read_checkpoint(path: PathLike, *, verify: bool = True) -> Checkpoint:
    """Read a checkpoint directory (or a run directory's newest checkpoint).

    With ``verify`` every file's size and sha256 are checked against the manifest, so a
    truncated or edited file raises :class:`CheckpointError` naming that file. When the newest
    checkpoint of a run directory is unreadable, the message also names the newest older one
    that loads (or says that none does).
    """
    given = Path(path)
    path = find_checkpoint(given)
    try:
        return _read_checkpoint_dir(path, verify)
    except CheckpointError as err:
        if path == given:
            raise
        raise CheckpointError(f"{err}{_older_checkpoint_hint(given, path, verify)}") from None


def _older_checkpoint_hint(run_dir: Path, failed: Path, verify: bool) -> str:
    """``; the older checkpoint X (step N) loads: ...`` for the newest loadable checkpoint before ``failed``."""
    older = [p for p in list_checkpoints(run_dir) if p != failed]
    for candidate in reversed(older):
        try:
            step = _read_checkpoint_dir(candidate, verify).step
        except CheckpointError:
            continue
        return (f"; the older checkpoint {candidate} (step {step}) loads: move {failed} aside (for example to "
                f"{failed.parent / ('corrupt-' + failed.name)}) to continue from it")
    return f"; no older checkpoint of {run_dir} loads either" if older else ""


def _read_checkpoint_dir(path: Path, verify: bool) -> Checkpoint:
    manifest_path = path / MANIFEST_FILE
    manifest = _read_json(manifest_path)
    if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint file {manifest_path} has format {manifest.get('format')!r} version "
                              f"{manifest.get('version')!r}; expected {FORMAT!r} version {FORMAT_VERSION}")
    for name, info in manifest.get("files", {}).items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"checkpoint file {file} is missing (listed in {manifest_path})")
        if verify:
            data = file.read_bytes()
            if len(data) != info["bytes"]:
                raise CheckpointError(f"checkpoint file {file} has {len(data)} bytes but the manifest records "
                                      f"{info['bytes']}: the file is truncated or was modified")
            digest = hashlib.sha256(data).hexdigest()
            if digest != info["sha256"]:
                raise CheckpointError(f"checkpoint file {file} has sha256 {digest[:12]}… but the manifest records "
                                      f"{info['sha256'][:12]}…: the file is corrupt or was edited")
    layout = manifest.get("layout", "full")
    if layout not in LAYOUTS:
        raise CheckpointError(f"checkpoint file {manifest_path} has layout {layout!r}; expected one of {LAYOUTS}")
    model_state = optimizer_state = None
    if layout == "full":
        model_state, optimizer_state = _read_full_state(path, manifest)
    elif not (path / SHARDS_DIR / ".metadata").is_file():
        raise CheckpointError(f"checkpoint file {path / SHARDS_DIR / '.metadata'} is missing: a sharded checkpoint "
                              f"needs the torch.distributed.checkpoint metadata")
    known = {MODEL_FILE, CONFIG_FILE, OPTIMIZER_FILE, STATE_FILE}
    extra = {name: _read_json(path / name) for name in manifest.get("files", {})
             if name not in known and "/" not in name}
    return Checkpoint(path=path, step=int(manifest["step"]), model_state=model_state,
                      config=_read_json(path / CONFIG_FILE), optimizer_state=optimizer_state,
                      trainer_state=_read_json(path / STATE_FILE), extra=extra, layout=layout)


def _read_full_state(path: Path, manifest: dict) -> tuple[dict, dict]:
    """``(model_state, optimizer_state)`` of a checkpoint of the full layout."""
    try:
        model_state = safetensors_load((path / MODEL_FILE).read_bytes())
    except Exception as err:  # safetensors raises its own error types for malformed headers
        raise CheckpointError(f"checkpoint file {path / MODEL_FILE} is not a readable safetensors file: {err}") from None
    for alias, target in manifest.get("aliases", {}).items():
        if target not in model_state:
            raise CheckpointError(f"checkpoint file {path / MANIFEST_FILE} aliases {alias!r} to {target!r}, "
                                  f"which {path / MODEL_FILE} does not contain")
        model_state[alias] = model_state[target]
    try:
        optimizer_state = torch.load(path / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated/unpickleable data
        raise CheckpointError(f"checkpoint file {path / OPTIMIZER_FILE} could not be loaded: {err}") from None
    return model_state, optimizer_state


def sharded_tensor_shapes(checkpoint: Checkpoint, prefix: str) -> dict:
    """``{name: shape}`` of the tensors under ``prefix`` (``"model."``) in a sharded checkpoint's metadata."""
    from torch.distributed.checkpoint import FileSystemReader

    try:
        metadata = FileSystemReader(str(checkpoint.shards_dir)).read_metadata()
    except Exception as err:  # a truncated or foreign .metadata file
        raise CheckpointError(f"checkpoint file {checkpoint.shards_dir / '.metadata'} could not be read: {err}") from None
    return {key[len(prefix):]: tuple(getattr(item, "size", ())) for key, item in metadata.state_dict_metadata.items()
            if key.startswith(prefix)}


def _check_names_and_shapes(expected: dict, stored: dict, where: Path, config_file: Path) -> None:
    """``expected``/``stored``: ``{name: shape}``; raises ``CheckpointError`` naming ``where`` on a mismatch."""
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"checkpoint file {where} does not match the model built from {config_file}: "
                              f"missing tensors {missing[:8]}, unexpected tensors {unexpected[:8]}")
    wrong = [f"{name}: file {stored[name]} vs model {shape}" for name, shape in expected.items()
             if stored[name] != shape]
    if wrong:
        raise CheckpointError(f"checkpoint file {where} has tensor shapes that do not match the model built from "
                              f"{config_file}: " + "; ".join(wrong[:8]))


def check_model_matches(model: torch.nn.Module, checkpoint: Checkpoint) -> None:
    """Raise ``CheckpointError`` naming the file when ``model``'s tensor names or shapes differ from the checkpoint's.

    Shapes are the whole tensors' (an FSDP-sharded model reports its parameters' global shapes).
    """
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    if checkpoint.layout == "sharded":
        stored, where = sharded_tensor_shapes(checkpoint, "model."), checkpoint.shards_dir
    else:
        stored = {name: tuple(t.shape) for name, t in checkpoint.model_state.items()}
        where = checkpoint.path / MODEL_FILE
    _check_names_and_shapes(shapes, stored, where, checkpoint.path / CONFIG_FILE)


@contextlib.contextmanager
def one_process_reads_shards() -> Iterator[None]:
    """Without a process group ``torch.distributed.checkpoint`` reads (or writes) in this one process, which is
    what a single-process reader of a sharded checkpoint means: its warning that it assumes so is dropped."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield


def load_model_state(model: torch.nn.Module, checkpoint: Checkpoint) -> None:
    """Copy the checkpoint's weights into ``model``; mismatches name the file and the tensors.

    A sharded checkpoint is read with ``torch.distributed.checkpoint`` into whatever ``model``
    is: a plain module in one process, or an FSDP-sharded one under any world size.
    """
    check_model_matches(model, checkpoint)
    if checkpoint.layout == "sharded":
        import torch.distributed.checkpoint as dcp

        state = {"model": model.state_dict()}
        with one_process_reads_shards():
            dcp.load(state, checkpoint_id=str(checkpoint.shards_dir))  # in place, resharded to this model's layout
        model.load_state_dict(state["model"])
        return
    model.load_state_dict(checkpoint.model_state)


def capture_rng_state() -> dict:
    """RNG states of torch (CPU and every CUDA device), numpy and python, as JSON-able data."""
    def b64(tensor: torch.Tensor) -> str:
        return base64.b64encode(tensor.numpy().tobytes()).decode("ascii")

    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": b64(torch.get_rng_state()),
        "cuda": [b64(s) for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def restore_rng_state(state: dict) -> None:
    """Inverse of :func:`capture_rng_state`."""
    def unb64(text: str) -> torch.Tensor:
        return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8).clone()

    torch.set_rng_state(unb64(state["torch"]))
    if state.get("cuda") and torch.cuda.is_available():
        if len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([unb64(s) for s in state["cuda"]])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
