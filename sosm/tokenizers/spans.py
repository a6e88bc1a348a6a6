"""Word-level display: which word each token belongs to, for subword and byte tokenizers."""
from __future__ import annotations

import re
from dataclasses import dataclass

from .base import Tokenizer

#: a word is a run of letters/digits/underscore (with inner apostrophes: "don't"), or one
#: punctuation character; whitespace belongs to no word
WORD_PATTERN = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]")


@dataclass
class WordSpans:
    """Tokens of a text grouped into words.

    Attributes:
        ids: the token ids of the text.
        words: the words, in order of appearance (original case).
        spans: ``(start, end)`` character span of each word.
        token_word: for each token, the index into ``words`` of its word. A token that
            covers only whitespace belongs to the next word (as in " the" of byte-level
            BPE), or to the previous one at the end of the text; -1 if the text has no word.
    """

    ids: list[int]
    words: list[str]
    spans: list[tuple[int, int]]
    token_word: list[int]

    def token_words(self) -> list[str]:
        """The word of each token ("" for tokens with no word)."""
        return [self.words[w] if w >= 0 else "" for w in self.token_word]


def find_words(text: str) -> list[tuple[int, int]]:
    """Character spans of the words of ``text`` (see :data:`WORD_PATTERN`)."""
    return [match.span() for match in WORD_PATTERN.finditer(text)]


def word_spans(text: str, tokenizer: Tokenizer) -> WordSpans:
    """Map every token of ``tokenizer.encode(text)`` to the word it belongs to.

    A token overlapping several words (a BPE merge across punctuation) belongs to the
    first word it overlaps.

    Example:
        >>> from sosm.tokenizers import ByteTokenizer
        >>> ws = word_spans("Hi, you", ByteTokenizer())
        >>> ws.words, ws.token_word
        (['Hi', ',', 'you'], [0, 0, 1, 2, 2, 2, 2])
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    ids, offsets = tokenizer.encode_with_offsets(text)
    spans = find_words(text)
    owner = [-1] * (len(text) + 1)
    for index, (start, end) in enumerate(spans):
        owner[start:end] = [index] * (end - start)
    token_word = []
    for start, end in offsets:
        hit = next((owner[c] for c in range(start, end) if owner[c] >= 0), -1)
        token_word.append(hit)
    next_word = -1
    for t in range(len(token_word) - 1, -1, -1):
        if token_word[t] >= 0:
            next_word = token_word[t]
        else:
            token_word[t] = next_word
    previous = -1
    for t, w in enumerate(token_word):
        if w < 0:
            token_word[t] = previous
        previous = token_word[t]
    return WordSpans(ids, [text[s:e] for s, e in spans], spans, token_word)
