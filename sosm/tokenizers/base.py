"""The interface every SOSM tokenizer implements, and the label formatting they share."""
from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Sequence, Union

#: file written by every tokenizer's ``save(dir)``: ``{"type": <name>, ...}``
CONFIG_FILE = "tokenizer_config.json"

_WHITESPACE_LABELS = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}


def display_label(piece: str) -> str:
    """A readable label for a token's text: whitespace as visible symbols, never empty."""
    if piece == "":
        return "∅"
    if piece.isspace():
        return "".join(_WHITESPACE_LABELS.get(ch, f"<U+{ord(ch):04X}>") for ch in piece)
    return "".join(ch if ch.isprintable() else f"<U+{ord(ch):04X}>" for ch in piece.strip())


class Tokenizer(ABC):
    """Common interface: ``encode(str) -> list[int]``, ``decode``, ``vocab_size``, ``name``,
    ``save(dir)`` / ``load(dir)``, ``token_labels(ids)`` and ``encode_with_offsets``."""

    name: str = "base"

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of token ids; every id is in ``[0, vocab_size)``."""

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``."""

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` (invalid UTF-8 byte runs decode to U+FFFD)."""

    @abstractmethod
    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids and, per token, the ``(start, end)`` character span of ``text`` it covers.

        A token that holds only part of a multi-byte character covers that whole character.
        """

    @abstractmethod
    def token_labels(self, ids: Sequence[int]) -> list[str]:
        """One short human-readable label per id (characters, not byte numbers, for printable text)."""

    @abstractmethod
    def save(self, directory: Union[str, os.PathLike]) -> Path:
        """Write the tokenizer into ``directory`` (created if needed); returns the directory."""

    @classmethod
    @abstractmethod
    def load(cls, directory: Union[str, os.PathLike]) -> "Tokenizer":
        """Read a tokenizer written by :meth:`save`."""

    def _check_ids(self, ids: Sequence[int]) -> list[int]:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"ids contain {bad[:5]} outside the accepted range [0, {self.vocab_size})")
        return ids

    def _write_config(self, directory: Path, **extra) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        config = {"type": self.name, "vocab_size": self.vocab_size, **extra}
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"
