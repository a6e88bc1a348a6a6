"""PNG plots of an inspect report (matplotlib's Agg canvas; pyplot and the global backend are left alone).

Each ``*_figure`` function takes the report dict built by :func:`sosm.analysis.report.build_report`
and returns a matplotlib ``Figure`` (degree distributions, similarity histograms by edge type,
attention mass per layer per edge type, the block attribution bars); each ``*_png`` renders its
figure. Blocks take the palette of every view (:data:`sosm.common.blocks.BLOCK_COLORS`), edge
types :data:`EDGE_COLORS`. Labels are laid out so that none overlap (``tests/analysis/test_plots.py``
checks every text extent).

Example:
    >>> png = block_attribution_png({"block_attribution": {"names": ["I", "D"], "mean_shares": [0.7, 0.3]}})
    >>> png[:4] == b"\\x89PNG"
    True
"""
from __future__ import annotations

import io

from ..common.blocks import BLOCK_COLORS, BLOCK_NAMES
from ..graph.view import EDGE_COLORS as GRAPH_EDGE_COLORS

#: the graph views' edge-type colours, plus the two kinds of attention mass a report also plots
EDGE_COLORS = {"self": "#555555", **GRAPH_EDGE_COLORS, "dense": "#8c564b"}


def _figure(width: float = 6.0, height: float = 3.2):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def degree_figure(report: dict):
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
    return fig


def similarity_figure(report: dict):
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
    return fig


def attention_mass_figure(report: dict):
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
    return fig


def block_attribution_figure(report: dict):
    """Horizontal bars of the mean block attribution shares, one labelled row per component in block order."""
    block = report["block_attribution"]
    names, shares = block["names"], block["mean_shares"]
    fig = _figure(6.0, 1.2 + 0.2 * len(names))
    ax = fig.add_subplot(1, 1, 1)
    colors = [BLOCK_COLORS[BLOCK_NAMES.index(n)] if n in BLOCK_NAMES else "#9e9e9e" for n in names]
    rows = list(range(len(names)))
    ax.barh(rows, shares, color=colors, edgecolor="#444", linewidth=0.4)
    ax.set_yticks(rows, names)
    ax.invert_yaxis()
    ax.set_xlabel("mean share of |contribution| to the next-token logit", fontsize=8)
    ax.set_title("block attribution (DePass)", fontsize=9)
    ax.tick_params(labelsize=7)
    return fig


FIGURES = {"degree.png": degree_figure, "similarity.png": similarity_figure,
           "attention_mass.png": attention_mass_figure, "block_attribution.png": block_attribution_figure}


def _as_png(make_figure):
    def render(report: dict) -> bytes:
        return _png(make_figure(report))

    render.__name__ = make_figure.__name__.replace("_figure", "_png")
    render.__doc__ = f"PNG bytes of :func:`{make_figure.__name__}`."
    return render


degree_png = _as_png(degree_figure)
similarity_png = _as_png(similarity_figure)
attention_mass_png = _as_png(attention_mass_figure)
block_attribution_png = _as_png(block_attribution_figure)

PLOTS = {"degree.png": degree_png, "similarity.png": similarity_png, "attention_mass.png": attention_mass_png,
         "block_attribution.png": block_attribution_png}
