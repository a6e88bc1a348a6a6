"""Runs built on a trained model (``sosm finetune``, ``sosm distill``): their config files and their run record.

A derived run's config file is a training config (:class:`~sosm.train.TrainConfig`) with one
more section of its own (``lora``, ``distill``); the model it starts from (the base, the
teacher) fixes the tokenizer and the context length. What the ``TrainConfig`` in its checkpoints
does not say (which base or teacher, the extra section) is kept in ``<out>/<kind>.json``, and
``--resume`` refuses a run whose record differs, as it refuses a changed trajectory.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from ..common.files import atomic_write
from .config import REQUIRED_IN_FILE, TrainConfig


def read_derived_config(path, section: str, *, base_config: TrainConfig, base_name: str,
                        model_from_base: bool) -> tuple[TrainConfig, dict]:
    """``(TrainConfig, the extra section as a dict)`` of a derived run's YAML file; errors name the file.

    Args:
        path: the YAML file.
        section: the name of the extra section (``"lora"``, ``"distill"``).
        base_config: the training config of the model the run starts from.
        base_name: ``"--checkpoint"`` / ``"--teacher"``, for messages.
        model_from_base: the model is the base's (fine-tuning: a ``model`` section is refused); else the file
            must give its own (distillation: the student).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ValueError(f"config file {path} is not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping, got {type(data).__name__}")
    extra = data.pop(section, None) or {}
    needed = [k for k in REQUIRED_IN_FILE if k != "model.model" or not model_from_base]
    missing = [k for k in needed if not _has(data, k)]
    if missing:
        raise ValueError(f"config file {path} is incomplete: it needs {', '.join(missing)}")
    if model_from_base and "model" in data:
        raise ValueError(f"config file {path} has a model section, but the model is the one of {base_name}; "
                         f"leave the section out")
    base_data = base_config.data
    data_section = dict(data.get("data") or {})
    for name in ("block_size", "tokenizer"):
        given, fixed = data_section.get(name, getattr(base_data, name)), getattr(base_data, name)
        if given != fixed:
            raise ValueError(f"config file {path}: data.{name}={given!r} differs from the model of {base_name} "
                             f"({fixed!r}); leave it out, the run uses the tokenizer and context of that model")
        data_section[name] = fixed
    data["data"] = data_section
    if model_from_base:
        data["model"] = base_config.model
    try:
        return TrainConfig.from_dict(data), extra
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path}: {err}") from None


def _has(data: dict, dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(data, dict) or data.get(part) is None:
            return False
        data = data[part]
    return True


def check_run_record(out, kind: str, record: dict, *, resume: bool, write: bool) -> None:
    """Keep ``record`` in ``<out>/<kind>.json``; on ``resume`` a different stored record raises ``ValueError``."""
    path = Path(out) / f"{kind}.json"
    if resume and path.is_file():
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored != record:
            raise ValueError(f"{path} records another {kind} run ({stored}) than this one ({record}); "
                             f"resuming would not continue the same run: use another --out")
        return
    if write:
        Path(out).mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(record, indent=2, sort_keys=True) + "\n")
