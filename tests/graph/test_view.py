"""HTML/PNG views and the summary: content present, no external URLs, files written."""
import re

import pytest

from sosm.graph.view import format_summary, summary, to_html, to_png

from ._graphs import sample_graph


def test_summary_counts_and_top_edges():
    g = sample_graph(causal=True, with_memory=True)
    s = summary(g, top=3)
    assert s["num_nodes"] == 12 and s["num_edges"] == g.num_edges
    assert s["edges_by_type"] == {"sequential": 10, "semantic": 6, "shortcut": 2, "memory": 1, "successor": 0}
    assert s["in_degree"]["max"] == 3 and len(s["top_edges"]) == 3
    assert s["top_edges"][0]["similarity"] >= s["top_edges"][1]["similarity"] >= s["top_edges"][2]["similarity"]
    text = format_summary(g)
    assert "sequential=10" in text and "top 10 edges by similarity" in text and "block=" in text


def test_html_offline_and_complete(tmp_path):
    g = sample_graph(causal=False, with_memory=True)
    path = to_html(g, tmp_path / "g.html", sample=0, title="demo <graph>")
    page = path.read_text()
    assert page.count('class="edge edge-') == int((g.edge_index[1] < 6).sum())
    assert page.count("<circle") == 6 and "c&amp;d" not in page and "cat" in page
    assert "demo &lt;graph&gt;" in page and 'data-block=' in page and 'data-stage="temporal_gate"' in page
    assert 'class="filter"' in page and "<table>" in page
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', page)
    page1 = to_html(g, tmp_path / "g1.html", sample=1).read_text()
    assert "c&amp;d" in page1 and "&lt;b&gt;" in page1
    with pytest.raises(ValueError, match="sample"):
        to_html(g, tmp_path / "x.html", sample=2)


def test_png_written(tmp_path):
    path = to_png(sample_graph(causal=True, with_memory=True), tmp_path / "g.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000
