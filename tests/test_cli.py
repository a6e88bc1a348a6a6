"""The ``sosm`` command line, run in-process through ``sosm.cli.main``."""
import json

import pytest

from sosm.cli import build_parser, main


def _needs_graph_stack():
    """GraphBuilder, graph/io.py and graph/view.py are written in the graph room."""
    import sosm.graph

    if not hasattr(sosm.graph, "GraphBuilder"):
        pytest.skip("sosm.graph.GraphBuilder has not landed yet")
    pytest.importorskip("sosm.graph.io")
    pytest.importorskip("sosm.graph.view")


def test_help_lists_subcommands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    commands = build_parser()._subparsers._group_actions[0].choices
    assert {"demo", "graph"} <= set(commands)
    for name in commands:
        assert name in out
    assert main([]) == 2


def test_empty_text_is_exit_2(capsys, tmp_path):
    assert main(["graph", "--text", "   ", "--out", str(tmp_path / "g.json")]) == 2
    assert "empty" in capsys.readouterr().err
    assert not (tmp_path / "g.json").exists()


def test_invalid_utf8_is_exit_2(capsys, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"valid start \xc3\x28 then junk")
    assert main(["graph", "--text-file", str(bad), "--out", str(tmp_path / "g.json")]) == 2
    err = capsys.readouterr().err
    assert "bad.txt" in err and "byte offset 12" in err


def test_unknown_config_key_is_exit_2(capsys, tmp_path):
    config = tmp_path / "g.yaml"
    config.write_text("k: 4\nneighbours: 3\n")
    assert main(["graph", "--text", "a b c", "--config", str(config), "--out", str(tmp_path / "g.json")]) == 2
    err = capsys.readouterr().err
    assert "neighbours" in err and "valid keys" in err


def test_missing_text_file_is_exit_2(capsys, tmp_path):
    assert main(["graph", "--text-file", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "g.json")]) == 2
    assert "nope.txt" in capsys.readouterr().err


def test_graph_writes_nodes_and_edges(capsys, tmp_path):
    _needs_graph_stack()
    out = tmp_path / "g.json"
    text = "A function returns a value. A method returns a value to the caller."
    code = main(["graph", "--text", text, "--k", "2", "--nodes", "word", "--out", str(out),
                 "--graphml", str(tmp_path / "g.graphml")])
    assert code == 0, capsys.readouterr().err
    data = json.loads(out.read_text())
    assert len(data["nodes"]) == 15 and data["edges"]
    assert all("type" in edge for edge in data["edges"])
    assert (tmp_path / "g.graphml").is_file()
    assert str(out) in capsys.readouterr().out


def test_graph_byte_tokens_bidirectional(capsys, tmp_path):
    _needs_graph_stack()
    out = tmp_path / "g.json"
    code = main(["graph", "--text", "the list and the tuple", "--bidirectional", "--k", "2", "--quiet",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert len(json.loads(out.read_text())["nodes"]) == len("the list and the tuple")


def test_a_short_text_gets_the_most_neighbours_it_allows_with_a_warning(capsys, tmp_path):
    """Issue 12 item 28: 8 byte nodes cannot hold k=8 (T >= k + 3); the graph is built with k=5 and says so."""
    _needs_graph_stack()
    out = tmp_path / "g.json"
    assert main(["graph", "--text", "the list", "--quiet", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: the text has 8 token nodes and k=8 needs at least 11") and "with k=5" in err
    edges = json.loads(out.read_text())["edges"]
    semantic_in = {}
    for edge in edges:
        if edge["type"] == "semantic":
            semantic_in[edge["target"]] = semantic_in.get(edge["target"], 0) + 1
    assert max(semantic_in.values()) == 5
    assert main(["graph", "--text", "ab", "--out", str(tmp_path / "g2.json")]) == 2
    assert "a graph needs at least 4" in capsys.readouterr().err


@pytest.mark.parametrize("k", ["1", "33"])
def test_any_k_works_without_adaptive_k(capsys, tmp_path, k):
    """Issue 12 item 20: k_min / k_max only bound the adaptive range; --k 1 and --k 33 build."""
    _needs_graph_stack()
    text = "A function returns a value to its caller, and a method is a function defined in a class."
    assert main(["graph", "--text", text, "--k", k, "--quiet", "--out", str(tmp_path / "g.json")]) == 0, \
        capsys.readouterr().err


def test_demo_end_to_end(capsys, tmp_path):
    _needs_graph_stack()
    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("graph.json", "graph.html", "graph.png"):
        assert (tmp_path / name).stat().st_size > 0
        assert str(tmp_path / name) in out
    data = json.loads((tmp_path / "graph.json").read_text())
    assert data["nodes"] and data["edges"]


def test_unknown_states_source_is_exit_2(capsys, tmp_path):
    code = main(["graph", "--text", "a list and a tuple", "--states", str(tmp_path / "nothing"),
                 "--out", str(tmp_path / "g.json")])
    assert code == 2
    assert "--states" in capsys.readouterr().err


def test_graph_with_saved_state_model_and_bpe(capsys, tmp_path):
    _needs_graph_stack()
    from sosm.data import default_corpus
    from sosm.text_states import StateModel

    StateModel.fit(default_corpus()[:20_000]).save(tmp_path / "sm")
    out = tmp_path / "g.json"
    code = main(["graph", "--text", "A class defines a method; an instance calls the method.", "--k", "2",
                 "--states", str(tmp_path / "sm"), "--tokenizer", "bpe", "--bpe-vocab", "300", "--quiet",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert json.loads(out.read_text())["edges"]
