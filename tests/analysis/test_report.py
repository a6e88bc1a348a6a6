"""``sosm inspect`` on a model trained by the trainer, on unseen text; the HTML rendered by headless Chromium."""
import json
import os
import re
import shutil
import subprocess
import tempfile

import pytest

from sosm.cli import main

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
UNSEEN = "The quick brown fox jumps over the lazy dog, said the bank clerk."


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
                  "d_state": 4, "struct_dim": 4, "num_landmarks": 3, "max_seq_len": 24},
    })
    Trainer(config, root / "run").train()
    return root / "run"


def test_inspect_writes_the_report(trained_run, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["inspect", "--checkpoint", str(trained_run), "--text", UNSEEN, "--out", str(out)]) == 0
    assert "inspecting the first 24" in capsys.readouterr().out  # the text is longer than the context: said so
    names = {p.name for p in out.iterdir()}
    assert {"index.html", "report.json", "graph.html", "degree.png", "similarity.png", "attention_mass.png",
            "block_attribution.png"} <= names
    report = json.loads((out / "report.json").read_text())
    assert report["meta"]["seq_len"] == 24 and len(report["token_attribution"]["matrix"]) == 24
    assert abs(sum(report["block_attribution"]["mean_shares"]) - 1) < 1e-5
    assert report["ablations"][0]["delta_loss"] == 0.0
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
def test_report_renders_in_headless_chromium(trained_run, tmp_path):
    out = tmp_path / "report"
    assert main(["inspect", "--checkpoint", str(trained_run), "--text", "the bank of the river", "--out", str(out),
                 "--no-ablations"]) == 0
    dom = _dump_dom(out / "index.html")
    report = json.loads((out / "report.json").read_text())
    svg = re.search(r'<svg id="token-graph".*?</svg>', dom, re.S).group(0)
    assert svg.count('class="node') == len(report["tokens"]) == 21
    assert svg.count('class="edge') == len(report["graph"]["edges"]) > 0
    assert dom.count("<table") >= 6 and "Edges by type" in dom and "Hub tokens" in dom
    # the script ran: the last position is selected and its tokens are shaded
    assert re.search(r'<b id="attr-pos">20 ', dom)
    shaded = re.findall(r"<span class=\"tok\"[^>]*style=\"background: rgba\(", dom)
    assert len(shaded) == 21
