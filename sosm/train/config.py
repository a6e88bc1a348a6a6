"""`TrainConfig`: everything a training run needs, in one YAML-serialisable dataclass.

A config has three sections plus run-control fields::

    seed: 1337
    batch_size: 12
    max_steps: 2000
    data:  {dataset: tinyshakespeare, tokenizer: byte, block_size: 64}
    model: {model: hybrid, ...}          # fields of sosm.SOSMConfig, validated by it
    optim: {lr: 1.0e-3, warmup_steps: 100}

Unknown keys are rejected with the list of valid ones, in every section. The
``model`` section is kept as a plain dict here and validated by ``SOSMConfig`` when
the trainer builds the model, so this module does not depend on the model code.

Example:
    >>> cfg = TrainConfig.from_dict({"max_steps": 10, "optim": {"lr": 3e-4}})
    >>> cfg.optim.lr, cfg.optim.resolved_decay_steps(cfg.max_steps)
    (0.0003, 10)
"""
from __future__ import annotations

import copy
import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from ..common.configs import reject_unknown_keys
from ..common.files import atomic_write

DATASETS = ("tinyshakespeare", "default", "text_file")
TOKENIZERS = ("byte", "bpe")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16")

#: what a config file must give (a run is never a silent default): key -> what it says
REQUIRED_IN_FILE = {"max_steps": "how many optimiser steps",
                    "data.dataset": f"which text: {', '.join(DATASETS[:-1])} or {DATASETS[-1]}",
                    "model.model": "which model, e.g. hybrid, transformer, mamba or graph_attention"}

#: fields that may differ between a checkpoint and the config that resumes it: they
#: steer how long the run goes and how often it reports, never the trajectory itself.
RUN_CONTROL_FIELDS = ("max_steps", "eval_interval", "eval_iters", "log_interval",
                      "checkpoint_interval", "keep_last", "device", "progress_bar", "tensorboard",
                      "distributed", "collective_timeout_s")
DISTRIBUTED = ("ddp", "fsdp")
#: training objectives: next-token prediction (a causal model), or mask-predict (a bidirectional model, model.causal=false)
OBJECTIVES = ("next_token", "mask_predict")


def _need(cond: bool, section: str, name: str, value: Any, accepted: str) -> None:
    if not cond:
        raise ValueError(f"{section}.{name}={value!r} is invalid; accepted: {accepted}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _reject_unknown(cls, data: dict, section: str) -> None:
    if not isinstance(data, dict):
        raise TypeError(f"config section {section!r} must be a mapping, got {type(data).__name__}")
    reject_unknown_keys(data, cls, where=f" in config section {section!r}")


@dataclass
class DataConfig:
    """Where the text comes from and how it becomes tokens."""

    dataset: str = "tinyshakespeare"    # "tinyshakespeare" | "default" (embedded stdlib corpus) | "text_file"
    path: Optional[str] = None          # text file for "text_file"; optional local copy for "tinyshakespeare"
    tokenizer: str = "byte"             # "byte" (256 ids; one id per character on ASCII text) | "bpe"
    bpe_vocab_size: int = 512           # target vocabulary for "bpe" (trained on the training split)
    val_fraction: float = 0.1           # last fraction of the tokens held out for validation
    block_size: int = 64                # context length T of every training sequence

    def validate(self) -> "DataConfig":
        s = "data"
        _need(self.dataset in DATASETS, s, "dataset", self.dataset, f"one of {DATASETS}")
        _need(self.path is None or isinstance(self.path, str), s, "path", self.path, "None or a file path")
        _need(self.dataset != "text_file" or self.path is not None, s, "path", self.path,
              "a file path when dataset is 'text_file'")
        _need(self.tokenizer in TOKENIZERS, s, "tokenizer", self.tokenizer, f"one of {TOKENIZERS}")
        _need(_is_int(self.bpe_vocab_size) and self.bpe_vocab_size >= 256, s, "bpe_vocab_size",
              self.bpe_vocab_size, "an int >= 256")
        _need(_is_number(self.val_fraction) and 0.0 < self.val_fraction < 1.0, s, "val_fraction",
              self.val_fraction, "a float in (0, 1)")
        _need(_is_int(self.block_size) and self.block_size >= 2, s, "block_size", self.block_size, "an int >= 2")
        return self


@dataclass
class OptimConfig:
    """AdamW with linear warmup then cosine decay to ``min_lr``, and gradient clipping."""

    lr: float = 1e-3                    # peak learning rate, reached at the end of warmup
    min_lr: float = 1e-4                # floor of the cosine decay (nanoGPT: lr / 10)
    warmup_steps: int = 100             # linear warmup from lr / warmup_steps to lr over these steps
    lr_decay_steps: Optional[int] = None  # step where the cosine reaches min_lr (None: max_steps)
    weight_decay: float = 0.1           # decoupled weight decay on matrices (>= 2-D); none on biases/norms/gates
    beta1: float = 0.9                  # AdamW first-moment decay
    beta2: float = 0.99                 # AdamW second-moment decay (0.99 suits small char models)
    eps: float = 1e-8                   # AdamW epsilon
    grad_clip: float = 1.0              # clip the global gradient norm to this (0 disables)

    def validate(self) -> "OptimConfig":
        s = "optim"
        _need(_is_number(self.lr) and self.lr > 0, s, "lr", self.lr, "a float > 0")
        _need(_is_number(self.min_lr) and 0 <= self.min_lr <= self.lr, s, "min_lr", self.min_lr, "0 <= min_lr <= lr")
        _need(_is_int(self.warmup_steps) and self.warmup_steps >= 0, s, "warmup_steps", self.warmup_steps, "an int >= 0")
        _need(self.lr_decay_steps is None or (_is_int(self.lr_decay_steps) and self.lr_decay_steps >= 1), s,
              "lr_decay_steps", self.lr_decay_steps, "None or an int >= 1")
        _need(_is_number(self.weight_decay) and self.weight_decay >= 0, s, "weight_decay", self.weight_decay, ">= 0")
        _need(_is_number(self.beta1) and 0 <= self.beta1 < 1, s, "beta1", self.beta1, "[0, 1)")
        _need(_is_number(self.beta2) and 0 <= self.beta2 < 1, s, "beta2", self.beta2, "[0, 1)")
        _need(_is_number(self.eps) and self.eps > 0, s, "eps", self.eps, "> 0")
        _need(_is_number(self.grad_clip) and self.grad_clip >= 0, s, "grad_clip", self.grad_clip, ">= 0 (0 disables)")
        return self

    def resolved_decay_steps(self, max_steps: int) -> int:
        """The step where the cosine reaches ``min_lr``: ``lr_decay_steps`` or ``max_steps``."""
        return self.lr_decay_steps if self.lr_decay_steps is not None else max_steps


@dataclass
class TrainConfig:
    """A whole training run: run control, then the ``data``, ``model`` and ``optim`` sections."""

    name: str = "run"                   # label used in logs and result tables
    seed: int = 1337                    # seeds model init, dropout and batch sampling
    batch_size: int = 12                # sequences per optimiser step
    max_steps: int = 2000               # optimiser steps in total (the CLI's --max-steps overrides)
    eval_interval: int = 250            # estimate train/val loss every N steps (and at the last step)
    eval_iters: int = 20                # batches per loss estimate
    log_interval: int = 10              # JSONL/TensorBoard record every N steps
    checkpoint_interval: int = 500      # write a checkpoint every N steps (0: only at the end)
    keep_last: int = 3                  # checkpoints kept on disk (older ones are deleted)
    device: str = "auto"                # "auto" (cuda when available) | "cpu" | "cuda"
    dtype: str = "auto"                 # "auto": bf16 autocast where the device supports it, else fp32
    progress_bar: bool = True           # tqdm bar with loss, tokens/s and ETA
    tensorboard: bool = True            # also log to TensorBoard when it is installed
    distributed: str = "ddp"            # under torchrun: "ddp" (a replica per rank) | "fsdp" (FSDP2 shards); one process ignores it
    collective_timeout_s: float = 300.0  # under torchrun: a collective waiting longer fails the run (no rank hangs)
    objective: str = "next_token"       # "next_token" (causal LM) | "mask_predict" (bidirectional model: model.causal=false; a [MASK] id is added to the vocabulary)
    data: DataConfig = field(default_factory=DataConfig)     # text, tokenizer, split, context length
    model: dict = field(default_factory=dict)                # fields of sosm.SOSMConfig (vocab/context filled in)
    optim: OptimConfig = field(default_factory=OptimConfig)  # AdamW, schedule, clipping

    def __post_init__(self):
        self.validate()

    def validate(self) -> "TrainConfig":
        s = "train"
        _need(isinstance(self.name, str) and self.name, s, "name", self.name, "a non-empty string")
        _need(_is_int(self.seed) and self.seed >= 0, s, "seed", self.seed, "an int >= 0")
        for name in ("batch_size", "max_steps", "eval_interval", "eval_iters", "log_interval", "keep_last"):
            value = getattr(self, name)
            _need(_is_int(value) and value >= 1, s, name, value, "an int >= 1")
        _need(_is_int(self.checkpoint_interval) and self.checkpoint_interval >= 0, s, "checkpoint_interval",
              self.checkpoint_interval, "an int >= 0 (0: only at the end)")
        _need(self.device in DEVICES, s, "device", self.device, f"one of {DEVICES}")
        _need(self.dtype in DTYPES, s, "dtype", self.dtype, f"one of {DTYPES}")
        _need(self.distributed in DISTRIBUTED, s, "distributed", self.distributed, f"one of {DISTRIBUTED}")
        _need(_is_number(self.collective_timeout_s) and self.collective_timeout_s > 0, s, "collective_timeout_s",
              self.collective_timeout_s, "a number of seconds > 0")
        _need(self.objective in OBJECTIVES, s, "objective", self.objective, f"one of {OBJECTIVES}")
        bidirectional = self.model.get("causal", True) is False if isinstance(self.model, dict) else False
        if self.objective == "mask_predict":
            _need(bidirectional, s, "objective", self.objective,
                  "next_token, or mask_predict with a bidirectional model (model.causal: false): masked tokens are "
                  "predicted from both sides")
        else:
            _need(not bidirectional, s, "objective", self.objective,
                  "mask_predict for a bidirectional model (model.causal: false); next_token needs a causal model: a "
                  "bidirectional one reads the next token, its own target")
        for name in ("progress_bar", "tensorboard"):
            _need(isinstance(getattr(self, name), bool), s, name, getattr(self, name), "true or false")
        if not isinstance(self.data, DataConfig):
            raise TypeError(f"train.data must be a DataConfig, got {type(self.data).__name__}")
        if not isinstance(self.optim, OptimConfig):
            raise TypeError(f"train.optim must be an OptimConfig, got {type(self.optim).__name__}")
        if not isinstance(self.model, dict):
            raise TypeError(f"train.model must be a mapping of SOSMConfig fields, got {type(self.model).__name__}")
        self.data.validate()
        self.optim.validate()
        return self

    @property
    def leaky(self) -> bool:
        """True when the model's graph is built non-causally in a causal model (the deliberately LEAKY control).

        A bidirectional model (``model.causal: false``, trained by mask-predict) reads both sides by design: not leaky.
        """
        graph = self.model.get("graph")
        return isinstance(graph, dict) and graph.get("causal", True) is False and self.model.get("causal", True) is not False

    @property
    def display_name(self) -> str:
        """``name``, prefixed with ``LEAKY`` when the graph is non-causal."""
        return f"LEAKY {self.name}" if self.leaky else self.name

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def replace(self, **changes) -> "TrainConfig":
        """A validated copy with top-level fields changed."""
        data = self.to_dict()
        data.update(changes)
        return TrainConfig.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        """Build from a nested mapping; rejects unknown keys in every section."""
        if not isinstance(data, dict):
            raise TypeError(f"a training config must be a mapping, got {type(data).__name__}")
        data = _move_gradient_checkpointing(copy.deepcopy(data))
        _reject_unknown(cls, data, "train")
        data_section = data.pop("data", None) or {}
        optim_section = data.pop("optim", None) or {}
        _reject_unknown(DataConfig, data_section, "data")
        _reject_unknown(OptimConfig, optim_section, "optim")
        model_section = data.pop("model", None) or {}
        return cls(data=DataConfig(**data_section).validate(), optim=OptimConfig(**optim_section).validate(),
                   model=model_section, **data)

    @classmethod
    def from_yaml(cls, path) -> "TrainConfig":
        """Load a YAML (or JSON) file; errors name the file.

        Unlike :meth:`from_dict`, a file must say what a run trains: :data:`REQUIRED_IN_FILE`
        (an empty or section-less file is an error, never a default run).
        """
        path = Path(path)
        if path.is_dir():
            raise IsADirectoryError(f"config file {path} is a directory; accepted: a YAML file "
                                    f"(for example experiments/configs/smoke.yaml)")
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"config file {path} is not UTF-8 text (byte 0x{raw[err.start]:02x} at byte offset "
                             f"{err.start}); accepted: a YAML file") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ValueError(f"config file {path} is not valid YAML: {' '.join(str(err).split())}") from None
        try:
            config = cls.from_dict({} if data is None else data)
        except (ValueError, TypeError) as err:  # the file's content is the bad value, whatever its type
            raise ValueError(f"{path}: {err}") from None
        missing = [name for name in REQUIRED_IN_FILE if not _has_key(data, name)]
        if missing:
            raise ValueError(f"config file {path} {'is empty' if not data else 'is incomplete'}: a training config "
                             f"needs {', '.join(missing)} ({'; '.join(REQUIRED_IN_FILE[m] for m in missing)}); "
                             f"see experiments/configs/smoke.yaml")
        return config

    def to_yaml(self, path) -> None:
        """Write the config as YAML (atomically)."""
        atomic_write(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    def trajectory_dict(self) -> dict:
        """The fields that determine the training trajectory (everything but run control and name).

        The trainer pins ``optim.lr_decay_steps`` when a run starts, so a resumed run keeps
        its schedule even when ``max_steps`` is raised to extend it.
        """
        data = self.to_dict()
        for name in RUN_CONTROL_FIELDS:
            data.pop(name)
        data.pop("name")
        return data


def _has_key(data, dotted: str) -> bool:
    """``data`` holds the (dotted) key with a value other than null."""
    for part in dotted.split("."):
        if not isinstance(data, dict) or data.get(part) is None:
            return False
        data = data[part]
    return True


def _move_gradient_checkpointing(data: dict) -> dict:
    """A top-level ``gradient_checkpointing`` (its home before 0.2) moved into the ``model`` section.

    ``false`` (the model's default) is dropped silently, so a config and its old checkpoint compare equal.
    """
    if "gradient_checkpointing" not in data:
        return data
    value = data.pop("gradient_checkpointing")
    if value is False:
        return data  # the default either way (checkpoints before 0.2 all carry it): nothing to move, nothing to say
    warnings.warn("training config: 'gradient_checkpointing' is deprecated at the top level and will be removed "
                  "in the next release; it is now 'model.gradient_checkpointing'", FutureWarning, stacklevel=4)
    model = data.get("model") or {}
    if not isinstance(model, dict):
        return data
    if "gradient_checkpointing" in model and model["gradient_checkpointing"] != value:
        raise ValueError(f"the config gives gradient_checkpointing={value!r} (deprecated) and "
                         f"model.gradient_checkpointing={model['gradient_checkpointing']!r}; "
                         "keep only model.gradient_checkpointing")
    if value:
        data["model"] = {**model, "gradient_checkpointing": value}
    return data


class _Absent:
    def __repr__(self) -> str:
        return "<absent>"


_ABSENT = _Absent()


def diff_dicts(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Human-readable differences between two nested dicts, as ``key: old -> new`` lines."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, _ABSENT), new.get(key, _ABSENT)
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(diff_dicts(a, b, prefix=f"{name}."))
        elif a != b:
            out.append(f"{name}: {a!r} -> {b!r}")
    return out
