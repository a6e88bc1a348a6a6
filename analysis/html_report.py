"""Standalone HTML page of an inspect report: inline SVG, CSS, JS and PNGs; no URL of any kind.

Sections: summary; the token graph (an arc diagram: tokens on a line, edge j -> i an arc
coloured by edge type, nodes coloured by their dominant MU block; hovering a node or edge shows
its details, clicking a node selects that position; checkboxes filter edge types); the token
attribution of the selected position (tokens shaded by their DePass share) and the full heat
map; block and edge-type attribution; provenance tables; routing (experts per token beside its
dominant MU block, when the model routes); ablations; the PNG plots.

Example:
    >>> page = render_html(report, pngs={})                      # doctest: +SKIP
"""
from __future__ import annotations

import base64
import html
import json

from .plots import EDGE_COLORS

BLOCK_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd"]

_STYLE = """
body{font-family:sans-serif;margin:18px;color:#222;max-width:1500px}h2{margin-top:28px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:2px 7px;font-size:13px;text-align:left}
th{background:#f3f3f3}.num{text-align:right;font-family:monospace}
#graph{border:1px solid #ddd;background:#fff;overflow-x:auto}path.edge{fill:none;stroke-width:1.3;opacity:.4}
path.edge.hl{stroke-width:3.5;opacity:1}path.edge.dim{opacity:.08}circle.node{stroke:#000;stroke-width:.6;cursor:pointer}
circle.node.sel{stroke-width:2.5}#info{font-family:monospace;min-height:1.4em;margin:6px 0;padding:6px;background:#f4f4f4}
.legend span{margin-right:12px;font-size:13px}.sw{display:inline-block;width:12px;height:12px;margin-right:3px;vertical-align:middle}
.tok{font-family:monospace;padding:2px 1px;margin:0 0 2px 0;display:inline-block;min-width:9px;text-align:center;border-radius:2px}
.bar{display:inline-block;height:10px;background:#ff7f0e}table.heat td{width:11px;height:11px;padding:0;border:none}
img{max-width:620px;margin:6px;border:1px solid #eee}
"""

_SCRIPT = """
var D=JSON.parse(document.getElementById('report-data').textContent);
var info=document.getElementById('info');
function col(v){var a=Math.min(1,Math.abs(v));return v>=0?'rgba(214,39,40,'+a+')':'rgba(31,119,180,'+a+')';}
function select(i){
 document.querySelectorAll('circle.node').forEach(function(c){c.classList.toggle('sel',+c.dataset.pos===i);});
 var row=D.token_attribution.matrix[i],m=0;row.forEach(function(v){m=Math.max(m,Math.abs(v));});
 document.querySelectorAll('#attr-text .tok').forEach(function(s,j){s.style.background=col(m?row[j]/m:0);
  s.title=D.tokens[j]+': '+row[j].toFixed(4);});
 var p=D.predictions[i];document.getElementById('attr-pos').textContent=i+' ('+D.tokens[i]+
  ') explaining target '+JSON.stringify(p.target_label)+' p='+p.target_prob.toFixed(3);
}
document.querySelectorAll('circle.node').forEach(function(c){
 var i=+c.dataset.pos;
 c.addEventListener('mouseenter',function(){info.textContent='token '+i+' '+JSON.stringify(D.tokens[i])+
  ' | dominant block '+c.dataset.block+' | in '+c.dataset.in+' out '+c.dataset.out+' | top next: '+c.dataset.top;
  document.querySelectorAll('path.edge').forEach(function(p){var on=(+p.dataset.s===i||+p.dataset.t===i);
   p.classList.toggle('hl',on);p.classList.toggle('dim',!on);});});
 c.addEventListener('mouseleave',function(){document.querySelectorAll('path.edge').forEach(function(p){
  p.classList.remove('hl');p.classList.remove('dim');});});
 c.addEventListener('click',function(){select(i);});});
document.querySelectorAll('path.edge').forEach(function(p){p.addEventListener('mouseenter',function(){
 info.textContent=p.dataset.s+' \\u2192 '+p.dataset.t+' | '+p.dataset.type+' | similarity '+p.dataset.sim+
 ' | dominant block '+p.dataset.block+' | stage '+p.dataset.stage;});});
document.querySelectorAll('input.filter').forEach(function(b){b.addEventListener('change',function(){
 document.querySelectorAll('path.edge-'+b.value).forEach(function(p){p.style.display=b.checked?'':'none';});});});
select(D.tokens.length-1);
"""


def _e(value) -> str:
    return html.escape(str(value))


def _table(header: list, rows: list, cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><tr>{head}</tr>{body}</table>'


def _graph_svg(report: dict) -> str:
    graph, tokens, preds = report["graph"], report["tokens"], report["predictions"]
    T = len(tokens)
    step = max(12.0, min(32.0, 1180.0 / max(T - 1, 1)))  # fits about 1250 px up to ~90 tokens
    span = max([e["t"] - e["s"] for e in graph["edges"]] + [1])
    rise = min(340.0, span * step / 2)  # the tallest arc's height; every arc is scaled by rise / (span * step / 2)
    scale, base = rise / (span * step / 2), rise + 20
    width, height = 40 + step * (T - 1) + 40, base + 60
    xs = [40 + step * t for t in range(T)]
    parts = []
    for e in graph["edges"]:
        x0, x1 = xs[e["s"]], xs[e["t"]]
        d = f"M{x0:.1f},{base:.1f} Q{(x0 + x1) / 2:.1f},{base - (x1 - x0) * scale:.1f} {x1:.1f},{base:.1f}"
        data = " ".join(f'data-{k}="{_e(e[k] if k != "sim" else e["similarity"])}"'
                        for k in ("s", "t", "type", "sim", "block", "stage"))
        parts.append(f'<path class="edge edge-{e["type"]}" stroke="{EDGE_COLORS.get(e["type"], "#000")}" d="{d}" '
                     f'{data}><title>{e["s"]}->{e["t"]} {e["type"]} sim {e["similarity"]}</title></path>')
    landmarks = set(graph["landmarks"])
    from ..common.blocks import BLOCK_NAMES
    for t, node in enumerate(graph["nodes"]):
        color = BLOCK_COLORS[BLOCK_NAMES.index(node["dominant_block"]) % len(BLOCK_COLORS)]
        top = ", ".join(f"{label!r}:{p:.2f}" for label, p in preds[t]["top"])
        radius = 7 if t in landmarks else 5
        parts.append(f'<circle class="node" data-pos="{t}" data-block="{node["dominant_block"]}" '
                     f'data-in="{node["in_degree"]}" data-out="{node["out_degree"]}" data-top="{_e(top)}" '
                     f'cx="{xs[t]:.1f}" cy="{base:.1f}" r="{radius}" fill="{color}"><title>{t}: {_e(tokens[t])}'
                     f'</title></circle><text x="{xs[t]:.1f}" y="{base + 22:.1f}" font-size="12" '
                     f'font-family="monospace" text-anchor="middle">{_e(tokens[t])}</text>')
    return (f'<svg id="token-graph" xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}">'
            f'{"".join(parts)}</svg>')


def _legend(report: dict) -> str:
    present = sorted({e["type"] for e in report["graph"]["edges"]})
    boxes = "".join(f'<span><input type="checkbox" class="filter" value="{t}" checked>'
                    f'<span class="sw" style="background:{EDGE_COLORS.get(t, "#000")}"></span>{t}</span>'
                    for t in present)
    blocks = sorted({n["dominant_block"] for n in report["graph"]["nodes"]})
    from ..common.blocks import BLOCK_NAMES
    swatches = "".join(f'<span><span class="sw" style="border-radius:6px;background:'
                       f'{BLOCK_COLORS[BLOCK_NAMES.index(b)]}"></span>{b}</span>' for b in blocks)
    return (f'<div class="legend">edges: {boxes}</div><div class="legend">node colour = dominant MU block: '
            f'{swatches} (large node = landmark)</div>')


def _heat(matrix: list) -> str:
    rows = []
    for i, row in enumerate(matrix):
        m = max((abs(v) for v in row), default=0) or 1.0
        cells = "".join(f'<td style="background:{_rgba(v / m)}" title="{i}&lt;-{j}: {v:.4f}"></td>'
                        for j, v in enumerate(row))
        rows.append(f"<tr>{cells}</tr>")
    return f'<table class="heat" id="heatmap">{"".join(rows)}</table>'


def _rgba(v: float) -> str:
    a = min(1.0, abs(v))
    return f"rgba(214,39,40,{a:.3f})" if v >= 0 else f"rgba(31,119,180,{a:.3f})"


def _provenance_tables(prov: dict) -> str:
    types = [[_e(name), f'<span class="num">{s["count"]}</span>',
              *(f'<span class="num">{s["similarity"].get(k, float("nan")):.3f}</span>' if s["count"] else "-"
                for k in ("mean", "median", "p10", "p90")),
              _e(", ".join(f"{k}:{v}" for k, v in s["stages"].items()))]
             for name, s in prov["edge_types"].items()]
    blocks = [[_e(b), f'<span class="num">{v["count"]}</span>', f'<span class="num">{v["mean_similarity"]:.3f}</span>']
              for b, v in sorted(prov["dominant_blocks"].items(), key=lambda kv: -kv[1]["count"])]
    hubs = [[h["position"], _e(repr(h["token"])), h["out_degree"], h["in_degree"]] for h in prov["hubs"]]
    mass = prov["attention_mass"]
    mass_names = [k for k in (mass[0] if mass else {}) if k != "layer"]
    mass_rows = [[r["layer"], *(f'<span class="num">{r[k]:.3f}</span>' for k in mass_names)] for r in mass]
    return ("<h3>Edges by type</h3>" + _table(["type", "count", "mean sim", "median", "p10", "p90", "stages"], types)
            + "<h3>Dominant block of non-sequential edges</h3>" + _table(["block", "edges", "mean similarity"], blocks)
            + "<h3>Hub tokens (most attended to)</h3>" + _table(["position", "token", "out-degree", "in-degree"], hubs)
            + "<h3>Attention mass per layer</h3>" + _table(["layer", *mass_names], mass_rows))


def _share_table(names: list, shares: list) -> str:
    rows = [[_e(n), f'<span class="num">{s:.3f}</span>', f'<span class="bar" style="width:{300 * s:.0f}px"></span>']
            for n, s in sorted(zip(names, shares), key=lambda r: -r[1])]
    return _table(["component", "mean share", ""], rows)


def _routing_html(routing: dict) -> str:
    """Per token: its dominant MU block and where each routing layer sent it; per MoE layer: load by block."""
    names = [layer["layer"] for layer in routing["layers"]]

    def cell(route) -> str:
        if isinstance(route, dict):  # Mixture-of-Depths
            return f"through ({route['gate']:.2f})" if route["through"] else "around"
        return ", ".join(f"e{e} ({w:.2f})" for e, w in route) or "— (residual only)"

    rows = [[str(tok["position"]), _e(tok["label"]), _e(tok["dominant_block"] or "")]
            + [_e(cell(tok["routes"][name])) for name in names] for tok in routing["tokens"]]
    parts = ["<h2>Routing</h2><p>Where each token went: the experts of each MoE layer (combine weight) or whether "
             "a Mixture-of-Depths layer took it through its block, beside its dominant MU block.</p>",
             _table(["position", "token", "dominant block"] + [_e(n) for n in names], rows, "routing")]
    for layer in routing["layers"]:
        if layer["kind"] != "moe" or not layer["by_block"]:
            continue
        header = ["dominant block"] + [f"e{e}" for e in range(layer["experts"])]
        body = [[_e(block)] + [f'<span class="num">{c}</span>' for c in counts]
                for block, counts in sorted(layer["by_block"].items())]
        body.append(["<b>load</b>"] + [f'<span class="num">{c}</span>' for c in layer["load"]])
        parts.append(f"<h3>{_e(layer['layer'])} ({_e(layer['routing'])}): tokens per expert by dominant block</h3>"
                     + _table(header, body))
    return "".join(parts)


def render_html(report: dict, pngs: dict, graph_page=None) -> str:
    """The page for ``report`` (from ``build_report``) with ``pngs`` ``{file name: PNG bytes}`` inlined."""
    meta = report["meta"]
    data = json.dumps({k: report[k] for k in ("tokens", "predictions", "token_attribution")}).replace("</", "<\\/")
    summary = _table(["field", "value"], [[_e(k), _e(v)] for k, v in meta.items()]
                     + [["loss (nats/token)", f"{report['loss']:.4f}"]])
    body = [f"<h1>SOSM inspect report</h1>{summary}"]
    if report["graph"] is not None:
        link = f' (full provenance view: <a href="{graph_page}">{graph_page}</a>)' if graph_page else ""
        body.append(f"<h2>Token graph</h2><p>Hover a node to highlight its edges, click it to explain that position"
                    f"{link}.</p>{_legend(report)}<div id=\"info\">hover a node or an edge</div>"
                    f"<div id=\"graph\">{_graph_svg(report)}</div>")
    tokens = "".join(f'<span class="tok">{_e(t)}</span>' for t in report["tokens"])
    body.append(f"<h2>Token attribution</h2><p>Position <b id=\"attr-pos\"></b>: tokens shaded by their DePass share "
                f"of the target logit (red positive, blue negative).</p><div id=\"attr-text\">{tokens}</div>"
                f"<h3>Heat map (row = position explained, column = source token)</h3>{_heat(report['token_attribution']['matrix'])}")
    if report["block_attribution"] is not None:
        b = report["block_attribution"]
        body.append(f"<h2>Block attribution</h2>{_share_table(b['names'], b['mean_shares'])}")
    e = report["edge_type_attribution"]
    body.append(f"<h2>Edge-type attribution</h2>{_share_table(e['names'], e['mean_shares'])}")
    if report["provenance"] is not None:
        body.append(f"<h2>Edge provenance</h2>{_provenance_tables(report['provenance'])}")
    if report.get("routing"):
        body.append(_routing_html(report["routing"]))
    if report["ablations"]:
        rows = [[_e(r["ablation"]), f'<span class="num">{r["loss"]:.4f}</span>',
                 f'<span class="num">{r["delta_loss"]:+.4f}</span>', _e(r["note"])] for r in report["ablations"]]
        body.append(f"<h2>Ablations</h2>{_table(['ablation', 'loss', 'Δ loss', 'note'], rows, 'ablations')}")
    if pngs:
        images = "".join(f'<img alt="{_e(name)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
                         for name, png in pngs.items())
        body.append(f"<h2>Plots</h2>{images}")
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>SOSM inspect report</title>'
            f"<style>{_STYLE}</style></head><body>{''.join(body)}"
            f'<script type="application/json" id="report-data">{data}</script><script>{_SCRIPT}</script></body></html>')
