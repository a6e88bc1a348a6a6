"""The report's PNG plots: the block palette in block order, and no two labels overlapping (matplotlib text extents)."""
import pytest

from sosm.analysis.plots import FIGURES, PLOTS
from sosm.common.blocks import BLOCK_COLORS, BLOCK_NAMES


def _report():
    hist = [3, 0, 1, 5, 9, 2] + [0] * 14
    names = list(BLOCK_NAMES) + ["temporal", "bias"]
    shares = [0.02 + 0.01 * (i % 5) for i in range(len(names))]
    return {"block_attribution": {"names": names, "mean_shares": [s / sum(shares) for s in shares]},
            "provenance": {
                "degree": {"in": {"counts": [0, 2, 9, 13]}, "out": {"counts": [4, 8, 6, 3, 2, 1]}},
                "edge_types": {t: {"similarity": {"n": 20, "hist": hist, "hist_range": [-1.0, 1.0]}}
                               for t in ("sequential", "semantic")},
                "attention_mass": [{"layer": i, "self": 0.2, "sequential": 0.3, "semantic": 0.4, "dense": 0.0}
                                   for i in range(4)]}}


def _texts(fig):
    """Every drawn text of ``fig`` with its window extent: drawn tick labels, titles, axis labels, legends."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    texts = {}
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            for tick in axis._update_ticks():  # only the ticks inside the view limits are drawn
                texts[id(tick.label1)] = tick.label1
            texts[id(axis.label)] = axis.label
        for text in ax.findobj(Text):
            if not any(text is t.label1 or text is t.label2 for axis in (ax.xaxis, ax.yaxis)
                       for t in axis.get_major_ticks() + axis.get_minor_ticks()):
                texts[id(text)] = text
    return [(t.get_text(), t.get_window_extent(renderer)) for t in texts.values()
            if t.get_text().strip() and t.get_visible()]


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_no_two_labels_overlap(name):
    texts = _texts(FIGURES[name](_report()))
    assert len(texts) >= 4
    clashes = [(a, b) for i, (a, p) in enumerate(texts) for b, q in texts[i + 1:]
               if p.x0 < q.x1 - 0.5 and q.x0 < p.x1 - 0.5 and p.y0 < q.y1 - 0.5 and q.y0 < p.y1 - 0.5]
    assert clashes == []


def test_block_attribution_uses_the_palette_in_block_order():
    fig = FIGURES["block_attribution.png"](_report())
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[:16] == list(BLOCK_NAMES) and labels[16:] == ["temporal", "bias"]
    from matplotlib.colors import to_hex

    assert [to_hex(bar.get_facecolor()) for bar in ax.patches[:16]] == list(BLOCK_COLORS)
    assert PLOTS["block_attribution.png"](_report())[:4] == b"\x89PNG"


def test_palette_is_distinguishable():
    def lab(color):
        rgb = [int(color[i:i + 2], 16) / 255 for i in (1, 3, 5)]
        lin = [((c + 0.055) / 1.055) ** 2.4 if c > 0.04045 else c / 12.92 for c in rgb]
        x = (0.4124 * lin[0] + 0.3576 * lin[1] + 0.1805 * lin[2]) / 0.95047
        y = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
        z = (0.0193 * lin[0] + 0.1192 * lin[1] + 0.9505 * lin[2]) / 1.08883
        f = [v ** (1 / 3) if v > 0.008856 else 7.787 * v + 16 / 116 for v in (x, y, z)]
        return 116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])

    points = [lab(c) for c in BLOCK_COLORS]
    assert len(set(BLOCK_COLORS)) == len(BLOCK_NAMES) == 16
    closest = min(sum((a - b) ** 2 for a, b in zip(p, q)) ** 0.5 for i, p in enumerate(points) for q in points[i + 1:])
    assert closest >= 25  # CIE76: clearly different hues
