"""Look at a graph: ``summary``/``format_summary`` (what the CLI prints), standalone HTML, PNG.

The HTML file opens offline: inline SVG, CSS and JS, no URL of any kind. Tokens sit on a line,
labelled by their text and spaced so that no two labels overlap; an edge j -> i is an arc
(forward edges above the line, backward ones below). Semantic edges take the colour of their
dominant block (:data:`~sosm.common.blocks.BLOCK_COLORS`, the palette of every view and plot)
and an opacity and width that grow with their similarity; sequential edges are thin grey,
shortcuts dashed, memory edges dotted, successor edges dash-dotted. Controls: a similarity threshold slider (semantic edges
below it are hidden; the default shows about two per token), one checkbox per edge type, zoom
(buttons, ctrl+wheel) and pan (drag, scroll) inside a frame as wide as the window, and focus
mode: click a token to highlight its in- and out-edges, fade the rest and list its provenance
with positions (click it again or press Esc to leave). Padding positions are never drawn; a
sample longer than :data:`VIEW_MAX_NODES` is shown as a window of that many nodes, and the page
says which. The PNG is drawn with matplotlib's Agg canvas (pyplot and the global backend are
left alone) with the same palette.

:func:`render_view` is the HTML fragment (controls, SVG, focus panel) that both this module's
page and the inspect report (``sosm.analysis.html_report``) embed; :data:`VIEW_STYLE` and
:data:`VIEW_SCRIPT` go with it.

Example:
    >>> import torch, tempfile, os
    >>> from sosm.graph.types import SemanticGraph, empty_edge_columns
    >>> from sosm.graph.view import format_summary, to_html
    >>> g = SemanticGraph(edge_index=torch.tensor([[0], [1]]), **empty_edge_columns(1), batch_size=1, seq_len=2)
    >>> print(format_summary(g).splitlines()[0])
    SemanticGraph: B=1, T=2, 2 nodes, 1 edges (causal)
    >>> _ = to_html(g, os.path.join(tempfile.mkdtemp(), "g.html"))
"""
from __future__ import annotations

import html
import io as _io
import math
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from ..common.blocks import BLOCK_COLORS, BLOCK_NAMES
from ..common.files import atomic_write
from .convert import node_label
from .types import EDGE_TYPES, STAGES, SemanticGraph
from .view_assets import VIEW_SCRIPT, VIEW_STYLE

#: a view draws at most this many consecutive nodes of a sample (longer: a window, said on the page)
VIEW_MAX_NODES = 240
#: colour of each edge type where a plot shows types (histograms, attention mass); the views colour
#: semantic edges by dominant block and tell the types apart by line style
EDGE_COLORS = {"sequential": "#9e9e9e", "semantic": "#000075", "shortcut": "#3cb44b", "memory": "#e6194b",
               "successor": "#f58231"}
EDGE_DASH = {"sequential": "", "semantic": "", "shortcut": "6 3", "memory": "2 3", "successor": "8 2 2 2"}
#: semantic edges shown by default: about this many per token (the slider shows the rest)
DEFAULT_EDGES_PER_TOKEN = 2
LABEL_CHARS = 12          # longer labels are cut with an ellipsis (the full text is in the tooltip and panel)
_CHAR_PX, _GAP_PX, _MIN_STEP = 7.3, 8.0, 16.0  # monospace 12 px: advance per character, gap between labels


def block_color(name: str) -> str:
    """The palette colour of block ``name``."""
    return BLOCK_COLORS[BLOCK_NAMES.index(name)]


def _check(graph, sample: int) -> None:
    if not isinstance(graph, SemanticGraph):
        raise TypeError(f"graph must be a SemanticGraph, got {type(graph).__name__}")
    if not isinstance(sample, int) or not 0 <= sample < graph.batch_size:
        raise ValueError(f"sample={sample!r} is invalid; accepted: an int in [0, {graph.batch_size})")


def _stats(values: torch.Tensor) -> dict:
    v = values.float()
    return {"min": int(v.min()), "mean": round(float(v.mean()), 3), "max": int(v.max())} if v.numel() else \
        {"min": 0, "mean": 0.0, "max": 0}


def summary(graph: SemanticGraph, top: int = 10) -> dict:
    """Counts and statistics: nodes, edges by type and stage, degree stats, dominant blocks, top edges.

    ``top_edges`` are the ``top`` edges of highest similarity (ties: edge order) with their
    endpoints (sample, position, label), type, stage and dominant block.
    """
    _check(graph, 0)
    N, T = graph.num_nodes, graph.seq_len
    ei = graph.edge_index
    types = torch.bincount(graph.edge_type, minlength=len(EDGE_TYPES)).tolist() if graph.num_edges else [0] * len(EDGE_TYPES)
    stages = torch.bincount(graph.stage, minlength=len(STAGES)).tolist() if graph.num_edges else [0] * len(STAGES)
    token = ei[0] < N
    real = torch.ones(N, dtype=torch.bool) if graph.padding_mask is None else graph.padding_mask.reshape(-1).cpu()
    in_deg = torch.bincount(ei[1].cpu(), minlength=N)[real]
    out_deg = torch.bincount(ei[0][token].cpu(), minlength=N)[real]
    semantic = graph.edge_type == EDGE_TYPES.index("semantic")
    blocks = torch.bincount(graph.dominant_block[semantic].cpu(), minlength=len(BLOCK_NAMES)).tolist()
    order = torch.argsort(graph.similarity.nan_to_num(-math.inf).cpu(), descending=True, stable=True)[:top].tolist()
    src, dst = ei.tolist()
    top_edges = [{"source": src[e], "target": dst[e], "sample": dst[e] // T,
                  "source_position": src[e] % T if src[e] < N else None, "target_position": dst[e] % T,
                  "source_label": node_label(graph, src[e]), "target_label": node_label(graph, dst[e]),
                  "type": EDGE_TYPES[int(graph.edge_type[e])], "stage": STAGES[int(graph.stage[e])],
                  "similarity": round(float(graph.similarity[e]), 4),
                  "dominant_block": BLOCK_NAMES[int(graph.dominant_block[e])]} for e in order]
    return {"batch_size": graph.batch_size, "seq_len": T, "causal": graph.causal, "num_nodes": N,
            "num_real_nodes": int(real.sum()), "num_edges": graph.num_edges,
            "edges_by_type": dict(zip(EDGE_TYPES, types)),
            "edges_by_stage": {s: c for s, c in zip(STAGES, stages) if c},
            "in_degree": _stats(in_deg), "out_degree": _stats(out_deg),
            "dominant_blocks": {b: c for b, c in zip(BLOCK_NAMES, blocks) if c},
            "landmarks": None if graph.landmarks is None else int(graph.landmarks.shape[1]),
            "top_edges": top_edges}


def format_summary(graph: SemanticGraph, top: int = 10) -> str:
    """:func:`summary` as readable text (what ``sosm graph`` prints)."""
    s = summary(graph, top)
    mode = "causal" if s["causal"] else "bidirectional"
    lines = [f"SemanticGraph: B={s['batch_size']}, T={s['seq_len']}, {s['num_nodes']} nodes, "
             f"{s['num_edges']} edges ({mode})",
             "edges by type: " + ", ".join(f"{k}={v}" for k, v in s["edges_by_type"].items()),
             "edges by stage: " + (", ".join(f"{k}={v}" for k, v in s["edges_by_stage"].items()) or "-"),
             "in-degree (keys per query): min {min}, mean {mean}, max {max}".format(**s["in_degree"]),
             "out-degree: min {min}, mean {mean}, max {max}".format(**s["out_degree"])]
    if s["dominant_blocks"]:
        lines.append("dominant blocks of semantic edges: " + ", ".join(f"{k}={v}" for k, v in s["dominant_blocks"].items()))
    if s["landmarks"] is not None:
        lines.append(f"landmarks: {s['landmarks']}")
    if s["top_edges"]:
        lines.append(f"top {len(s['top_edges'])} edges by similarity:")
        for e in s["top_edges"]:
            lines.append(f"  [{e['sample']}] {_endpoint(e, 'source')} -> {_endpoint(e, 'target')}  {e['type']:<10} "
                         f"sim={e['similarity']:.3f}  block={e['dominant_block']:<2}  stage={e['stage']}")
    return "\n".join(lines)


def _endpoint(edge: dict, side: str) -> str:
    position = edge[f"{side}_position"]
    return f"{edge[f'{side}_label']!r}@{position}" if position is not None else repr(edge[f"{side}_label"])


def view_data(graph: SemanticGraph, sample: int = 0, start: Optional[int] = None,
              max_nodes: int = VIEW_MAX_NODES) -> dict:
    """What a view draws of sample ``sample``: ``{"nodes", "edges", "note", "causal"}``.

    Nodes are the real (non-padding) positions, at most ``max_nodes`` consecutive ones from
    ``start`` (default 0); edges are those with both ends among them (memory edges: target
    among them), each ``{"s", "t", "type", "sim", "block", "stage", "gate"}`` with positions
    (``s`` is ``"mem<m>"`` for memory entry m).
    """
    _check(graph, sample)
    T, N = graph.seq_len, graph.num_nodes
    real = list(range(T)) if graph.padding_mask is None else \
        graph.padding_mask[sample].nonzero().flatten().tolist()
    begin = 0 if start is None else start
    if not isinstance(begin, int) or not 0 <= begin < max(len(real), 1):
        raise ValueError(f"start={start!r} is invalid; accepted: 0..{max(len(real) - 1, 0)} (real positions of the sample)")
    shown = real[begin:begin + max_nodes]
    keep = set(shown)
    ei = graph.edge_index.cpu()
    in_sample = (ei[1] // T == sample).nonzero().flatten().tolist()
    src, dst = ei.tolist()
    edges, outside = [], 0
    for e in in_sample:
        t = dst[e] - sample * T
        s = src[e] - sample * T if src[e] < N else f"mem{src[e] - N}"
        if t not in keep or (isinstance(s, int) and s not in keep):
            outside += t in keep
            continue
        gate = float(graph.gate_score[e])
        edges.append({"s": s, "t": t, "type": EDGE_TYPES[int(graph.edge_type[e])],
                      "stage": STAGES[int(graph.stage[e])], "sim": round(float(graph.similarity[e]), 4),
                      "block": BLOCK_NAMES[int(graph.dominant_block[e])], "gate": None if math.isnan(gate) else round(gate, 4)})
    nodes = [{"p": t, "label": node_label(graph, sample * T + t)} for t in shown]
    note = ""
    if len(real) > len(shown):
        note = (f"Showing positions {shown[0]}..{shown[-1]} ({len(shown)} of {len(real)} tokens of this sample; a view "
                f"draws at most {max_nodes}). {outside} edges from positions outside the window are not drawn.")
    if graph.padding_mask is not None and len(real) < T:
        note += f" {T - len(real)} padding positions are not drawn."
    return {"nodes": nodes, "edges": edges, "note": note.strip(), "causal": graph.causal}


def _layout(labels: Sequence[str]) -> list:
    """x of each node: consecutive horizontal labels (monospace 12 px) never overlap."""
    widths = [min(len(label), LABEL_CHARS) * _CHAR_PX for label in labels]
    xs, x = [], 30.0 + (widths[0] / 2 if widths else 0)
    for i, w in enumerate(widths):
        if i:
            x += max(_MIN_STEP, (widths[i - 1] + w) / 2 + _GAP_PX)
        xs.append(x)
    return xs


def _short(label: str) -> str:
    return label if len(label) <= LABEL_CHARS else label[:LABEL_CHARS - 1] + "…"


def default_threshold(similarities: Sequence[float], num_nodes: int) -> float:
    """The slider's start: the lowest similarity that shows at most ``DEFAULT_EDGES_PER_TOKEN`` semantic edges per token."""
    values = sorted(similarities, reverse=True)
    budget = DEFAULT_EDGES_PER_TOKEN * max(num_nodes, 1)
    if len(values) <= budget:
        return values[-1] if values else 0.0
    return values[budget - 1]


def render_view(nodes: Sequence[dict], edges: Sequence[dict], causal: bool = True, note: str = "",
                node_blocks: Optional[Sequence[str]] = None, node_titles: Optional[Sequence[str]] = None,
                view_id: str = "view") -> str:
    """HTML fragment: controls, the arc diagram (SVG in a window-wide frame) and the focus panel.

    Args:
        nodes: ``[{"p": position, "label": text}]`` in position order.
        edges: ``[{"s", "t", "type", "sim", "block", "stage", "gate"?}]`` between those positions
            (``s`` may be a non-int memory name: drawn as a dotted stub below the target).
        causal: only used in the legend text.
        note: shown above the drawing (a window of a longer sample, hidden padding, ...).
        node_blocks: optional dominant block per node: nodes are filled with its palette colour.
        node_titles: optional extra tooltip text per node.
    """
    e = html.escape
    labels = [str(n["label"]) for n in nodes]
    xs = _layout(labels)
    x_of = {n["p"]: x for n, x in zip(nodes, xs)}
    halves = [(abs(x_of[d["t"]] - x_of[d["s"]]) / 2, d["s"] < d["t"]) for d in edges if isinstance(d["s"], int)]
    half_up = max([h for h, forward in halves if forward] + [1.0])
    half_down = max([h for h, forward in halves if not forward] + [1.0])
    scale_up, scale_down = min(1.0, 320.0 / half_up), min(1.0, 200.0 / half_down)  # arc height = half span x scale
    base = half_up * scale_up + 16
    height = base + 34 + max(half_down * scale_down if any(not f for _, f in halves) else 0.0, 28.0)
    width = (xs[-1] if xs else 0) + 40
    sims = [d["sim"] for d in edges if d["type"] == "semantic"]
    low, high = (min(sims), max(sims)) if sims else (0.0, 1.0)
    threshold = default_threshold(sims, len(nodes))
    parts = []
    for d in edges:
        t_x = x_of[d["t"]]
        if isinstance(d["s"], int):
            s_x = x_of[d["s"]]
            bend = abs(t_x - s_x) / 2 * (scale_up if d["s"] < d["t"] else -scale_down)
            path = f"M{s_x:.1f},{base:.1f} Q{(s_x + t_x) / 2:.1f},{base - 2 * bend:.1f} {t_x:.1f},{base:.1f}"
        else:
            path = f"M{t_x:.1f},{base + 26:.1f} L{t_x:.1f},{base:.1f}"
        source = str(d["s"])
        strength = 0.0 if high <= low else (d["sim"] - low) / (high - low)
        if d["type"] == "semantic":
            color, stroke, opacity = block_color(d["block"]), 0.8 + 2.4 * strength, 0.25 + 0.7 * strength
        else:
            color, stroke, opacity = ("#9e9e9e", 1.0, 0.6) if d["type"] == "sequential" else ("#333333", 1.3, 0.8)
        dash = f' stroke-dasharray="{EDGE_DASH[d["type"]]}"' if EDGE_DASH[d["type"]] else ""
        gate = "-" if d.get("gate") is None else d["gate"]
        parts.append(f'<path class="edge {d["type"]}" d="{path}" stroke="{color}" stroke-width="{stroke:.2f}" '
                     f'stroke-opacity="{opacity:.2f}"{dash} data-s="{e(source)}" data-t="{d["t"]}" '
                     f'data-type="{d["type"]}" data-sim="{d["sim"]}" data-block="{d["block"]}" '
                     f'data-stage="{d["stage"]}" data-gate="{gate}"><title>{e(_edge_text(d, x_of, nodes))}</title></path>')
    for i, (n, x) in enumerate(zip(nodes, xs)):
        fill = block_color(node_blocks[i]) if node_blocks else "#333333"
        title = f"{n['p']}: {n['label']}" + (f" | {node_titles[i]}" if node_titles else "")
        block = f' data-block="{node_blocks[i]}"' if node_blocks else ""
        parts.append(f'<g class="node" data-p="{n["p"]}"{block} data-label="{e(str(n["label"]))}">'
                     f'<title>{e(title)}</title><circle cx="{x:.1f}" cy="{base:.1f}" r="{5 if node_blocks else 3.5}" '
                     f'fill="{fill}"/><text class="label" x="{x:.1f}" y="{base + 20:.1f}" text-anchor="middle" '
                     f'data-w="{min(len(str(n["label"])), LABEL_CHARS) * _CHAR_PX:.1f}">{e(_short(str(n["label"])))}</text></g>')
    toggles = "".join(_toggle(t, sum(d["type"] == t for d in edges)) for t in EDGE_TYPES
                      if any(d["type"] == t for d in edges))
    used = sorted({d["block"] for d in edges if d["type"] == "semantic"} | set(node_blocks or []), key=BLOCK_NAMES.index)
    palette = "".join(f'<span class="chip{"" if b in used else " unused"}"><i style="background:{c}"></i>{b}</span>'
                      for b, c in zip(BLOCK_NAMES, BLOCK_COLORS))
    colour_of = "node fill and semantic edge" if node_blocks else "semantic edge"
    slider = (f'<label>semantic similarity &ge; <input type="range" class="threshold" min="{low:.4f}" max="{high:.4f}" '
              f'step="{max((high - low) / 200, 1e-4):.5f}" value="{threshold:.4f}"> <output class="threshold-value">'
              f'</output></label>' if sims else "")
    mode = "causal: every arc runs from an earlier token (left) to a later one" if causal else \
        "bidirectional: arcs to later tokens above the line, to earlier ones below"
    return (f'<div class="sosm-view" id="{view_id}"><div class="controls">{slider}<span class="toggles">{toggles}</span>'
            f'<span class="zoom"><button type="button" data-zoom="0.8">&minus;</button><button type="button" '
            f'data-zoom="1.25">+</button><button type="button" data-zoom="1">1:1</button></span></div>'
            f'<div class="palette">{colour_of} colour = dominant block: {palette}</div>'
            f'<div class="hint">{mode}; edge opacity and width grow with similarity ({low:.2f}..{high:.2f}); click a '
            f'token to focus on its edges (Esc to leave); drag or scroll to pan, ctrl+wheel or the buttons to zoom.'
            f'</div>{f"<p class=note>{e(note)}</p>" if note else ""}<div class="frame"><svg class="arcs" '
            f'xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" data-base="{base:.1f}" '
            f'data-up="{scale_up:.4f}" data-down="{scale_down:.4f}">{"".join(parts)}</svg></div>'
            f'<div class="focus-panel">No token in focus.</div></div>')


def _toggle(edge_type: str, count: int) -> str:
    """A type checkbox with a sample of the type's line style."""
    color = {"semantic": "#555555", "sequential": "#9e9e9e"}.get(edge_type, "#333333")
    dash = f' stroke-dasharray="{EDGE_DASH[edge_type]}"' if EDGE_DASH[edge_type] else ""
    return (f'<label><input type="checkbox" class="type-toggle" value="{edge_type}" checked><svg width="26" height="8">'
            f'<line x1="1" y1="4" x2="25" y2="4" stroke="{color}" stroke-width="2"{dash}/></svg>{edge_type} ({count})</label>')


def _edge_text(d: dict, x_of: dict, nodes) -> str:
    label = {n["p"]: str(n["label"]) for n in nodes}
    source = f"{label.get(d['s'], d['s'])!r}@{d['s']}" if isinstance(d["s"], int) else str(d["s"])
    return (f"{source} -> {label[d['t']]!r}@{d['t']}: {d['type']}, similarity {d['sim']}, block {d['block']}, "
            f"stage {d['stage']}")


_PAGE_STYLE = """
body{font-family:sans-serif;margin:16px;color:#222;max-width:100%;box-sizing:border-box}h2{margin:6px 0}
table.grid{border-collapse:collapse;margin:6px 16px 10px 0;display:inline-table;vertical-align:top}
table.grid td,table.grid th{border:1px solid #ccc;padding:2px 8px;text-align:left;font-size:13px}
table.grid th{background:#f3f3f3}td.num{text-align:right;font-family:monospace}
"""


def _grid(caption: str, header: Sequence[str], rows: Sequence[Sequence]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if isinstance(c, (int, float)) and not isinstance(c, bool)
                                    else f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="grid"><caption>{html.escape(caption)}</caption><tr>{head}</tr>{body}</table>'


def summary_tables(s: dict) -> str:
    """:func:`summary` as HTML tables (never raw JSON)."""
    overview = [["samples (B)", s["batch_size"]], ["positions per sample (T)", s["seq_len"]],
                ["mode", "causal" if s["causal"] else "bidirectional"], ["real nodes", s["num_real_nodes"]],
                ["edges", s["num_edges"]], ["landmarks", "-" if s["landmarks"] is None else s["landmarks"]]]
    degree = [[name, d["min"], d["mean"], d["max"]] for name, d in (("in-degree (keys per query)", s["in_degree"]),
                                                                    ("out-degree", s["out_degree"]))]
    top = [[e["sample"], e["source_position"] if e["source_position"] is not None else "-", e["source_label"],
            e["target_position"], e["target_label"], e["type"], e["similarity"], e["dominant_block"], e["stage"]]
           for e in s["top_edges"]]
    return (_grid("graph", ["", "value"], overview)
            + _grid("edges by type", ["type", "edges"], list(s["edges_by_type"].items()))
            + _grid("edges by stage", ["stage", "edges"], list(s["edges_by_stage"].items()))
            + _grid("degree", ["", "min", "mean", "max"], degree)
            + _grid("dominant block of semantic edges", ["block", "edges"], list(s["dominant_blocks"].items()))
            + "<br>" + _grid("top edges by similarity", ["sample", "source pos", "source", "target pos", "target", "type",
                                                          "similarity", "block", "stage"], top))


def to_html(graph: SemanticGraph, path: Union[str, Path], sample: int = 0, title: Optional[str] = None,
            start: Optional[int] = None, note: str = "", max_nodes: int = VIEW_MAX_NODES) -> Path:
    """Write a standalone interactive HTML view of sample ``sample``; returns the path (atomic write).

    At most ``max_nodes`` consecutive real positions from ``start`` are drawn (the page says so);
    ``note`` is shown above the drawing.
    """
    data = view_data(graph, sample, start, max_nodes)
    title = title or f"SOSM semantic graph, sample {sample}"
    note = " ".join(part for part in (note, data["note"]) if part)
    view = render_view(data["nodes"], data["edges"], causal=graph.causal, note=note)
    page = (f'<!DOCTYPE html><html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">'
            f"<title>{html.escape(title)}</title><style>{_PAGE_STYLE}{VIEW_STYLE}</style></head><body>"
            f"<h2>{html.escape(title)}</h2>{view}<h3>Summary</h3>{summary_tables(summary(graph))}"
            f"<script>{VIEW_SCRIPT}</script></body></html>")
    return atomic_write(path, page)


def to_png(graph: SemanticGraph, path: Union[str, Path], sample: int = 0, dpi: int = 120, start: Optional[int] = None,
           note: str = "", max_nodes: int = VIEW_MAX_NODES) -> Path:
    """Write a static arc diagram of sample ``sample`` as PNG; returns the path (atomic write).

    Same window, palette and encodings as :func:`to_html` (no slider: every semantic edge drawn).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    data = view_data(graph, sample, start, max_nodes)
    fig = arc_figure(data["nodes"], data["edges"],
                     f"semantic graph, sample {sample} ({'causal' if graph.causal else 'bidirectional'})",
                     " ".join(part for part in (note, data["note"]) if part))
    FigureCanvasAgg(fig)
    buffer = _io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return atomic_write(path, buffer.getvalue())


def arc_figure(nodes: Sequence[dict], edges: Sequence[dict], title: str, note: str = ""):
    """A matplotlib ``Figure`` of the arc diagram: one vertical token label per node, spaced so none overlap."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path as MplPath

    count = max(len(nodes), 1)
    fig = Figure(figsize=(max(6.0, 1.2 + 0.17 * count), 5.2), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    index = {n["p"]: i for i, n in enumerate(nodes)}
    sims = [d["sim"] for d in edges if d["type"] == "semantic"]
    low, high = (min(sims), max(sims)) if sims else (0.0, 1.0)
    top = 1.0
    for d in sorted(edges, key=lambda d: d["sim"]):
        x1 = index[d["t"]]
        x0 = index[d["s"]] if isinstance(d["s"], int) else x1
        if not isinstance(d["s"], int):
            ax.plot([x1, x1], [-0.8, 0], color="#333", lw=1, ls=":")
            continue
        bulge = abs(x1 - x0) / 2 * (1 if x0 < x1 else -0.5)
        top = max(top, bulge)
        arc = MplPath([(x0, 0), ((x0 + x1) / 2, 2 * bulge), (x1, 0)], [MplPath.MOVETO, MplPath.CURVE3, MplPath.CURVE3])
        strength = 0.0 if high <= low else (d["sim"] - low) / (high - low)
        if d["type"] == "semantic":
            style = dict(edgecolor=block_color(d["block"]), lw=0.6 + 1.8 * strength, alpha=0.3 + 0.65 * strength)
        else:
            style = dict(edgecolor="#9e9e9e" if d["type"] == "sequential" else "#333", lw=0.8, alpha=0.7,
                         linestyle="-" if d["type"] == "sequential" else "--")
        ax.add_patch(PathPatch(arc, fill=False, **style))
    ax.scatter(range(len(nodes)), [0] * len(nodes), s=10, color="#333", zorder=3)
    ax.set_xticks(range(len(nodes)), [_short(str(n["label"])) for n in nodes], rotation=90, fontsize=7,
                  fontfamily="monospace")
    ax.set_yticks([])
    ax.set_xlim(-1, count)
    ax.set_ylim(-0.3 * top - 0.5, top * 1.05 + 0.5)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    used = sorted({d["block"] for d in edges if d["type"] == "semantic"}, key=BLOCK_NAMES.index)
    handles = [Line2D([0], [0], color=block_color(b), lw=2, label=f"block {b}") for b in used]
    handles += [Line2D([0], [0], color="#9e9e9e", lw=1, label="sequential")] if any(
        d["type"] == "sequential" for d in edges) else []
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="upper left", ncols=min(len(handles), 9), frameon=False,
                  title="semantic edge colour = dominant block; width and opacity = similarity", title_fontsize=7)
    ax.set_title(title + (f"\n{note}" if note else ""), fontsize=9)
    return fig
