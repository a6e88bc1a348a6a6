"""The whole-text path of ``sosm graph``: the graph of a book in about a minute, written as arrays.

Above :data:`LARGE_TEXT_NODES` nodes (or with ``--topk exact|hnsw``) the text is not cut into
windows: every node gets its k best *earlier* nodes of the whole text (causal; bidirectional on
request). States are a function of the word (corpus states) or of the token id (checkpoint
states), so nodes are mapped to their distinct state rows and
:func:`sosm.graph.distinct.distinct_topk` ranks those rows, exactly or with hnswlib
(:func:`sosm.memory.ann.hnsw_ranking`), and expands them to positions. Recall against the exact
top-k is measured on a sample of nodes and written with the graph.

Files (:mod:`sosm.cli.text_graph_files`): ``.npz`` arrays ``neighbours [N, k]`` int32
(-1: none), ``similarity [N, k]`` float32, ``dominant_block [N, k]`` uint8 (index into
``BLOCK_NAMES``), ``token_ids [N]`` int32 (-1 for word nodes), ``spans [N, 2]`` int32 character
spans into ``text`` (UTF-8 bytes), and ``meta`` (UTF-8 JSON); ``.jsonl`` a meta line then one line
per node. Sequential edges (``i - window .. i - 1``) are implied by ``meta.config.window``.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch


#: ``--topk auto`` builds windows up to this many nodes and the whole-text graph above
LARGE_TEXT_NODES = 50_000
#: ``--topk auto`` on the whole-text path ranks distinct states exactly up to this many, by hnswlib above
EXACT_DISTINCT_MAX = 4096
#: nodes whose exact top-k is computed to measure recall
RECALL_SAMPLE = 2000
#: the only GraphConfig options the whole-text path implements (others must keep their defaults)
SUPPORTED = ("causal", "window", "k", "similarity", "block_weights", "projection_dim", "projection_seed",
             "topk_tile", "threshold", "sample_seed")


class Stopwatch:
    """Wall and process CPU time of consecutive stages (CPU time says what a stage costs on a busy machine)."""

    def __init__(self):
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def wall(self) -> float:
        return time.perf_counter() - self._wall

    def lap(self) -> dict:
        wall, cpu = time.perf_counter(), time.process_time()
        out = {"wall_s": round(wall - self._wall, 2), "cpu_s": round(cpu - self._cpu, 2)}
        self._wall, self._cpu = wall, cpu
        return out


@dataclass
class TextNodes:
    """The nodes of a text as distinct state rows: node n has state ``table[inverse[n]]``."""

    kind: str                  # "byte", "token" or "word"
    text: str
    table: torch.Tensor        # [U, 64] distinct states
    inverse: torch.Tensor      # [N] long
    token_ids: np.ndarray      # [N] int32 (-1 for word nodes)
    spans: np.ndarray          # [N, 2] int32 character spans
    tokenizer: object
    states: str                # where the states came from

    @property
    def num_nodes(self) -> int:
        return int(self.inverse.numel())

    def labels(self, start: int, stop: int) -> list:
        if self.kind == "word":
            return [self.text[a:b] for a, b in self.spans[start:stop].tolist()]
        return self.tokenizer.token_labels(self.token_ids[start:stop].tolist())


@dataclass
class TextGraph:
    """A whole-text graph: per node its k semantic neighbours, plus how it was found."""

    nodes: TextNodes
    config: object
    neighbours: torch.Tensor   # [N, k] int32
    similarity: torch.Tensor   # [N, k] float32
    dominant_block: torch.Tensor  # [N, k] uint8
    meta: dict = field(default_factory=dict)


def _byte_offsets(text: str):
    """Byte ids and each byte's character span, vectorised (the ByteTokenizer's encode_with_offsets)."""
    data = text.encode("utf-8")
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    width = 1 + (codes >= 0x80) + (codes >= 0x800) + (codes >= 0x10000)
    char = np.repeat(np.arange(len(codes), dtype=np.int64), width)
    return np.frombuffer(data, dtype=np.uint8).astype(np.int32), char, char + 1


def token_words(text: str, starts: np.ndarray, ends: np.ndarray):
    """Words of ``text`` and the word of each token (``sosm.tokenizers.word_spans``'s rule), vectorised.

    Returns ``(word_spans [W, 2] int64, token_word [T] int64)``.
    """
    from ..tokenizers.spans import find_words

    spans = np.asarray(find_words(text), dtype=np.int64).reshape(-1, 2)
    if len(starts) == 0:
        return spans, np.zeros(0, dtype=np.int64)
    first = np.searchsorted(spans[:, 1], starts, side="right")             # first word ending after the token starts
    hit = np.full(len(starts), -1, dtype=np.int64)
    inside = first < len(spans)
    inside[inside] &= spans[first[inside], 0] < ends[inside]
    hit[inside] = first[inside]
    if not inside.any():
        return spans, hit
    later = np.where(inside, np.arange(len(hit)), len(hit))
    nxt = np.minimum.accumulate(later[::-1])[::-1]                          # nearest token at or after with a word
    filled = np.where(nxt < len(hit), hit[np.minimum(nxt, len(hit) - 1)], hit[inside][-1])
    return spans, filled


def text_nodes(args, text: str) -> TextNodes:
    """Nodes, distinct states and spans of ``text`` for ``--states``/``--corpus``/``--tokenizer``/``--nodes``."""
    from ..text_states import StateModel, default_state_model
    from ..tokenizers.spans import WORD_PATTERN
    from .pipeline import is_checkpoint, load_corpus, make_tokenizer

    model = None
    if args.states != "corpus" and is_checkpoint(args.states):
        from ..train.loading import load_trained

        trained = load_trained(args.states)
        tokenizer, source = trained.tokenizer, f"checkpoint {args.states}"
        if getattr(trained.model, "front", None) is None:
            raise ValueError(f"--states {args.states}: this model ({trained.label}) has no MU semantic state; accepted: "
                             f"a checkpoint of a graph-based model, 'corpus', or a StateModel directory")
        with torch.no_grad():
            id_table = trained.model.front.semantic(torch.arange(tokenizer.vocab_size)[None])[1][0].float()
    else:
        corpus = load_corpus(args.corpus) if (args.corpus != "default" or args.tokenizer == "bpe") else None
        tokenizer = make_tokenizer(args.tokenizer, corpus or "", args.bpe_vocab)
        if args.states == "corpus":
            model = default_state_model() if corpus is None or args.corpus == "default" else StateModel.fit(corpus)
            source = f"corpus {args.corpus}"
        else:
            model, source = StateModel.load(args.states), f"StateModel {args.states}"
        id_table = None
        if model.config.unit == "token":
            model._check_tokenizer(tokenizer)
            id_table = model.vectors.float()
    if getattr(tokenizer, "name", "") == "byte":
        ids, starts, ends = _byte_offsets(text)
    else:
        raw, offsets = tokenizer.encode_with_offsets(text)
        ids = np.asarray(raw, dtype=np.int32)
        starts, ends = (np.asarray(offsets, dtype=np.int64).reshape(-1, 2).T if offsets else
                        (np.zeros(0, np.int64), np.zeros(0, np.int64)))
    spans, token_word = token_words(text, starts, ends)
    words = WORD_PATTERN.findall(text)                                      # the same words as the spans, as str
    if args.nodes == "word":  # a word no token starts in (a token spanning two words) is no node, as in word_level()
        owned = np.bincount(token_word[token_word >= 0], minlength=len(words)) > 0
        if not owned.all():
            renumber = np.cumsum(owned) - 1
            token_word = np.where(token_word >= 0, renumber[np.maximum(token_word, 0)], -1)
            spans, words = spans[owned], [w for w, keep in zip(words, owned) if keep]
    if id_table is None:                                                    # word states: one row per distinct key
        keys = [w.lower() for w in words] if model.config.lowercase else words
        distinct = dict.fromkeys(keys)
        row_of = {key: i for i, key in enumerate(distinct)}
        table = torch.cat([torch.stack([model.word_vector(key) for key in distinct]) if distinct else
                           torch.zeros(0, 64), torch.zeros(1, 64)]).float()  # last row: tokens with no word
        word_row = torch.tensor([row_of[key] for key in keys], dtype=torch.long)
        no_word = len(distinct)
        if args.nodes == "word":
            inverse = word_row
        else:
            owner = torch.from_numpy(token_word)
            inverse = torch.where(owner >= 0, word_row[owner.clamp_min(0)] if len(keys) else owner, no_word)
    elif args.nodes == "word":                                              # id states pooled per word: key = its ids
        inverse, table = _pooled_word_rows(ids, token_word, len(words), id_table)
    else:
        inverse, table = torch.from_numpy(ids.astype(np.int64)), id_table
    if args.nodes == "word":
        node_ids, node_spans = np.full(len(words), -1, dtype=np.int32), spans.astype(np.int32)
    else:
        node_ids, node_spans = ids.astype(np.int32), np.stack([starts, ends], 1).astype(np.int32)
    if inverse.numel() == 0:
        raise ValueError("the text has no nodes; accepted: text with at least one word character or symbol")
    used = torch.bincount(inverse, minlength=table.shape[0]) > 0            # drop rows no node uses
    renumber = torch.cumsum(used.long(), 0) - 1
    kind = "byte" if args.nodes == "token" and getattr(tokenizer, "name", "") == "byte" else args.nodes
    return TextNodes(kind, text, table[used], renumber[inverse], node_ids, node_spans, tokenizer, source)


def _pooled_word_rows(ids, token_word, num_words, id_table):
    """Per word the mean state of its tokens (as ``TextStates.word_level``); distinct by the word's token ids."""
    order = np.argsort(token_word, kind="stable")
    bounds = np.searchsorted(token_word[order], np.arange(num_words + 1))
    keys = [ids[order[a:b]].tobytes() for a, b in zip(bounds[:-1], bounds[1:])]
    distinct = {key: i for i, key in enumerate(dict.fromkeys(keys))}
    table = torch.stack([id_table[torch.from_numpy(np.frombuffer(key, dtype=np.int32).astype(np.int64))].mean(0)
                         for key in distinct])
    return torch.tensor([distinct[key] for key in keys], dtype=torch.long), table


def check_config(config, num_nodes: int) -> None:
    """``ValueError`` naming the GraphConfig options the whole-text path does not implement."""
    from ..graph import GraphConfig

    default = GraphConfig()
    changed = [name for name in vars(default) if name not in SUPPORTED and getattr(config, name) != getattr(default, name)]
    if changed:
        raise ValueError(f"{', '.join(changed)} are not available on the whole-text path ({num_nodes:,} nodes; "
                         f"supported: {', '.join(SUPPORTED)}); use --topk window (windows of --chunk nodes, every "
                         f"option) or leave them at their defaults")


def choose_method(topk: str, num_nodes: int, num_distinct: int) -> str:
    """``"window"``, ``"exact"`` or ``"hnsw"`` for ``--topk`` (``auto``: by size, see the module constants)."""
    if topk != "auto":
        return topk
    if num_nodes <= LARGE_TEXT_NODES:
        return "window"
    return "exact" if num_distinct <= EXACT_DISTINCT_MAX else "hnsw"


def build_text_graph(config, nodes: TextNodes, method: str, progress: bool = True,
                     recall_sample: int = RECALL_SAMPLE) -> TextGraph:
    """The whole-text graph of ``nodes`` by ``method`` (``"exact"`` or ``"hnsw"``), with recall on a sample."""
    from tqdm import tqdm

    from ..graph.distinct import distinct_topk, exact_rows
    from ..graph.similarity import drop_zero_columns, featurize

    check_config(config, nodes.num_nodes)
    timings = {}
    stage = Stopwatch()
    features = drop_zero_columns(featurize(nodes.table[None], config)[0])
    rank_fn = None
    if method == "hnsw":
        from ..memory.ann import hnsw_ranking

        rank_fn = hnsw_ranking
    n = nodes.num_nodes
    with tqdm(desc=f"ranked nodes ({method})", unit="node", unit_scale=True, file=sys.stderr,
              disable=not progress, smoothing=0.1) as bar:
        def started(count):
            if progress:
                print(f"{n - count:,} of {n:,} nodes settled by their own state's earlier occurrences "
                      f"({stage.wall():.1f} s); ranking the rest", file=sys.stderr)
            bar.reset(total=count)

        found = distinct_topk(features, nodes.inverse, config.k, causal=config.causal, window=config.window,
                              rank_fn=rank_fn, progress=bar.update, started=started)
    timings["neighbours"] = stage.lap()
    sample = torch.randperm(n, generator=torch.Generator().manual_seed(config.sample_seed))[:recall_sample]
    sample = sample.sort().values
    truth, _ = exact_rows(features, nodes.inverse, sample, config.k, causal=config.causal, window=config.window,
                          occurrences=found.occurrences)
    recall = _recall(found.indices[sample].long(), truth)
    timings["recall"] = stage.lap()
    neighbours, similarity = found.indices, found.scores
    if config.threshold is not None:
        drop = similarity <= config.threshold
        neighbours, similarity = neighbours.masked_fill(drop, -1), similarity.masked_fill(drop, 0.0)
    dominant = _dominant_blocks(nodes, config, neighbours, found.own)
    timings["provenance"] = stage.lap()
    meta = {"method": method, "num_nodes": n, "num_distinct_states": int(nodes.table.shape[0]),
            "semantic_edges": int((neighbours >= 0).sum()),
            "sequential_edges": sum(max(0, n - d) for d in range(1, config.window + 1)),
            "recall": {"recall_at_k": round(recall, 4), "k": config.k, "sample_nodes": int(sample.numel()),
                       "against": "exact top-k of the sampled nodes over all their candidates"},
            "settled": {"own_state": found.direct, "ranked_lists": found.listed, "rescored_exactly": found.rescored},
            "timings": timings}
    return TextGraph(nodes, config, neighbours, similarity, dominant, meta)


def _recall(found: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean over rows of |found & truth| / |truth| (rows with no true neighbour skipped)."""
    hits, total = 0, 0
    for f, t in zip(found.tolist(), truth.tolist()):
        t = {j for j in t if j >= 0}
        hits += len(t & set(f))
        total += len(t)
    return hits / total if total else 1.0


def _dominant_blocks(nodes: TextNodes, config, neighbours: torch.Tensor, own: torch.Tensor,
                     chunk: int = 1 << 16) -> torch.Tensor:
    """``[N, k]`` uint8: the dominant block of each semantic edge (``sosm.graph.similarity.block_similarity``).

    A pair's dominant block depends only on the two distinct states: nodes whose neighbours are
    their own state's occurrences (``own``) take that state's self-pair block.
    """
    from ..graph.similarity import block_similarity

    rows = torch.arange(nodes.table.shape[0])
    self_dominant = block_similarity(nodes.table, rows, rows, config)[1].to(torch.uint8)
    out = self_dominant[nodes.inverse][:, None].repeat(1, neighbours.shape[1])
    rest = (~own).nonzero().flatten()
    for start in range(0, rest.numel(), chunk):
        node = rest[start:start + chunk]
        nb = neighbours[node].long()
        query = nodes.inverse[node][:, None].expand_as(nb)
        key = nodes.inverse[nb.clamp_min(0)]
        other = (nb >= 0) & (key != query)
        block = out[node]
        block[other] = block_similarity(nodes.table, key[other], query[other], config)[1].to(torch.uint8)
        out[node] = block
    return out


def format_text_summary(graph: TextGraph) -> str:
    """What ``sosm graph`` prints for a whole-text graph."""
    m, c = graph.meta, graph.config
    r = m["recall"]
    lines = [f"text graph: {m['num_nodes']:,} {graph.nodes.kind} nodes, {m['num_distinct_states']:,} distinct states, "
             f"{'causal' if c.causal else 'bidirectional'}, k={c.k}, window={c.window}, similarity={c.similarity}",
             f"semantic top-k: {_method_text(m['method'], m['num_distinct_states'])}",
             f"recall@{r['k']} against exact: {r['recall_at_k']:.4f} on {r['sample_nodes']:,} sampled nodes",
             f"edges: sequential={m['sequential_edges']:,}, semantic={m['semantic_edges']:,}",
             "settled: " + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in m["settled"].items()),
             "time, wall / CPU (all threads): " + ", ".join(f"{k} {v['wall_s']:.1f} / {v['cpu_s']:.1f} s"
                                                          for k, v in m["timings"].items())]
    return "\n".join(lines)


def _method_text(method: str, distinct: int) -> str:
    if method == "hnsw":
        return (f"approximate: hnswlib (M=16, ef_construction=100) ranks the {distinct:,} distinct states, "
                f"exact scores and causal positions")
    return f"exact: all {distinct:,} distinct states ranked exactly, expanded to positions"
