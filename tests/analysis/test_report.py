"""``sosm inspect`` on a model trained by the trainer, on unseen text; the HTML rendered by headless Chromium."""
import json
import os
import re
import shutil
import subprocess
import tempfile

import pytest

from sosm.cli import main

from ..browser import SIZES, probe

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
UNSEEN = "The quick brown fox jumps over the lazy dog, said the bank clerk."


pytestmark = pytest.mark.slow  # the fixture trains a run and builds a whole report (~5 s)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny hybrid trained for 3 steps by the trainer on a small text file."""
    from sosm.train import TrainConfig, Trainer

    root = tmp_path_factory.mktemp("inspect")
    corpus = root / "corpus.txt"
    corpus.write_text("To be, or not to be, that is the question.\n" * 40, encoding="utf-8")
    config = TrainConfig.from_dict({
        "name": "inspect_test", "seed": 0, "batch_size": 2, "max_steps": 3, "eval_interval": 3, "eval_iters": 1,
        "log_interval": 1, "checkpoint_interval": 3, "device": "cpu", "dtype": "float32", "progress_bar": False,
        "tensorboard": False,
        "data": {"dataset": "text_file", "path": str(corpus), "tokenizer": "byte", "block_size": 24},
        "model": {"model": "hybrid", "layer_pattern": "AM", "n_layers": 2, "d_model": 16, "n_heads": 2,
                  "d_state": 4, "struct_dim": 4, "graph": {"num_landmarks": 3}, "max_seq_len": 24},
    })
    Trainer(config, root / "run").train()
    return root / "run"


@pytest.fixture(scope="module")
def report_dir(trained_run, tmp_path_factory):
    """``sosm inspect`` run once on unseen text longer than the model's context."""
    out = tmp_path_factory.mktemp("report") / "report"
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["inspect", "--checkpoint", str(trained_run), "--text", UNSEEN, "--out", str(out)])
    assert code == 0
    assert "inspecting the first 24" in printed.getvalue()  # the text is longer than the context: said so
    return out


def test_inspect_writes_the_report(report_dir):
    out = report_dir
    names = {p.name for p in out.iterdir()}
    assert {"index.html", "report.json", "graph.html", "degree.png", "similarity.png", "attention_mass.png",
            "block_attribution.png"} <= names
    report = json.loads((out / "report.json").read_text())
    assert report["meta"]["seq_len"] == 24 and len(report["token_attribution"]["matrix"]) == 24
    assert report["tokens"][:3] == ["T", "h", "e"] and report["tokens"][3] == "\u2423"
    assert abs(sum(report["block_attribution"]["mean_shares"]) - 1) < 1e-5
    kinds = [row["kind"] for row in report["ablations"]]
    assert report["ablations"][0]["delta_loss"] == 0.0 and kinds.count("block") == 16 and kinds.count("layer") == 2
    for png in ("degree.png", "block_attribution.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    page = (out / "index.html").read_text()
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "") and "https://" not in page


def test_inspect_bad_input_is_exit_2(trained_run, tmp_path, capsys):
    assert main(["inspect", "--checkpoint", str(trained_run), "--text", "  ", "--out", str(tmp_path)]) == 2
    assert "empty" in capsys.readouterr().err
    assert main(["inspect", "--checkpoint", str(trained_run), "--text", "abc", "--max-tokens", "99",
                 "--out", str(tmp_path)]) == 2
    assert "--max-tokens" in capsys.readouterr().err


def _dump_dom(path) -> str:
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                               "--no-first-run", "--disable-background-networking", "--disable-component-update",
                               "--disable-sync", f"--user-data-dir={profile}", "--virtual-time-budget=3000",
                               "--dump-dom", f"file://{path}"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(report_dir):
    dom = _dump_dom(report_dir / "index.html")
    report = json.loads((report_dir / "report.json").read_text())
    T = len(report["tokens"])
    view = re.search(r'<div class="sosm-view" id="token-graph".*?<svg class="arcs".*?</svg>', dom, re.S).group(0)
    assert view.count('<g class="node') == T == 24
    assert view.count('<path class="edge') == len(report["graph"]["edges"]) > 0
    assert dom.count("<table") >= 7 and "Edges by type" in dom and "Hub tokens" in dom and "later tokens" in dom
    assert "#t" not in view and ">T</text>" in view  # token labels, not position names
    # the script ran: the last position is selected and every token of the text view is shaded
    assert re.search(rf'<b id="attr-pos">{T - 1} ', dom)
    assert len(re.findall(r"<span class=\"tok\"[^>]*style=\"background: rgba?\(", dom)) == T


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (apt-get install -y chromium)")
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_report_pages_fit_and_read_in_the_browser(report_dir, size):
    report = json.loads((report_dir / "report.json").read_text())
    T = len(report["tokens"])
    found = probe(report_dir / "index.html", *size)
    assert found["overflow"] <= 0, f"index.html is {found['overflow']} px wider than the window"
    heat = found["heat"]
    assert heat["rows"] == heat["cols"] == T and heat["colorbar"] and len(heat["ticks"]) == 3
    assert heat["axes"][:2] == ["source token j (column)", "position i explained (row)"]
    assert "DePass" in heat["caption"] and heat["overlaps"] == [], heat["overlaps"][:5]
    view = found["views"][0]
    assert view["labels"] == view["nodes"] == T and view["labelOverlaps"] == []
    assert view["focused"] and view["inEdges"] + view["outEdges"] > 0 and view["fadedOpacity"] < 0.1
    assert view["attrPos"].startswith(f"{view['focusPosition']} (")  # focusing a token explains its position
    full = probe(report_dir / "graph.html", *size)
    assert full["overflow"] <= 0 and full["views"][0]["labelOverlaps"] == []
    assert full["views"][0]["nodes"] == T  # the padding positions of the model's frame are not drawn


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (apt-get install -y chromium)")
def test_short_text_graph_page_has_labels_and_no_padding(trained_run, tmp_path):
    out = tmp_path / "short"
    assert main(["inspect", "--checkpoint", str(trained_run), "--text", "To be or not", "--no-ablations",
                 "--out", str(out)]) == 0
    page = (out / "graph.html").read_text()
    assert page.count('<g class="node"') == 12 and ">T</text>" in page and ">t0</text>" not in page
    assert "padding positions are not drawn" in page
    found = probe(out / "graph.html", *SIZES[0])
    assert found["overflow"] <= 0 and found["views"][0]["labels"] == 12 and found["views"][0]["labelOverlaps"] == []


def test_whole_text_graph_from_checkpoint_states(trained_run, tmp_path):
    """`sosm graph --states CHECKPOINT` on the whole-text path: the model's states, close to the window path."""
    from sosm.cli.text_graph_files import load_arrays
    from sosm.cli.pipeline import checkpoint_states
    from sosm.graph import GraphBuilder, GraphConfig

    text = "To be, or not to be, that is the question. Whether tis nobler in the mind to suffer. " * 4
    for nodes in ("token", "word"):
        out = tmp_path / f"{nodes}.npz"
        assert main(["graph", "--states", str(trained_run), "--text", text, "--nodes", nodes, "--topk", "exact",
                     "--k", "4", "--quiet", "--out", str(out)]) == 0
        arrays = load_arrays(out)
        states = checkpoint_states(str(trained_run), text, progress=False)
        states = states.word_level() if nodes == "word" else states
        assert len(arrays["neighbours"]) == len(states.ids)
        graph = GraphBuilder(GraphConfig(k=4)).build(states.states[None]).edges_of_type("semantic")
        got = arrays["neighbours"]
        src, dst = graph.edge_index.tolist()
        found = sum(s in set(got[d].tolist()) for s, d in zip(src, dst))
        assert found / len(src) >= 0.95, (nodes, found / len(src))  # float rounding of the states may reorder ties
