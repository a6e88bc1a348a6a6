"""Disambiguation probe: does the model treat an ambiguous word differently in its two senses?

For a sentence and an ambiguous word in it (its last occurrence), the probe looks at the
word's last token (for a character model: the word's last character, where the word is
complete) and records:

- ``neighbors``: the words holding that token's graph neighbours (all edge types), as a set;
- ``attribution``: the DePass token shares of the top next-token logit, summed per word;
  ``cue_share`` is the share of the sense cue word (``|c|`` over the cue's tokens / total ``|c|``);
- ``next_probs``: the next-token distribution ``[V]`` and ``hidden``: the final hidden state.

:func:`compare_senses` turns probes of several sentences per sense into within-sense and
across-sense averages: Jensen-Shannon divergence of the next-token distributions, cosine of the
hidden states, and Jaccard overlap of the neighbour word sets. A model that disambiguates shows
across-sense divergence above within-sense divergence.

Example:
    >>> probe = probe_sentence(model, tokenizer, "we sat on the river bank", "bank", cue="river")  # doctest: +SKIP
"""
from __future__ import annotations

import itertools
import re
from typing import Optional

import torch
import torch.nn.functional as F

from .depass import DePass


def _word_of_char(text: str) -> list:
    """For each character, the word (``\\w+`` run) it belongs to, or '' for other characters."""
    owner = [""] * len(text)
    for match in re.finditer(r"\w+", text):
        for i in range(match.start(), match.end()):
            owner[i] = match.group(0)
    return owner


def probe_sentence(model, tokenizer, text: str, word: str, cue: Optional[str] = None) -> dict:
    """Probe the last occurrence of ``word`` in ``text`` (see the module docstring).

    Args:
        model: graph-based ``SOSMModel`` in eval mode.
        tokenizer: the model's tokenizer (``encode_with_offsets`` gives each token's character span).
        text: the sentence (its tokens must fit the model's ``max_seq_len``).
        word: the ambiguous word (must occur in ``text``).
        cue: the word that signals the sense (optional).
    """
    match = [m for m in re.finditer(rf"\b{re.escape(word)}\b", text)]
    if not match:
        raise ValueError(f"word={word!r} does not occur in text={text!r}")
    end = match[-1].end()
    ids, offsets = tokenizer.encode_with_offsets(text)
    if len(ids) > model.config.max_seq_len:
        raise ValueError(f"text has {len(ids)} tokens; accepted: <= max_seq_len={model.config.max_seq_len}")
    position = max(t for t, (start, stop) in enumerate(offsets) if start < end)
    owner = _word_of_char(text)
    token_word = [owner[start] if start < len(owner) else "" for start, _ in offsets]
    input_ids = torch.tensor([ids], dtype=torch.long)
    result = DePass(model).run(input_ids, by="token")
    logits = result.record.logits[0, position]
    target = int(logits.argmax())
    contrib = result.logits[:-1, 0, position, target].abs()  # [T]
    total = float(contrib.sum()) or 1.0
    per_word: dict = {}
    for t, w in enumerate(token_word):
        if w:
            per_word[w] = per_word.get(w, 0.0) + float(contrib[t]) / total
    graph = result.record.state.graph
    neighbors = set()
    if graph is not None:
        frame = graph.seq_len
        src, dst = graph.edge_index
        hits = (dst == position) & (src < graph.num_nodes)
        neighbors = {token_word[j] or repr(text[offsets[j][0]]) for j in (src[hits] % frame).tolist() if j < len(ids)}
    hidden = (result.hidden[-1].sum(0))[0, position]  # [d] residual stream after the last layer
    return {"text": text, "word": word, "cue": cue, "position": position, "neighbors": sorted(neighbors),
            "attribution_by_word": per_word, "cue_share": per_word.get(cue, 0.0) if cue else None,
            "top_next": tokenizer.decode([target]), "next_probs": torch.softmax(logits, -1), "hidden": hidden}


def _js(p: torch.Tensor, q: torch.Tensor) -> float:
    m = (p + q) / 2
    return float(0.5 * (F.kl_div(m.log(), p, reduction="sum") + F.kl_div(m.log(), q, reduction="sum")))


def _jaccard(a: list, b: list) -> float:
    a, b = set(a), set(b)
    return len(a & b) / len(a | b) if a | b else 1.0


def compare_senses(sense_a: list, sense_b: list) -> dict:
    """Within-sense vs across-sense averages of JS divergence, hidden cosine and neighbour Jaccard.

    Args:
        sense_a, sense_b: lists of :func:`probe_sentence` results (>= 1 each; within-sense needs >= 2 in a sense).
    """
    if not sense_a or not sense_b:
        raise ValueError("compare_senses needs at least one probe per sense")

    def mean(values):
        values = list(values)
        return sum(values) / len(values) if values else float("nan")

    within = [pair for group in (sense_a, sense_b) for pair in itertools.combinations(group, 2)]
    across = list(itertools.product(sense_a, sense_b))
    measures = {"js_next": lambda a, b: _js(a["next_probs"], b["next_probs"]),
                "hidden_cosine": lambda a, b: float(F.cosine_similarity(a["hidden"], b["hidden"], dim=0)),
                "neighbor_jaccard": lambda a, b: _jaccard(a["neighbors"], b["neighbors"])}
    out = {}
    for name, fn in measures.items():
        out[f"{name}_within"] = mean(fn(a, b) for a, b in within)
        out[f"{name}_across"] = mean(fn(a, b) for a, b in across)
    return out
