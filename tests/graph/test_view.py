"""HTML/PNG views and the summary: content present, no external URLs, windows and padding, label layout."""
import re

import pytest
import torch

from sosm.common.blocks import BLOCK_COLORS, BLOCK_NAMES
from sosm.graph.view import (VIEW_MAX_NODES, arc_figure, default_threshold, format_summary, summary, to_html, to_png,
                             view_data)

from ._graphs import sample_graph


def test_summary_counts_and_top_edges():
    g = sample_graph(causal=True, with_memory=True)
    s = summary(g, top=3)
    assert s["num_nodes"] == 12 and s["num_edges"] == g.num_edges
    assert s["edges_by_type"] == {"sequential": 10, "semantic": 6, "shortcut": 2, "memory": 1, "successor": 0}
    assert s["in_degree"]["max"] == 3 and len(s["top_edges"]) == 3
    assert s["top_edges"][0]["similarity"] >= s["top_edges"][1]["similarity"] >= s["top_edges"][2]["similarity"]
    assert all(e["target_position"] is not None for e in s["top_edges"])
    text = format_summary(g)
    assert "sequential=10" in text and "top 10 edges by similarity" in text and "block=" in text
    assert re.search(r"'\w+'@\d -> '\w+'@\d", text)  # positions tell repeated tokens apart


def test_html_offline_and_complete(tmp_path):
    g = sample_graph(causal=False, with_memory=True)
    path = to_html(g, tmp_path / "g.html", sample=0, title="demo <graph>")
    page = path.read_text()
    assert page.count('<path class="edge ') == int((g.edge_index[1] < 6).sum())
    assert page.count('<g class="node"') == 6 and "c&amp;d" not in page and ">cat</text>" in page
    assert "demo &lt;graph&gt;" in page and 'data-block=' in page and 'data-stage="temporal_gate"' in page
    assert 'class="type-toggle"' in page and 'class="threshold"' in page and "focus-panel" in page
    assert "<table" in page and "{&quot;" not in page and '{"' not in page.split("<script>")[0]  # tables, not JSON
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', page)
    page1 = to_html(g, tmp_path / "g1.html", sample=1).read_text()
    assert "c&amp;d" in page1 and "&lt;b&gt;" in page1
    with pytest.raises(ValueError, match="sample"):
        to_html(g, tmp_path / "x.html", sample=2)


def test_semantic_edges_coloured_by_block_and_weighted_by_similarity(tmp_path):
    g = sample_graph(causal=True)
    page = to_html(g, tmp_path / "g.html").read_text()
    for match in re.finditer(r'<path class="edge semantic"[^>]*stroke="(#\w+)" stroke-width="([\d.]+)" '
                             r'stroke-opacity="([\d.]+)"[^>]*data-sim="([-\d.]+)" data-block="(\w+)"', page):
        color, width, opacity, sim, block = match.groups()
        assert color == BLOCK_COLORS[BLOCK_NAMES.index(block)]
    rows = [(float(m.group(2)), float(m.group(1))) for m in re.finditer(
        r'<path class="edge semantic"[^>]*stroke-width="([\d.]+)"[^>]*data-sim="([-\d.]+)"', page)]
    rows.sort()
    assert len(rows) == 3 and rows[0][1] < rows[-1][1]  # wider with similarity


def test_padding_is_not_drawn_and_long_samples_are_windowed(tmp_path):
    g = sample_graph(causal=True)
    g.padding_mask = torch.tensor([[True] * 4 + [False] * 2, [True] * 6])
    data = view_data(g, 0)
    assert [n["p"] for n in data["nodes"]] == [0, 1, 2, 3] and "2 padding positions" in data["note"]
    assert all(e["s"] in range(4) and e["t"] in range(4) for e in data["edges"])
    window = view_data(sample_graph(causal=True), 0, start=2, max_nodes=3)
    assert [n["p"] for n in window["nodes"]] == [2, 3, 4] and "Showing positions 2..4" in window["note"]
    page = to_html(g, tmp_path / "g.html").read_text()
    assert page.count('<g class="node"') == 4 and "padding positions are not drawn" in page
    with pytest.raises(ValueError, match="start"):
        view_data(g, 0, start=9)
    assert VIEW_MAX_NODES >= 200


def test_default_threshold_shows_about_two_edges_per_token():
    sims = [i / 100 for i in range(100)]
    assert default_threshold(sims, 10) == 0.80  # the 20 best
    assert default_threshold(sims[:5], 10) == 0.0
    assert default_threshold([], 3) == 0.0


def _overlaps(boxes):
    return [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:]
            if a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1]


def test_png_labels_never_overlap(tmp_path):
    words = ["function", "returns", "a", "value", "extraordinarily_long_identifier", "x", "!", "caller"] * 30
    nodes = [{"p": i, "label": w} for i, w in enumerate(words[:VIEW_MAX_NODES])]
    edges = [{"s": i - 3, "t": i, "type": "semantic", "sim": (i % 7) / 7, "block": BLOCK_NAMES[i % 16],
              "stage": "topk"} for i in range(3, len(nodes))]
    fig = arc_figure(nodes, edges, "t")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    labels = [t.get_window_extent(renderer) for t in fig.axes[0].get_xticklabels() if t.get_text()]
    assert len(labels) == len(nodes)
    assert not _overlaps(labels)
    path = to_png(sample_graph(causal=True, with_memory=True), tmp_path / "g.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000
