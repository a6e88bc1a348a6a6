"""The pieces a training run is assembled from: text, tokenizer, token splits, model.

Kept apart from the loop in :mod:`sosm.train.trainer` so that ``sosm eval`` and
``sosm generate`` rebuild exactly what training used from a checkpoint.
"""
from __future__ import annotations

import json
import tempfile
import warnings
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from ..data import TokenSplits, default_corpus, load_tinyshakespeare, read_text_file, verify_file
from ..data.corpus import TINYSHAKESPEARE_SHA256, TINYSHAKESPEARE_SIZE
from ..tokenizers import BPETokenizer, ByteTokenizer, Tokenizer, load_tokenizer
from .config import DataConfig

#: model factory signature: ``(model_section, vocab_size, block_size) -> nn.Module``
ModelFactory = Callable[[dict, int, int], torch.nn.Module]

_warned: set = set()


def warn_once(key: str, message: str) -> None:
    """Emit ``message`` as a ``UserWarning`` once per process for ``key``."""
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, stacklevel=3)


def load_text(data: DataConfig) -> str:
    """The raw text named by the data section (checksum-verified for Tiny Shakespeare)."""
    if data.dataset == "default":
        return default_corpus()
    if data.dataset == "text_file":
        return read_text_file(data.path)
    if data.path is not None:
        path = Path(data.path)
        verify_file(path, TINYSHAKESPEARE_SIZE, TINYSHAKESPEARE_SHA256)
        return read_text_file(path)
    return load_tinyshakespeare()


def build_tokenizer(data: DataConfig, train_text: str) -> Tokenizer:
    """A fresh tokenizer; BPE is trained on the training part of the text only."""
    if data.tokenizer == "byte":
        return ByteTokenizer()
    return BPETokenizer.train(train_text, vocab_size=data.bpe_vocab_size)


def build_splits(data: DataConfig, tokenizer: Optional[Tokenizer] = None) -> tuple[Tokenizer, TokenSplits]:
    """Tokenizer and train/val token splits (contiguous split at ``1 - val_fraction``).

    The split is made on characters first so a BPE tokenizer never sees validation text.
    """
    text = load_text(data)
    cut = int(len(text) * (1.0 - data.val_fraction))
    if tokenizer is None:
        tokenizer = build_tokenizer(data, text[:cut])
    train = torch.tensor(tokenizer.encode(text[:cut]), dtype=torch.long)
    val = torch.tensor(tokenizer.encode(text[cut:]), dtype=torch.long)
    for name, ids in (("train", train), ("val", val)):
        if len(ids) <= data.block_size + 1:
            source = data.path if data.dataset == "text_file" else f"dataset {data.dataset!r}"
            raise ValueError(f"the {name} split of {source} has {len(ids)} token{'s' * (len(ids) != 1)} "
                             f"(val_fraction={data.val_fraction}) but data.block_size={data.block_size} needs at least "
                             f"{data.block_size + 2} tokens in each split; use a longer text or a smaller block_size")
    return tokenizer, TokenSplits(train, val)


def tokenizer_files(tokenizer: Tokenizer) -> dict:
    """The tokenizer's saved JSON files, ``{name: object}``, for storing in a checkpoint."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save(tmp)
        return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(Path(tmp).iterdir())
                if p.suffix == ".json"}


def tokenizer_from_files(files: dict) -> Tokenizer:
    """Inverse of :func:`tokenizer_files`."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, obj in files.items():
            (Path(tmp) / name).write_text(json.dumps(obj), encoding="utf-8")
        return load_tokenizer(tmp)


def model_vocab_size(objective: str, tokenizer: Tokenizer) -> int:
    """The model's vocabulary: the tokenizer's ids, plus the ``[MASK]`` id for ``objective="mask_predict"``."""
    return tokenizer.vocab_size + (objective == "mask_predict")


def mask_token_id(tokenizer: Tokenizer) -> int:
    """The ``[MASK]`` id of a mask-predict model: one past the tokenizer's ids (the tokenizer itself is unchanged)."""
    return tokenizer.vocab_size


def optimizer_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups: decay on matrices and embeddings (>= 2-D), none on biases, norms, gates, and on
    the parameters a module marks as not decayed (state matrices: ``sosm.model.mixers.base.no_weight_decay``).

    The marks are read by name from each parameter's module, so a model whose parameter objects were
    replaced (FSDP2 shards them) gets the same groups, in the same order, as the model it came from.
    """
    decayed, kept, seen = [], [], set()
    for module in model.modules():
        exempt = getattr(module, "_no_weight_decay", frozenset())
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            (decayed if param.dim() >= 2 and name not in exempt else kept).append(param)
    return [{"params": decayed, "weight_decay": weight_decay}, {"params": kept, "weight_decay": 0.0}]


def count_parameters(model: torch.nn.Module) -> int:
    """Trainable parameters, each shared (tied) tensor counted once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def sosm_model_factory(model_section: dict, vocab_size: int, block_size: int) -> torch.nn.Module:
    """Build ``SOSMModel`` from the ``model`` section, filling vocabulary and context length.

    ``vocab_size`` and the context-length field come from the tokenizer and the data
    section; a ``model`` section that sets them to something else raises ``ValueError``.
    """
    from ..model import SOSMConfig, SOSMModel

    names = {f.name for f in fields(SOSMConfig)}
    section = dict(model_section)
    filled = {"vocab_size": vocab_size, "max_seq_len": block_size}
    for name, value in filled.items():
        if name not in names:
            continue
        if name in section and section[name] != value:
            raise ValueError(f"model.{name}={section[name]!r} disagrees with the data ({value}); "
                             f"leave it out of the model section, it is filled in from the data")
        section[name] = value
    return SOSMModel(SOSMConfig.from_dict(section))


def model_config_dict(model: torch.nn.Module) -> Optional[dict]:
    """The model's resolved config as a dict, when it carries a dataclass ``config``."""
    config = getattr(model, "config", None)
    if config is None:
        return None
    if hasattr(config, "to_dict"):
        return config.to_dict()
    if is_dataclass(config):
        from dataclasses import asdict
        return asdict(config)
    return None
