"""PNG plots of an inspect report (matplotlib's Agg canvas; pyplot and the global backend are left alone).

Each function takes the report dict built by :func:`sosm.analysis.report.build_report` and
returns PNG bytes: degree distributions, similarity histograms by edge type, attention mass
per layer per edge type, and the block attribution bar chart.

Example:
    >>> png = block_attribution_png({"block_attribution": {"names": ["I", "D"], "mean_shares": [0.7, 0.3]}})
    >>> png[:4] == b"\\x89PNG"
    True
"""
from __future__ import annotations

import io

from ..graph.view import EDGE_COLORS as GRAPH_EDGE_COLORS

#: the graph views' edge-type colours, plus the two kinds of attention mass a report also plots
EDGE_COLORS = {"self": "#555555", **GRAPH_EDGE_COLORS, "dense": "#8c564b"}


def _figure(width: float = 6.0, height: float = 3.2):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def degree_png(report: dict) -> bytes:
    """Bar charts of the in-degree and out-degree distributions."""
    fig = _figure()
    degree = report["provenance"]["degree"]
    for index, (key, title) in enumerate((("in", "in-degree (neighbours per query)"),
                                          ("out", "out-degree (times attended to)"))):
        ax = fig.add_subplot(1, 2, index + 1)
        counts = degree[key]["counts"]
        ax.bar(range(len(counts)), counts, color="#1f77b4")
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("degree", fontsize=8)
        ax.set_ylabel("tokens", fontsize=8)
        ax.tick_params(labelsize=7)
    return _png(fig)


def similarity_png(report: dict) -> bytes:
    """Histograms of the edge similarity by edge type."""
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    for name, stats in report["provenance"]["edge_types"].items():
        sim = stats["similarity"]
        if not sim.get("n"):
            continue
        low, high = sim["hist_range"]
        bins = len(sim["hist"])
        centers = [low + (high - low) * (i + 0.5) / bins for i in range(bins)]
        ax.step(centers, sim["hist"], where="mid", color=EDGE_COLORS.get(name, "#000"), label=f"{name} (n={sim['n']})")
    ax.set_xlabel("similarity", fontsize=8)
    ax.set_ylabel("edges", fontsize=8)
    ax.set_title("edge similarity by type", fontsize=9)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=7)
    return _png(fig)


def attention_mass_png(report: dict) -> bytes:
    """Grouped bars: attention mass on each edge type (and self) per attention layer."""
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    rows = report["provenance"]["attention_mass"]
    if rows:
        names = [k for k in rows[0] if k != "layer" and any(r[k] > 0 for r in rows)]
        width = 0.8 / max(1, len(names))
        for n_index, name in enumerate(names):
            xs = [i + n_index * width for i in range(len(rows))]
            ax.bar(xs, [r[name] for r in rows], width, label=name, color=EDGE_COLORS.get(name, "#000"))
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(rows))], [f"layer {r['layer']}" for r in rows])
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no attention layers", ha="center", va="center")
    ax.set_ylabel("mean attention mass", fontsize=8)
    ax.set_title("attention mass per layer per edge type", fontsize=9)
    ax.tick_params(labelsize=7)
    return _png(fig)


def block_attribution_png(report: dict) -> bytes:
    """Bar chart of the mean block attribution shares."""
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    block = report["block_attribution"]
    ax.bar(block["names"], block["mean_shares"], color="#ff7f0e")
    ax.set_ylabel("mean share of |contribution|", fontsize=8)
    ax.set_title("block attribution (DePass, next-token logits)", fontsize=9)
    ax.tick_params(labelsize=7)
    return _png(fig)


PLOTS = {"degree.png": degree_png, "similarity.png": similarity_png, "attention_mass.png": attention_mass_png,
         "block_attribution.png": block_attribution_png}
