"""``ByteTokenizer``: the 256 UTF-8 byte values as tokens; lossless for any text."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence, Union

from .base import Tokenizer, display_label


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes as ids (vocab 256). ``decode(encode(s)) == s`` for every string ``s``.

    Example:
        >>> tok = ByteTokenizer()
        >>> tok.encode("hé")
        [104, 195, 169]
        >>> tok.token_labels(tok.encode("a bé"))
        ['a', '␣', 'b', 'é', '<0xA9>']
    """

    name = "byte"

    @property
    def vocab_size(self) -> int:
        return 256

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(self._check_ids(ids)).decode("utf-8", errors="replace")

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        ids, offsets = [], []
        for position, ch in enumerate(text):
            encoded = ch.encode("utf-8", errors="surrogatepass")
            ids.extend(encoded)
            offsets.extend([(position, position + 1)] * len(encoded))
        return ids, offsets

    def token_labels(self, ids: Sequence[int]) -> list[str]:
        """Printable ASCII bytes as their character; a multi-byte character labels its lead byte
        with the character and each continuation byte ``<0xNN>``; other bytes ``<0xNN>``."""
        ids = self._check_ids(ids)
        labels, i = [], 0
        while i < len(ids):
            byte = ids[i]
            width = 1 if byte < 0x80 else 2 if 0xC0 <= byte < 0xE0 else 3 if 0xE0 <= byte < 0xF0 else 4 if 0xF0 <= byte < 0xF8 else 0
            chunk = bytes(ids[i:i + width]) if width else b""
            try:
                char = chunk.decode("utf-8") if width else None
            except UnicodeDecodeError:
                char = None
            if char is None:
                labels.append(f"<0x{byte:02X}>")
                i += 1
                continue
            labels.append(display_label(char) if char.isprintable() or char.isspace() else f"<0x{byte:02X}>")
            labels.extend(f"<0x{b:02X}>" for b in chunk[1:])
            i += width
        return labels

    def save(self, directory: Union[str, os.PathLike]) -> Path:
        directory = Path(directory)
        self._write_config(directory)
        return directory

    @classmethod
    def load(cls, directory: Union[str, os.PathLike]) -> "ByteTokenizer":
        return cls()
