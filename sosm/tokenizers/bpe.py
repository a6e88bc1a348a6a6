"""``BPETokenizer``: byte-level BPE trained offline with HuggingFace ``tokenizers``."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence, Union

from .base import Tokenizer, display_label

TOKENIZER_FILE = "tokenizer.json"


class BPETokenizer(Tokenizer):
    """Byte-level BPE (GPT-2 style byte alphabet, so any text round-trips).

    Train with :meth:`train` (a few seconds on ~1 MB of text), then ``save(dir)`` writes
    ``dir/tokenizer.json`` (HuggingFace format) beside ``tokenizer_config.json``.

    Example:
        >>> tok = BPETokenizer.train("the cat sat on the mat. " * 50, vocab_size=300)
        >>> tok.decode(tok.encode("the hat")) == "the hat"
        True
    """

    name = "bpe"

    def __init__(self, hf_tokenizer):
        self._tok = hf_tokenizer

    @classmethod
    def train(cls, corpus: Union[str, Iterable[str]], vocab_size: int = 512, min_frequency: int = 2) -> "BPETokenizer":
        """Train on ``corpus`` (a string, or an iterable of strings).

        Args:
            vocab_size: total ids including the 256 byte symbols; an int in [256, 1_000_000].
            min_frequency: a merge needs at least this many occurrences (>= 1).
        """
        from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, processors, trainers

        if not isinstance(vocab_size, int) or not 256 <= vocab_size <= 1_000_000:
            raise ValueError(f"vocab_size={vocab_size!r} is invalid; accepted: an int in [256, 1000000]")
        if not isinstance(min_frequency, int) or min_frequency < 1:
            raise ValueError(f"min_frequency={min_frequency!r} is invalid; accepted: an int >= 1")
        if isinstance(corpus, str):
            if not corpus:
                raise ValueError("corpus is empty; accepted: a non-empty string or iterable of strings")
            corpus = [corpus[i:i + 65536] for i in range(0, len(corpus), 65536)]
        tok = HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(corpus, trainer)
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self._tok.encode(text).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(self._check_ids(ids), skip_special_tokens=False)

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        encoding = self._tok.encode(text)
        return encoding.ids, [tuple(span) for span in encoding.offsets]

    def token_labels(self, ids: Sequence[int]) -> list[str]:
        """The decoded text of each token (whitespace shown as ␣ ↵ ⇥); a token holding part of
        a multi-byte character shows its byte-level symbol instead."""
        labels = []
        for i in self._check_ids(ids):
            piece = self._tok.decode([i])
            labels.append(self._tok.id_to_token(i) if "\ufffd" in piece else display_label(piece))
        return labels

    def save(self, directory: Union[str, os.PathLike]) -> Path:
        directory = Path(directory)
        self._write_config(directory)
        self._tok.save(str(directory / TOKENIZER_FILE))
        return directory

    @classmethod
    def load(cls, directory: Union[str, os.PathLike]) -> "BPETokenizer":
        from tokenizers import Tokenizer as HFTokenizer

        path = Path(directory) / TOKENIZER_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: not a directory written by BPETokenizer.save")
        return cls(HFTokenizer.from_file(str(path)))
