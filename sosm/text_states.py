"""Meaningful token states before any model is trained: PPMI + truncated SVD over a corpus.

How a :class:`StateModel` is fit (deterministic, a few seconds on the default corpus):

1. The corpus is cut into *units*: words (``unit="word"``, lowercased, see
   :data:`sosm.tokenizers.WORD_PATTERN`) or token ids (``unit="token"``).
2. Co-occurrence counts of unit pairs up to ``window`` apart, weighted ``1 / distance``,
   symmetric.
3. Positive PMI with the context distribution smoothed by ``context_power`` (0.75).
4. Truncated SVD to 64 directions (randomized, fixed seed), sorted by singular value; each direction's sign is
   fixed so that its largest-magnitude entry is positive; a unit's vector is
   ``U * S ** eigen_power``, scaled to L2 norm 8 (= sqrt(64), RMS 1 per dim).
5. Block mapping (through :mod:`sosm.common.blocks` only): block number b of
   ``BLOCK_NAMES`` gets SVD directions ``4b .. 4b+3``. So ``I`` (identity) holds the four
   strongest directions, ``D`` the next four, then ``R1, R2, K, M, ...``, and ``Z`` the
   weakest kept ones.

Which states tokens get (``unit="word"``, the default): every token takes the vector
of the word it belongs to (:func:`sosm.tokenizers.word_spans`; whitespace tokens take
the next word's), so all bytes or subwords of "function" share the state of "function".
Per-byte co-occurrence states carry little meaning; word states broadcast to their
characters make similar words link in a byte-level graph. Words outside the
vocabulary get the mean vector of their known character 3- and 4-grams (computed from
the vocabulary's vectors, fastText-style); a word with no known n-gram gets zeros.
Because a token's word includes the characters after it, word states look ahead
within the word: use ``unit="token"`` (a pure function of the token id) where
causality matters.

The temporal state (:func:`temporal_states`) is separate: ``[T, 32]`` sinusoidal
position features, ``sin(t * f_k)`` in dims 0-15 and ``cos(t * f_k)`` in dims 16-31 with
``f_k = 10000 ** (-k / 16)``; it feeds the temporal gate and is never concatenated
into the semantic state.
"""
from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

from .common.blocks import BLOCK_DIM, BLOCK_NAMES, SEMANTIC_DIM, block_slice
from .common.configs import reject_unknown_keys
from .common.features import sinusoidal_positions
from .tokenizers import Tokenizer, find_words, word_spans

UNITS = ("word", "token")
WEIGHTS_FILE = "state_model.safetensors"
CONFIG_FILE = "state_model.json"


@dataclass
class StateModelConfig:
    """How a :class:`StateModel` is fit; every default is what ``sosm demo`` uses."""

    unit: str = "word"            # "word": word vectors broadcast to tokens | "token": per token id (causal)
    window: int = 4               # co-occurrence pairs up to this many units apart, weight 1/distance
    max_vocab: int = 10000        # most frequent units kept (ties broken alphabetically)
    min_count: int = 2            # a unit needs this many occurrences to get its own vector
    lowercase: bool = True        # word unit: "The" and "the" share a vector
    context_power: float = 0.75   # PPMI context-distribution smoothing
    eigen_power: float = 0.5      # vector = U * S ** eigen_power before normalising
    ngram_sizes: tuple = (3, 4)   # word unit: character n-grams for out-of-vocabulary words

    def __post_init__(self):
        self.ngram_sizes = tuple(int(n) for n in self.ngram_sizes)
        if self.unit not in UNITS:
            raise ValueError(f"unit={self.unit!r} is invalid; accepted: one of {UNITS}")
        if not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"window={self.window!r} is invalid; accepted: an int >= 1")
        if not isinstance(self.max_vocab, int) or self.max_vocab < 2:
            raise ValueError(f"max_vocab={self.max_vocab!r} is invalid; accepted: an int >= 2")
        if not isinstance(self.min_count, int) or self.min_count < 1:
            raise ValueError(f"min_count={self.min_count!r} is invalid; accepted: an int >= 1")
        if not 0.0 < self.context_power <= 1.0:
            raise ValueError(f"context_power={self.context_power!r} is invalid; accepted: a float in (0, 1]")
        if not 0.0 <= self.eigen_power <= 1.0:
            raise ValueError(f"eigen_power={self.eigen_power!r} is invalid; accepted: a float in [0, 1]")
        if not self.ngram_sizes or any(n < 1 for n in self.ngram_sizes):
            raise ValueError(f"ngram_sizes={self.ngram_sizes!r} is invalid; accepted: a non-empty tuple of ints >= 1")

    @classmethod
    def from_dict(cls, data: dict) -> "StateModelConfig":
        reject_unknown_keys(data, cls, "StateModelConfig keys")
        return cls(**data)


@dataclass
class TextStates:
    """States of one text.

    Attributes:
        ids: the T token ids.
        states: ``FloatTensor[T, 64]`` semantic state (16 named blocks of 4).
        temporal: ``FloatTensor[T, 32]`` temporal state (:func:`temporal_states`).
        labels: one display label per token (``tokenizer.token_labels``).
        words: the words of the text; ``token_word[t]`` indexes it (-1: no word).
        token_word: the word of each token.
    """

    ids: list[int]
    states: torch.Tensor
    temporal: torch.Tensor
    labels: list[str]
    words: list[str]
    token_word: list[int]

    def subset(self, keep: Sequence[int]) -> "TextStates":
        """The nodes at positions ``keep`` (ascending), renumbered 0..len(keep)-1; temporal recomputed."""
        keep = [int(k) for k in keep]
        if keep != sorted(set(keep)) or (keep and not 0 <= keep[0] <= keep[-1] < len(self.ids)):
            raise ValueError(f"keep must be ascending distinct positions in [0, {len(self.ids)}), got {keep[:8]}...")
        index = torch.tensor(keep, dtype=torch.long)
        return TextStates(ids=[self.ids[k] for k in keep], states=self.states[index],
                          temporal=temporal_states(len(keep)), labels=[self.labels[k] for k in keep],
                          words=self.words, token_word=[self.token_word[k] for k in keep])

    def word_level(self) -> "TextStates":
        """One node per word: the mean state of its tokens, labelled by the word."""
        owner = torch.tensor(self.token_word, dtype=torch.long)                       # (T,)
        real = owner >= 0
        if not bool(real.any()):
            raise ValueError("the text has no words; accepted: text with at least one word character or symbol")
        used, node = torch.unique(owner[real], return_inverse=True)                  # (W,), (T_real,)
        sums = torch.zeros(len(used), self.states.shape[1]).index_add_(0, node, self.states[real])
        counts = torch.bincount(node, minlength=len(used)).clamp_min(1)[:, None]
        first = torch.full((len(used),), len(owner), dtype=torch.long).scatter_reduce_(
            0, node, torch.nonzero(real).squeeze(1), reduce="amin")                   # first token of each word
        labels = [self.words[w] for w in used.tolist()]
        return TextStates(ids=[self.ids[t] for t in first.tolist()], states=sums / counts,
                          temporal=temporal_states(len(used)), labels=labels, words=labels,
                          token_word=list(range(len(used))))


#: the temporal state of model-free text states: the leaf's sinusoidal position features ``[T, 32]``
temporal_states = sinusoidal_positions


def _char_ngrams(word: str, sizes: Sequence[int]) -> list[str]:
    marked = f"<{word}>"
    return [marked[i:i + n] for n in sizes for i in range(len(marked) - n + 1)]


def _cooccurrence(seq: np.ndarray, size: int, window: int):
    """Symmetric ``[size, size]`` sparse counts of pairs up to ``window`` apart, weight 1/distance."""
    from scipy.sparse import coo_matrix

    rows, cols, vals = [], [], []
    for distance in range(1, window + 1):
        left, right = seq[:-distance], seq[distance:]
        keep = (left >= 0) & (right >= 0)
        rows += [left[keep], right[keep]]
        cols += [right[keep], left[keep]]
        vals.append(np.full(2 * int(keep.sum()), 1.0 / distance))
    matrix = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(size, size))
    return matrix.tocsr()


def _ppmi(counts, context_power: float):
    total = counts.sum()
    row = np.asarray(counts.sum(axis=1)).ravel()
    context = np.asarray(counts.sum(axis=0)).ravel() ** context_power
    context = context / context.sum()
    coo = counts.tocoo()
    pmi = np.log((coo.data / total) / ((row[coo.row] / total) * context[coo.col]))
    keep = pmi > 0
    from scipy.sparse import csr_matrix

    return csr_matrix((pmi[keep], (coo.row[keep], coo.col[keep])), shape=counts.shape)


def _top_singular(matrix, rank: int, oversample: int = 64, power_iterations: int = 5):
    """Top ``rank`` left singular vectors and values of a sparse matrix.

    Randomized range finder (a fixed-seed Gaussian test matrix, ``power_iterations``
    rounds of orthonormalised power iteration, then an exact SVD of the small
    projection): deterministic, and far cheaper than a dense SVD of a V x V matrix.
    Small matrices take the exact dense SVD.
    """
    size = matrix.shape[0]
    if size <= rank + oversample:
        u, s, _ = torch.linalg.svd(torch.from_numpy(matrix.toarray()))
        return u[:, :rank].numpy(), s[:rank].numpy()
    transpose = matrix.T.tocsr()

    def orthonormal(block: np.ndarray) -> np.ndarray:
        return torch.linalg.qr(torch.from_numpy(block)).Q.numpy()

    probe = np.random.default_rng(0).standard_normal((matrix.shape[1], rank + oversample))
    basis = orthonormal(matrix @ probe)                                       # (V, k+p)
    for _ in range(power_iterations):
        basis = orthonormal(matrix @ orthonormal(transpose @ basis))
    small = torch.from_numpy(np.ascontiguousarray((transpose @ basis).T))     # (k+p, V)
    u_small, s, _ = torch.linalg.svd(small, full_matrices=False)
    return basis @ u_small[:, :rank].numpy(), s[:rank].numpy()


def _svd_vectors(ppmi, eigen_power: float) -> np.ndarray:
    """``[V, 64]`` vectors from the top 64 singular directions, deterministic signs, norm 8."""
    size = ppmi.shape[0]
    rank = min(SEMANTIC_DIM, size)
    u, s = _top_singular(ppmi.astype(np.float64), rank)
    signs = np.sign(u[np.abs(u).argmax(axis=0), np.arange(u.shape[1])])
    vectors = np.zeros((size, SEMANTIC_DIM))
    vectors[:, :rank] = u * signs * (s ** eigen_power)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.where(norms > 0, vectors / np.maximum(norms, 1e-12), 0.0) * math.sqrt(SEMANTIC_DIM)


def _to_blocks(directions: np.ndarray) -> torch.Tensor:
    """Place SVD direction columns into the named blocks: block b <- directions 4b..4b+3."""
    out = torch.zeros(directions.shape[0], SEMANTIC_DIM)
    source = torch.from_numpy(directions).float()
    for b, name in enumerate(BLOCK_NAMES):
        out[:, block_slice(name)] = source[:, b * BLOCK_DIM:(b + 1) * BLOCK_DIM]
    return out


class StateModel:
    """Corpus statistics that give any text ``[T, 64]`` states; fit once, apply anywhere.

    Example:
        >>> from sosm.tokenizers import ByteTokenizer
        >>> model = StateModel.fit("the cat sat on the mat and the dog sat on the log " * 20)
        >>> model.encode("the dog sat", ByteTokenizer()).states.shape
        torch.Size([11, 64])
    """

    def __init__(self, config: StateModelConfig, vocab: list, vectors: torch.Tensor,
                 ngrams: list, ngram_vectors: torch.Tensor, tokenizer_info: Optional[dict] = None):
        self.config = config
        self.vocab = list(vocab)
        self.vectors = vectors                    # (V, 64)
        self.ngrams = list(ngrams)
        self.ngram_vectors = ngram_vectors        # (G, 64)
        self.tokenizer_info = tokenizer_info      # {"name", "vocab_size"} for unit="token"
        self._index = {u: i for i, u in enumerate(self.vocab)}
        self._ngram_index = {g: i for i, g in enumerate(self.ngrams)}

    @classmethod
    def fit(cls, corpus: Union[str, Sequence[int]], tokenizer: Optional[Tokenizer] = None,
            config: Optional[StateModelConfig] = None) -> "StateModel":
        """Fit on ``corpus`` (text, or token ids for ``unit="token"``; ``tokenizer`` is needed then)."""
        config = config or StateModelConfig()
        if config.unit == "token":
            if tokenizer is None:
                raise ValueError("tokenizer is required with unit='token'")
            ids = tokenizer.encode(corpus) if isinstance(corpus, str) else [int(i) for i in corpus]
            if len(ids) < 2:
                raise ValueError(f"corpus has {len(ids)} tokens; accepted: at least 2")
            seq = np.asarray(ids, dtype=np.int64)
            vectors = _to_blocks(_svd_vectors(_ppmi(_cooccurrence(seq, tokenizer.vocab_size, config.window),
                                                    config.context_power), config.eigen_power))
            info = {"name": tokenizer.name, "vocab_size": tokenizer.vocab_size}
            return cls(config, list(range(tokenizer.vocab_size)), vectors, [], torch.zeros(0, SEMANTIC_DIM), info)
        if not isinstance(corpus, str):
            raise TypeError(f"corpus must be a str with unit='word', got {type(corpus).__name__}")
        words = [corpus[s:e] for s, e in find_words(corpus)]
        words = [w.lower() for w in words] if config.lowercase else words
        counts = Counter(words)
        vocab = sorted((w for w, c in counts.items() if c >= config.min_count), key=lambda w: (-counts[w], w))
        vocab = vocab[:config.max_vocab]
        if len(vocab) < 2:
            raise ValueError(f"corpus has {len(vocab)} words seen >= min_count={config.min_count} times; "
                             f"accepted: at least 2 (use a longer corpus)")
        index = {w: i for i, w in enumerate(vocab)}
        seq = np.fromiter((index.get(w, -1) for w in words), dtype=np.int64, count=len(words))
        vectors = _to_blocks(_svd_vectors(_ppmi(_cooccurrence(seq, len(vocab), config.window),
                                                config.context_power), config.eigen_power))
        ngrams, ngram_vectors = cls._fit_ngrams(vocab, vectors, config.ngram_sizes)
        return cls(config, vocab, vectors, ngrams, ngram_vectors)

    @staticmethod
    def _fit_ngrams(vocab: list, vectors: torch.Tensor, sizes: Sequence[int]) -> tuple[list, torch.Tensor]:
        """Mean vector of the vocabulary words that contain each character n-gram."""
        ngram_ids, rows, cols = {}, [], []
        for w, word in enumerate(vocab):
            for gram in set(_char_ngrams(word, sizes)):
                rows.append(ngram_ids.setdefault(gram, len(ngram_ids)))
                cols.append(w)
        if not ngram_ids:
            return [], torch.zeros(0, SEMANTIC_DIM)
        from scipy.sparse import csr_matrix

        incidence = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(ngram_ids), len(vocab)))
        sums = incidence @ vectors.double().numpy()                                   # (G, 64)
        counts = np.maximum(np.asarray(incidence.sum(axis=1)), 1.0)                   # (G, 1)
        return sorted(ngram_ids, key=ngram_ids.get), torch.from_numpy(sums / counts).float()

    def word_vector(self, word: str) -> torch.Tensor:
        """``[64]`` state of ``word`` (n-gram fallback outside the vocabulary; zeros if nothing is known)."""
        key = word.lower() if self.config.lowercase else word
        if key in self._index:
            return self.vectors[self._index[key]]
        found = [self._ngram_index[g] for g in _char_ngrams(key, self.config.ngram_sizes) if g in self._ngram_index]
        if not found:
            return torch.zeros(SEMANTIC_DIM)
        return self.ngram_vectors[found].mean(0)

    def word_vectors(self, words: Sequence[str]) -> torch.Tensor:
        """``[W, 64]`` states of ``words`` (one look-up per distinct word)."""
        distinct = {w: i for i, w in enumerate(dict.fromkeys(words))}
        table = torch.stack([self.word_vector(w) for w in distinct]) if distinct else torch.zeros(0, SEMANTIC_DIM)
        return table[torch.tensor([distinct[w] for w in words], dtype=torch.long)]

    def nearest(self, word: str, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` vocabulary units with the highest cosine to ``word`` (itself excluded)."""
        query = self.word_vector(word)
        sims = torch.nn.functional.cosine_similarity(self.vectors, query[None], dim=1)
        if word in self._index:
            sims[self._index[word]] = -2.0
        top = torch.topk(sims, min(k, len(self.vocab))).indices.tolist()
        return [(str(self.vocab[i]), float(sims[i])) for i in top]

    def encode(self, text: str, tokenizer: Tokenizer) -> TextStates:
        """States ``[T, 64]``, temporal ``[T, 32]`` and labels for ``tokenizer.encode(text)``."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if not text.strip():
            raise ValueError("text is empty; accepted: at least one non-whitespace character")
        spans = word_spans(text, tokenizer)
        if self.config.unit == "token":
            self._check_tokenizer(tokenizer)
            states = self.vectors[torch.tensor(spans.ids, dtype=torch.long)]          # (T, 64)
        else:
            word_states = self.word_vectors(spans.words)                              # (W, 64)
            states = torch.zeros(len(spans.ids), SEMANTIC_DIM)
            owner = torch.tensor(spans.token_word, dtype=torch.long)
            has_word = owner >= 0
            states[has_word] = word_states[owner[has_word]]                           # (T, 64)
        return TextStates(spans.ids, states, temporal_states(len(spans.ids)), tokenizer.token_labels(spans.ids),
                          spans.words, spans.token_word)

    def _check_tokenizer(self, tokenizer: Tokenizer) -> None:
        info = {"name": tokenizer.name, "vocab_size": tokenizer.vocab_size}
        if info != self.tokenizer_info:
            raise ValueError(f"this StateModel was fit with tokenizer {self.tokenizer_info}, got {info}")

    def save(self, directory: Union[str, os.PathLike]) -> Path:
        """Write ``state_model.safetensors`` (vectors) and ``state_model.json`` (config, vocabularies)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({"vectors": self.vectors.contiguous(), "ngram_vectors": self.ngram_vectors.contiguous()},
                  str(directory / WEIGHTS_FILE))
        meta = {"config": asdict(self.config), "vocab": self.vocab, "ngrams": self.ngrams,
                "tokenizer": self.tokenizer_info}
        (directory / CONFIG_FILE).write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: Union[str, os.PathLike]) -> "StateModel":
        from safetensors.torch import load_file

        directory = Path(directory)
        for name in (WEIGHTS_FILE, CONFIG_FILE):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"{directory / name} not found: not a directory written by StateModel.save")
        meta = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
        tensors = load_file(str(directory / WEIGHTS_FILE))
        vocab = meta["vocab"]
        if tensors["vectors"].shape != (len(vocab), SEMANTIC_DIM):
            raise ValueError(f"{directory / WEIGHTS_FILE}: vectors have shape {tuple(tensors['vectors'].shape)}, "
                             f"expected ({len(vocab)}, {SEMANTIC_DIM}) from {directory / CONFIG_FILE}")
        return cls(StateModelConfig.from_dict(meta["config"]), vocab, tensors["vectors"], meta["ngrams"],
                   tensors["ngram_vectors"], meta["tokenizer"])


@lru_cache(maxsize=2)
def default_state_model(unit: str = "word") -> StateModel:
    """The :class:`StateModel` of the embedded default corpus (word unit), fit once per process."""
    from .data import default_corpus

    if unit != "word":
        raise ValueError(f"unit={unit!r} is invalid for the default model; accepted: 'word'")
    return StateModel.fit(default_corpus(), config=StateModelConfig(unit=unit))


def corpus_states(text_or_ids: Union[str, Sequence[int]], tokenizer: Tokenizer,
                  model: Optional[StateModel] = None) -> TextStates:
    """States of a text from corpus statistics (no trained network).

    Args:
        text_or_ids: the text, or token ids of ``tokenizer`` (they must round-trip
            through ``decode``/``encode`` so that words can be found).
        tokenizer: a :class:`sosm.tokenizers.Tokenizer`.
        model: a fitted :class:`StateModel`; default :func:`default_state_model`.

    Returns:
        :class:`TextStates` with ``states [T, 64]`` and ``temporal [T, 32]``.
    """
    model = model or default_state_model()
    if isinstance(text_or_ids, str):
        return model.encode(text_or_ids, tokenizer)
    ids = [int(i) for i in text_or_ids]
    text = tokenizer.decode(ids)
    result = model.encode(text, tokenizer)
    if result.ids != ids:
        raise ValueError("text_or_ids: these ids do not round-trip through tokenizer.decode/encode; "
                         "pass the text instead")
    return result
