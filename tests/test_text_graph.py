"""The whole-text path of ``sosm graph``: same words as word_spans, exact == GraphBuilder, hnsw recall, causal, files, memory."""
import json
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from sosm.cli import main
from sosm.cli.large_graph import _byte_offsets, token_words
from sosm.cli.text_graph_files import load_arrays
from sosm.tokenizers import BPETokenizer, ByteTokenizer, word_spans

TEXT = ("A function returns a value to its caller. A method is a function defined inside a class, and calling "
        "the method on an instance passes that instance as the first argument. When the function raises an "
        "exception, the handler of the try statement catches the exception. Naïve café — “quoted” words! ")


def _random_text(seed, length=400):
    rng = random.Random(seed)
    pieces = ["the", "list", "don't", "x1", "é", "—", "  ", "\n", ",", ".", "tuple", "’s", "日本", "\t", "a"]
    return "".join(rng.choice(pieces) + rng.choice(["", " "]) for _ in range(length // 3))


@pytest.mark.parametrize("seed", range(4))
def test_token_words_match_word_spans(seed):
    text = _random_text(seed) if seed else TEXT
    for tokenizer in (ByteTokenizer(), BPETokenizer.train(TEXT * 4, vocab_size=300)):
        ids, offsets = tokenizer.encode_with_offsets(text)
        starts, ends = np.asarray(offsets, dtype=np.int64).T
        spans, owner = token_words(text, starts, ends)
        expected = word_spans(text, tokenizer)
        assert spans.tolist() == [list(s) for s in expected.spans]
        assert owner.tolist() == expected.token_word
    byte_ids, byte_starts, byte_ends = _byte_offsets(text)
    ids, offsets = ByteTokenizer().encode_with_offsets(text)
    assert byte_ids.tolist() == ids and list(zip(byte_starts.tolist(), byte_ends.tolist())) == offsets


def _run(tmp_path, *extra, text=TEXT * 12):
    source = tmp_path / "book.txt"
    source.write_text(text, encoding="utf-8")
    return main(["graph", "--text-file", str(source), "--quiet", *extra])


def test_exact_whole_text_graph_equals_graph_builder(tmp_path, capsys):
    from sosm.graph import GraphBuilder, GraphConfig
    from sosm.text_states import default_state_model

    assert _run(tmp_path, "--topk", "exact", "--k", "5", "--out", str(tmp_path / "g.npz")) == 0
    printed = capsys.readouterr().out
    assert "semantic top-k: exact" in printed and "recall@5 against exact: 1.0000" in printed
    arrays = load_arrays(tmp_path / "g.npz")
    states = default_state_model().encode(TEXT * 12, ByteTokenizer())
    graph = GraphBuilder(GraphConfig(k=5)).build(states.states[None])
    semantic = graph.edges_of_type("semantic")
    want = torch.full((len(states.ids), 5), -1, dtype=torch.long)
    src, dst = semantic.edge_index
    for d in dst.unique().tolist():  # builder edges are ordered by (target, source); top-k order is by score
        want[d, :int((dst == d).sum())] = src[dst == d]
    got = torch.from_numpy(arrays["neighbours"]).long()
    assert torch.equal(got.sort(1).values, want.sort(1).values)
    assert arrays["meta"]["method"] == "exact" and arrays["text"] == TEXT * 12
    assert arrays["token_ids"].tolist() == list((TEXT * 12).encode("utf-8"))


def test_hnsw_whole_text_graph(tmp_path, capsys):
    out = tmp_path / "g.npz"
    code = _run(tmp_path, "--topk", "hnsw", "--nodes", "word", "--out", str(out), "--html", str(tmp_path / "g.html"),
                "--png", str(tmp_path / "g.png"))
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    arrays = load_arrays(out)
    meta = arrays["meta"]
    assert meta["method"] == "hnsw" and "hnswlib" in printed and meta["recall"]["recall_at_k"] >= 0.95
    neighbours = arrays["neighbours"].astype(np.int64)
    node = np.arange(len(neighbours))[:, None]
    assert ((neighbours < 0) | (neighbours < node - 1)).all()  # causal: earlier positions only, window excluded
    assert (neighbours[20:] >= 0).all()
    labels = [meta_text[a:b] for meta_text in [arrays["text"]] for a, b in arrays["spans"][:4].tolist()]
    assert labels == ["A", "function", "returns", "a"]
    page = (tmp_path / "g.html").read_text()
    import re

    window = re.search(r"nodes (\d+)\.\.(\d+) of (\d+)", page)  # the view says which window of the text it shows
    assert window and int(window.group(3)) == len(neighbours) and int(window.group(2)) - int(window.group(1)) == 239
    assert page.count('<g class="node"') <= 240 and "semantic edges from earlier nodes are not drawn" in page


def test_jsonl_output(tmp_path):
    out = tmp_path / "g.jsonl"
    assert _run(tmp_path, "--topk", "hnsw", "--nodes", "word", "--k", "3", "--out", str(out)) == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    meta = json.loads(lines[0])
    assert meta["format"] == "sosm.text_graph_arrays" and len(lines) == meta["num_nodes"] + 1
    row = json.loads(lines[30])
    assert row["node"] == 29 and len(row["neighbours"]) == 3 and all(j < 28 for j in row["neighbours"])
    assert set(row["block"]) <= set(meta["block_names"])


def test_whole_text_path_refuses_what_it_cannot_do(tmp_path, capsys):
    assert _run(tmp_path, "--topk", "hnsw", "--out", str(tmp_path / "g.json")) == 2
    assert ".npz" in capsys.readouterr().err
    assert _run(tmp_path, "--topk", "exact", "--mutual", "--out", str(tmp_path / "g.npz")) == 2
    err = capsys.readouterr().err
    assert "mutual" in err and "--topk window" in err
    assert _run(tmp_path, "--nodes", "byte", "--tokenizer", "bpe", "--out", str(tmp_path / "g.json")) == 2


@pytest.mark.slow
def test_a_book_in_bounded_memory(tmp_path):
    """Tiny Shakespeare (1.1 MB) at byte level in a fresh process: recall >= 0.95, peak memory bounded."""
    from sosm.data import load_tinyshakespeare

    try:
        text = load_tinyshakespeare(download=False)
    except (RuntimeError, ValueError):
        pytest.skip("Tiny Shakespeare is not available offline (set SOSM_DATA_DIR)")
    book = tmp_path / "book.txt"
    book.write_text(text, encoding="utf-8")
    args = ["graph", "--text-file", str(book), "--nodes", "byte", "--quiet", "--out", str(tmp_path / "g.npz")]
    script = ("import resource, sys\nfrom sosm.cli import main\ncode = main(sys.argv[1:])\n"
              "print('PEAK_KB', [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])\n"
              "sys.exit(code)")
    # VmHWM: this program's own high-water mark. Not ru_maxrss, which a child inherits from the process that
    # forked it (the pytest process, itself ~1.1 GB late in the suite) across exec.
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    peak_mb = int(done.stdout.split("PEAK_KB")[1].split()[0]) / 1024
    meta = load_arrays(tmp_path / "g.npz")["meta"]
    assert meta["num_nodes"] == len(text.encode("utf-8")) and meta["method"] == "hnsw"
    assert meta["recall"]["recall_at_k"] >= 0.95
    assert peak_mb <= 1000, f"peak RSS {peak_mb:.0f} MB for 1.1M nodes"


def test_bidirectional_whole_text_graph_equals_graph_builder(tmp_path):
    from sosm.graph import GraphBuilder, GraphConfig
    from sosm.text_states import default_state_model

    text = TEXT * 3
    assert _run(tmp_path, "--topk", "hnsw", "--bidirectional", "--window", "2", "--k", "4",
                "--out", str(tmp_path / "g.npz"), text=text) == 0
    arrays = load_arrays(tmp_path / "g.npz")
    got = torch.from_numpy(arrays["neighbours"]).long()
    node = torch.arange(len(got))[:, None]
    assert bool(((got < 0) | ((got - node).abs() > 2)).all()) and bool((got > node).any())
    states = default_state_model().encode(text, ByteTokenizer())
    graph = GraphBuilder(GraphConfig(k=4, window=2, causal=False)).build(states.states[None]).edges_of_type("semantic")
    src, dst = graph.edge_index
    found = sum(int(s) in set(got[int(d)].tolist()) for s, d in zip(src, dst))
    assert found / len(src) >= 0.95 and arrays["meta"]["recall"]["recall_at_k"] >= 0.95


@pytest.mark.parametrize("tokenizer", ["byte", "bpe"])
def test_word_nodes_are_word_level_nodes(tokenizer, tmp_path):
    """The whole-text path's word nodes are TextStates.word_level()'s nodes, with the same states."""
    import argparse

    from sosm.cli.large_graph import text_nodes
    from sosm.cli.pipeline import make_tokenizer
    from sosm.data import default_corpus
    from sosm.text_states import default_state_model

    text = _random_text(3) + TEXT
    args = argparse.Namespace(states="corpus", corpus="default", tokenizer=tokenizer, bpe_vocab=300, nodes="word")
    nodes = text_nodes(args, text)
    expected = default_state_model().encode(text, make_tokenizer(tokenizer, default_corpus(), 300)).word_level()
    assert nodes.labels(0, nodes.num_nodes) == expected.labels
    assert torch.allclose(nodes.table[nodes.inverse], expected.states, atol=1e-6)
