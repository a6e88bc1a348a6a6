"""Tokenizers with one interface: :class:`ByteTokenizer`, :class:`BPETokenizer`, and word spans."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Union

from .base import CONFIG_FILE, Tokenizer, display_label
from .bpe import BPETokenizer
from .byte import ByteTokenizer
from .spans import WORD_PATTERN, WordSpans, find_words, word_spans

TOKENIZERS = {"byte": ByteTokenizer, "bpe": BPETokenizer}


def load_tokenizer(directory: Union[str, os.PathLike]) -> Tokenizer:
    """Load whichever tokenizer ``save(directory)`` wrote (reads ``tokenizer_config.json``)."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a directory written by a SOSM tokenizer's save()")
    kind = json.loads(path.read_text(encoding="utf-8")).get("type")
    if kind not in TOKENIZERS:
        raise ValueError(f"{path}: type={kind!r} is invalid; accepted: one of {sorted(TOKENIZERS)}")
    return TOKENIZERS[kind].load(directory)


__all__ = ["Tokenizer", "ByteTokenizer", "BPETokenizer", "WordSpans", "word_spans", "find_words",
           "WORD_PATTERN", "display_label", "load_tokenizer", "TOKENIZERS", "CONFIG_FILE"]
