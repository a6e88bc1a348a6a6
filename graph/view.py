"""Look at a graph: ``summary``/``format_summary`` (what the CLI prints), standalone HTML, PNG.

The HTML file opens offline: inline SVG, inline CSS and a few lines of inline JS, no URL
of any kind. Tokens sit on a line; an edge j -> i is an arc (forward edges above the line,
backward edges below), coloured by type; hovering shows its provenance, clicking pins it
in the side panel; the legend's checkboxes filter edge types. The PNG is drawn with
matplotlib's Agg canvas (pyplot and the global backend are left alone).

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
import json
import math
from pathlib import Path
from typing import Optional, Union

import torch

from ..common.blocks import BLOCK_NAMES
from ..common.files import atomic_write
from .convert import node_label
from .types import EDGE_TYPE_ID, EDGE_TYPES, STAGES, SemanticGraph

EDGE_COLORS = {"sequential": "#9a9a9a", "semantic": "#1f77b4", "shortcut": "#2ca02c", "memory": "#d62728",
               "successor": "#ff7f0e"}


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
    endpoints, type, stage and dominant block.
    """
    _check(graph, 0)
    N = graph.num_nodes
    ei = graph.edge_index
    types = torch.bincount(graph.edge_type, minlength=len(EDGE_TYPES)).tolist() if graph.num_edges else [0] * len(EDGE_TYPES)
    stages = torch.bincount(graph.stage, minlength=len(STAGES)).tolist() if graph.num_edges else [0] * len(STAGES)
    token = ei[0] < N
    real = torch.ones(N, dtype=torch.bool) if graph.padding_mask is None else graph.padding_mask.reshape(-1).cpu()
    in_deg = torch.bincount(ei[1].cpu(), minlength=N)[real]
    out_deg = torch.bincount(ei[0][token].cpu(), minlength=N)[real]
    semantic = graph.edge_type == EDGE_TYPE_ID["semantic"]
    blocks = torch.bincount(graph.dominant_block[semantic].cpu(), minlength=len(BLOCK_NAMES)).tolist()
    order = torch.argsort(graph.similarity.nan_to_num(-math.inf).cpu(), descending=True, stable=True)[:top].tolist()
    src, dst = ei.tolist()
    top_edges = [{"source": src[e], "target": dst[e], "sample": dst[e] // graph.seq_len,
                  "source_label": node_label(graph, src[e]), "target_label": node_label(graph, dst[e]),
                  "type": EDGE_TYPES[int(graph.edge_type[e])], "stage": STAGES[int(graph.stage[e])],
                  "similarity": round(float(graph.similarity[e]), 4),
                  "dominant_block": BLOCK_NAMES[int(graph.dominant_block[e])]} for e in order]
    return {"batch_size": graph.batch_size, "seq_len": graph.seq_len, "causal": graph.causal, "num_nodes": N,
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
            lines.append(f"  [{e['sample']}] {e['source_label']!r} -> {e['target_label']!r}  {e['type']:<10} "
                         f"sim={e['similarity']:.3f}  block={e['dominant_block']:<2}  stage={e['stage']}")
    return "\n".join(lines)


def _sample_edges(graph: SemanticGraph, sample: int) -> list[dict]:
    T, N = graph.seq_len, graph.num_nodes
    ei = graph.edge_index.cpu()
    keep = (ei[1] // T == sample).nonzero().flatten().tolist()
    src, dst = ei.tolist()
    out = []
    for e in keep:
        gate = float(graph.gate_score[e])
        out.append({"s": src[e] - sample * T if src[e] < N else -1 - (src[e] - N), "t": dst[e] - sample * T,
                    "type": EDGE_TYPES[int(graph.edge_type[e])], "stage": STAGES[int(graph.stage[e])],
                    "sim": round(float(graph.similarity[e]), 4), "w": round(float(graph.edge_weight[e]), 4),
                    "block": BLOCK_NAMES[int(graph.dominant_block[e])],
                    "gate": None if math.isnan(gate) else round(gate, 4)})
    return out


_SCRIPT = """
var info=document.getElementById('info');
function show(p){var d=p.dataset;info.textContent=d.src+' \\u2192 '+d.dst+' | type '+d.type+' | stage '+d.stage+
 ' | similarity '+d.sim+' | weight '+d.w+' | dominant block '+d.block+' | gate '+d.gate;}
document.querySelectorAll('path.edge').forEach(function(p){
 p.addEventListener('mouseenter',function(){show(p);});
 p.addEventListener('click',function(){document.querySelectorAll('path.pinned').forEach(function(q){q.classList.remove('pinned');});
  p.classList.add('pinned');show(p);});});
document.querySelectorAll('input.filter').forEach(function(box){box.addEventListener('change',function(){
 document.querySelectorAll('path.edge-'+box.value).forEach(function(p){p.style.display=box.checked?'':'none';});});});
"""

_STYLE = """
body{font-family:sans-serif;margin:16px;color:#222}svg{border:1px solid #ddd;background:#fff}
path.edge{fill:none;stroke-width:1.4;opacity:.65}path.edge:hover,path.pinned{stroke-width:3.5;opacity:1}
#info{font-family:monospace;min-height:1.4em;margin:8px 0;padding:6px;background:#f4f4f4}
table{border-collapse:collapse;margin-top:12px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
.legend label{margin-right:14px}.swatch{display:inline-block;width:14px;height:4px;margin-right:4px;vertical-align:middle}
"""


def to_html(graph: SemanticGraph, path: Union[str, Path], sample: int = 0, title: Optional[str] = None) -> Path:
    """Write a standalone interactive HTML view of sample ``sample``; returns the path (atomic write)."""
    _check(graph, sample)
    T = graph.seq_len
    step = max(6.0, min(40.0, 1600.0 / max(T, 1)))
    width, base = 2 * 30 + step * max(T - 1, 0), 0.0
    edges = _sample_edges(graph, sample)
    span = max([abs(e["t"] - e["s"]) for e in edges if e["s"] >= 0] + [1])
    height_up = min(400.0, span * step / 2 + 20)
    base = height_up + 10
    height = base + 90 + min(200.0, span * step / 4)
    x = [30 + step * t for t in range(T)]
    parts = []
    for e in edges:
        if e["s"] < 0:  # memory source: a short stub from the right margin
            x0, x1 = width - 10, x[e["t"]]
            d = f"M{x0:.1f},{base + 60:.1f} Q{(x0 + x1) / 2:.1f},{base + 80:.1f} {x1:.1f},{base:.1f}"
            src_label = f"mem{-1 - e['s']}"
        else:
            x0, x1 = x[e["s"]], x[e["t"]]
            bulge = abs(x1 - x0) / 2 * (1 if e["s"] < e["t"] else -0.5)
            d = f"M{x0:.1f},{base:.1f} Q{(x0 + x1) / 2:.1f},{base - bulge:.1f} {x1:.1f},{base:.1f}"
            src_label = node_label(graph, e["s"] + sample * T)
        tgt_label = node_label(graph, e["t"] + sample * T)
        attrs = {"src": f"{src_label} ({e['s']})", "dst": f"{tgt_label} ({e['t']})", "type": e["type"],
                 "stage": e["stage"], "sim": e["sim"], "w": e["w"], "block": e["block"],
                 "gate": "-" if e["gate"] is None else e["gate"]}
        data = " ".join(f'data-{k}="{html.escape(str(v))}"' for k, v in attrs.items())
        tip = html.escape(f"{attrs['src']} -> {attrs['dst']}: {e['type']}, {e['stage']}, sim {e['sim']}, "
                          f"block {e['block']}")
        parts.append(f'<path class="edge edge-{e["type"]}" stroke="{EDGE_COLORS[e["type"]]}" d="{d}" {data}>'
                     f'<title>{tip}</title></path>')
    real = None if graph.padding_mask is None else graph.padding_mask[sample].tolist()
    for t in range(T):
        label = html.escape(node_label(graph, sample * T + t))
        fill = "#bbb" if real is not None and not real[t] else "#333"
        parts.append(f'<circle cx="{x[t]:.1f}" cy="{base:.1f}" r="3" fill="{fill}"><title>{t}: {label}</title>'
                     f'</circle><text class="node" x="{x[t]:.1f}" y="{base + 14:.1f}" font-size="11" '
                     f'transform="rotate(60 {x[t]:.1f} {base + 14:.1f})">{label}</text>')
    legend = "".join(f'<label><input type="checkbox" class="filter" value="{name}" checked>'
                     f'<span class="swatch" style="background:{color}"></span>{name}</label>'
                     for name, color in EDGE_COLORS.items())
    s = summary(graph)
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(json.dumps(v))}</td></tr>" for k, v in s.items()
                   if k != "top_edges")
    top = "".join(f"<tr><td>{e['sample']}</td><td>{html.escape(e['source_label'])}</td>"
                  f"<td>{html.escape(e['target_label'])}</td><td>{e['type']}</td><td>{e['similarity']}</td>"
                  f"<td>{e['dominant_block']}</td><td>{e['stage']}</td></tr>" for e in s["top_edges"])
    title = html.escape(title or f"SOSM semantic graph, sample {sample}")
    page = (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{title}</title><style>{_STYLE}</style>"
            f"</head><body><h2>{title}</h2><div class=\"legend\">{legend}</div><div id=\"info\">hover or click an "
            f"edge</div><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0f}\" height=\"{height:.0f}\">"
            f"{''.join(parts)}</svg><h3>Summary</h3><table>{rows}</table><h3>Top edges by similarity</h3>"
            f"<table><tr><th>sample</th><th>source</th><th>target</th><th>type</th><th>similarity</th>"
            f"<th>dominant block</th><th>stage</th></tr>{top}</table><script>{_SCRIPT}</script></body></html>")
    return atomic_write(path, page)


def to_png(graph: SemanticGraph, path: Union[str, Path], sample: int = 0, dpi: int = 120) -> Path:
    """Write a static arc diagram of sample ``sample`` as PNG; returns the path (atomic write)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path as MplPath

    _check(graph, sample)
    T = graph.seq_len
    fig = Figure(figsize=(min(24, 4 + T * 0.25), 5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for e in _sample_edges(graph, sample):
        x0 = T + 1 if e["s"] < 0 else e["s"]
        x1 = e["t"]
        bulge = abs(x1 - x0) / 2 * (1 if x0 < x1 else -0.5)
        arc = MplPath([(x0, 0), ((x0 + x1) / 2, bulge), (x1, 0)], [MplPath.MOVETO, MplPath.CURVE3, MplPath.CURVE3])
        ax.add_patch(PathPatch(arc, fill=False, edgecolor=EDGE_COLORS[e["type"]], lw=0.9, alpha=0.7))
    ax.scatter(range(T), [0] * T, s=8, color="#333", zorder=3)
    if T <= 80:
        ax.set_xticks(range(T), [node_label(graph, sample * T + t) for t in range(T)], rotation=70, fontsize=7)
    ax.set_yticks([])
    ax.set_xlim(-1, T + 2)
    ax.autoscale_view(scalex=False)
    ax.legend(handles=[Line2D([0], [0], color=c, label=n) for n, c in EDGE_COLORS.items()], fontsize=7,
              loc="upper left")
    ax.set_title(f"semantic graph, sample {sample} ({'causal' if graph.causal else 'bidirectional'})", fontsize=9)
    fig.tight_layout()
    buffer = _io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return atomic_write(path, buffer.getvalue())
