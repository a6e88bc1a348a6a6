"""The graph view in headless Chromium at 1,400 x 1,000 and 1,920 x 1,080: fits the window, labels apart, slider and focus work."""
import pytest

from sosm.graph import GraphBuilder, GraphConfig
from sosm.graph.view import VIEW_MAX_NODES, to_html

from ..browser import CHROMIUM, SIZES, probe

pytestmark = [pytest.mark.slow, pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed")]


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """A word graph of a passage (k = 8: the hairball case) and a long byte graph (drawn as a window)."""
    from sosm.cli.demo import SAMPLE_PASSAGE
    from sosm.text_states import default_state_model
    from sosm.tokenizers import ByteTokenizer

    root = tmp_path_factory.mktemp("views")
    model = default_state_model()
    words = model.encode(SAMPLE_PASSAGE, ByteTokenizer()).word_level()
    word_graph = GraphBuilder(GraphConfig(k=8)).build(words.states[None], padding_mask=None)
    word_graph.tokens = [words.labels]
    text = (SAMPLE_PASSAGE + " ") * 2
    tokens = model.encode(text, ByteTokenizer())
    byte_graph = GraphBuilder(GraphConfig(k=4)).build(tokens.states[None])
    byte_graph.tokens = [tokens.labels]
    assert byte_graph.seq_len > VIEW_MAX_NODES
    return {"word": to_html(word_graph, root / "word.html"), "byte": to_html(byte_graph, root / "byte.html")}


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("kind", ["word", "byte"])
def test_graph_view_in_the_browser(pages, kind, size):
    found = probe(pages[kind], *size)
    assert found["innerWidth"] == size[0]
    assert found["overflow"] <= 0, f"the page is {found['overflow']} px wider than the window"
    view = found["views"][0]
    assert view["nodes"] == (VIEW_MAX_NODES if kind == "byte" else view["nodes"]) and view["labels"] == view["nodes"]
    assert view["labelOverlaps"] == [], view["labelOverlaps"][:5]
    assert "t0" not in view["labelTexts"] and view["labelTexts"][0] in ("A", "function")
    assert view["semanticAtMax"] <= view["semanticShown"] <= view["semanticAtMin"]
    assert view["semanticAtMax"] < view["semanticAtMin"]  # the slider changes what is drawn
    # the default threshold keeps about two per token (edges tied at the top similarity all stay)
    assert view["semanticShown"] <= max(2 * view["nodes"], view["semanticAtMax"])
    assert view["focused"] and view["inEdges"] + view["outEdges"] == view["focusEdges"] > 0 and view["unfocused"]
    assert view["fadedOpacity"] < 0.1 < 0.99 <= view["focusOpacity"]
    assert f"at position {view['focusPosition']}" in view["panel"] and "in-edges" in view["panel"]
    # zoom out: the drawing narrows, crowded labels are hidden rather than overlapped; 1:1 restores it
    assert view["zoomedWidth"] < view["width"] == view["restoredWidth"]
    assert view["zoomedOverlaps"] == [] and 0 < view["zoomedLabels"] <= view["labels"]
