"""Standalone HTML page of an inspect report: inline SVG, CSS, JS and PNGs; no URL of any kind.

Sections: summary; the token graph (the arc diagram of :func:`sosm.graph.view.render_view`:
token labels, nodes filled with their dominant MU block's palette colour, semantic edges by
dominant block with similarity as opacity and width, a threshold slider, type toggles, zoom and
pan, focus mode; focusing a token also selects it below); the token attribution of the selected
position (tokens shaded by their DePass share) and the full heat map (token labels on both
axes, a colour bar and a caption); block and edge-type attribution; provenance tables (the hub
table normalised by how many later tokens could have linked to each token); routing (experts per
token beside its dominant MU block, when the model routes); ablations; the PNG
plots. Every table is an HTML table; the page never gets wider than the window (wide drawings
scroll inside their frame).

Example:
    >>> page = render_html(report, pngs={})                      # doctest: +SKIP
"""
from __future__ import annotations

import base64
import html
import json

from ..common.blocks import BLOCK_COLORS, BLOCK_NAMES
from ..graph.view import VIEW_SCRIPT, VIEW_STYLE, render_view
from .plots import EDGE_COLORS

#: the hub table leaves out tokens with fewer later tokens than this (too few to rank)
HUB_MIN_LATER = 8
HEAT_CELL = 16            # px per heat-map cell (one token label per row and per column)
HEAT_LABEL_CHARS = 8

_STYLE = """
body{font-family:sans-serif;margin:16px;color:#222;box-sizing:border-box;max-width:100%}h2{margin-top:26px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:2px 7px;font-size:13px;text-align:left}
th{background:#f3f3f3}caption{text-align:left;font-size:13px;color:#444;padding:2px 0;caption-side:top}
.num{text-align:right;font-family:monospace}.wide{max-width:100%;overflow:auto}
.tok{font-family:monospace;padding:2px 1px;margin:0 0 2px 0;display:inline-block;min-width:9px;text-align:center;border-radius:2px}
.bar{display:inline-block;height:10px}.sw{display:inline-block;width:11px;height:11px;margin-right:4px;vertical-align:-1px;border:1px solid #444}
svg.heat text{font:11px monospace;fill:#222}svg.heat text.axis{font:12px sans-serif}svg.heat g.row{cursor:pointer}
svg.heat g.row.sel text{font-weight:bold}figcaption{font-size:13px;color:#444;max-width:60em}
img{max-width:100%;margin:6px;border:1px solid #eee}#attr-text{line-height:1.9}
"""

_SCRIPT = """
var D=JSON.parse(document.getElementById('report-data').textContent);
function col(v){var a=Math.min(1,Math.abs(v));return v>=0?'rgba(214,39,40,'+a+')':'rgba(31,119,180,'+a+')';}
function select(i){
 var row=D.token_attribution.matrix[i],m=0;row.forEach(function(v){m=Math.max(m,Math.abs(v));});
 document.querySelectorAll('#attr-text .tok').forEach(function(s,j){s.style.background=col(m?row[j]/m:0);
  s.title=D.tokens[j]+' @'+j+': '+row[j].toFixed(4);});
 document.querySelectorAll('svg.heat g.row').forEach(function(g){g.classList.toggle('sel',+g.dataset.row===i);});
 var p=D.predictions[i];document.getElementById('attr-pos').textContent=i+' ('+D.tokens[i]+
  ') explaining target '+JSON.stringify(p.target_label)+' p='+p.target_prob.toFixed(3);
}
var graphView=document.getElementById('token-graph');
if(graphView)graphView.addEventListener('tokenfocus',function(ev){if(ev.detail!==null)select(ev.detail);});
document.querySelectorAll('svg.heat g.row').forEach(function(g){g.addEventListener('click',function(){select(+g.dataset.row);});});
select(D.tokens.length-1);
"""


def _e(value) -> str:
    return html.escape(str(value))


def _table(header: list, rows: list, cls: str = "", caption: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    cap = f"<caption>{_e(caption)}</caption>" if caption else ""
    return f'<table class="{cls}">{cap}<tr>{head}</tr>{body}</table>'


def _num(value, digits: int = 3) -> str:
    return f'<span class="num">{value:.{digits}f}</span>' if isinstance(value, float) else f'<span class="num">{value}</span>'


def negative_note(graph: dict) -> str:
    """Why semantic edges with negative similarity are there, and how many (empty when none)."""
    semantic = [e for e in graph["edges"] if e["type"] == "semantic"]
    negative = sum(e["similarity"] < 0 for e in semantic)
    if not negative:
        return ""
    return (f"{negative} of {len(semantic)} semantic edges have negative similarity. They are kept: the model's graph "
            f"takes the k most similar earlier tokens with no similarity threshold (GraphConfig.threshold = None), so "
            f"a token with few similar predecessors still gets k neighbours, and the model attends over exactly "
            f"these edges. The slider starts above them; slide it left to see them.")


def _graph_section(report: dict, graph_page) -> str:
    graph, tokens, preds = report["graph"], report["tokens"], report["predictions"]
    nodes = [{"p": n["position"], "label": tokens[n["position"]]} for n in graph["nodes"]]
    edges = [{"s": e["s"], "t": e["t"], "type": e["type"], "sim": e["similarity"], "block": e["block"],
              "stage": e["stage"]} for e in graph["edges"]]
    landmarks = set(graph["landmarks"])
    titles = [f"dominant block {n['dominant_block']}, in {n['in_degree']}, out {n['out_degree']}"
              f"{', landmark' if n['position'] in landmarks else ''}; next: "
              + ", ".join(f"{label!r} {p:.2f}" for label, p in preds[n["position"]]["top"]) for n in graph["nodes"]]
    view = render_view(nodes, edges, causal=True, note=negative_note(graph),
                       node_blocks=[n["dominant_block"] for n in graph["nodes"]], node_titles=titles,
                       view_id="token-graph")
    link = f' The full provenance view of this graph: <a href="{graph_page}">{graph_page}</a>.' if graph_page else ""
    return (f"<h2>Token graph</h2><p>The model's own graph of this text: node colour = the token's dominant MU block "
            f"(largest block of its semantic state). Click a token to see its edges and to explain its position below."
            f"{link}</p>{view}")


def heat_map(matrix: list, tokens: list) -> str:
    """SVG heat map: rows = positions explained, columns = source tokens, both labelled; colour bar; caption."""
    T = len(matrix)
    c = HEAT_CELL
    labels = [t if len(t) <= HEAT_LABEL_CHARS else t[:HEAT_LABEL_CHARS - 1] + "…" for t in tokens]
    left = 20 + 7 * (len(str(T - 1)) + 1 + max((len(t) for t in labels), default=1)) + 6
    top = 24 + 7 * (max((len(t) for t in labels), default=1) + len(str(T - 1)) + 1) + 6
    values = sorted(abs(v) for row in matrix for v in row)
    vmax = values[min(len(values) - 1, int(0.99 * len(values)))] if values else 1.0
    vmax = vmax or 1.0
    grid_w = c * T
    parts = [f'<text class="axis" x="{left + grid_w / 2:.0f}" y="14" text-anchor="middle">source token j (column)</text>',
             f'<text class="axis" x="14" y="{top + grid_w / 2:.0f}" text-anchor="middle" '
             f'transform="rotate(-90 14 {top + grid_w / 2:.0f})">position i explained (row)</text>']
    for j, label in enumerate(labels):
        x = left + c * j + c / 2 + 4
        parts.append(f'<text class="col-label" x="{x:.1f}" y="{top - 5}" transform="rotate(-90 {x:.1f} {top - 5})">'
                     f'{_e(f"{j} {label}")}</text>')
    for i, row in enumerate(matrix):
        y = top + c * i
        cells = "".join(f'<rect x="{left + c * j}" y="{y}" width="{c}" height="{c}" fill="{_rgba(v / vmax)}">'
                        f'<title>{i} {_e(tokens[i])} &lt;- {j} {_e(tokens[j])}: {v:.4f}</title></rect>'
                        for j, v in enumerate(row) if v != 0)
        parts.append(f'<g class="row" data-row="{i}"><text class="row-label" x="{left - 5}" y="{y + c - 4}" '
                     f'text-anchor="end">{_e(f"{i} {labels[i]}")}</text>{cells}</g>')
    parts.append(f'<rect x="{left}" y="{top}" width="{grid_w}" height="{grid_w}" fill="none" stroke="#999"/>')
    bar_x, bar_h = left + grid_w + 24, min(grid_w, 240)
    stops = "".join(f'<stop offset="{k / 20:.2f}" stop-color="{_rgba(1 - k / 10, solid=True)}"/>' for k in range(21))
    parts.append(f'<defs><linearGradient id="heat-scale" x1="0" y1="0" x2="0" y2="1">{stops}</linearGradient></defs>'
                 f'<g class="colorbar"><rect x="{bar_x}" y="{top}" width="14" height="{bar_h}" fill="url(#heat-scale)" '
                 f'stroke="#999"/>')
    for frac, value in ((0, vmax), (0.5, 0.0), (1, -vmax)):
        y = top + frac * bar_h
        parts.append(f'<line x1="{bar_x + 14}" x2="{bar_x + 18}" y1="{y:.1f}" y2="{y:.1f}" stroke="#444"/>'
                     f'<text class="tick" x="{bar_x + 21}" y="{y + 4:.1f}">{value:+.2f}</text>')
    parts.append(f'<text class="axis" x="{bar_x}" y="{top + bar_h + 20:.0f}">share</text></g>')
    width, height = bar_x + 80, top + grid_w + 10
    return (f'<figure><div class="wide"><svg class="heat" id="heatmap" xmlns="http://www.w3.org/2000/svg" '
            f'width="{width:.0f}" height="{height:.0f}">{"".join(parts)}</svg></div><figcaption>Token attribution: row i '
            f"is the DePass decomposition of the logit of the next text token at position i over the source tokens j "
            f"(signed share c<sub>ij</sub> / &sum;<sub>j</sub> |c<sub>ij</sub>|, bias excluded); red raises the logit, "
            f"blue lowers it; colour saturates at &plusmn;{vmax:.2f} (the 99th percentile of |share|). Causal: only "
            f"j &le; i can be non-zero. Click a row to explain that position above.</figcaption></figure>")


def _rgba(v: float, solid: bool = False) -> str:
    a = min(1.0, abs(v))
    if solid:  # the same colour over white, opaque (for the colour bar's gradient)
        r, g, b = (214, 39, 40) if v >= 0 else (31, 119, 180)
        return f"rgb({255 - a * (255 - r):.0f},{255 - a * (255 - g):.0f},{255 - a * (255 - b):.0f})"
    return f"rgba(214,39,40,{a:.3f})" if v >= 0 else f"rgba(31,119,180,{a:.3f})"


def hub_rows(graph: dict, T: int, top: int = 10) -> list:
    """Tokens most linked to, as a fraction of the later tokens that could have linked to them."""
    scored = []
    for n in graph["nodes"]:
        later = T - 1 - n["position"]
        if later >= HUB_MIN_LATER:
            scored.append((n["out_degree"] / later, n["position"], n["out_degree"], later))
    scored.sort(key=lambda r: (-r[0], r[1]))
    return scored[:top]


def _provenance_tables(prov: dict, graph, tokens: list) -> str:
    negative = {}
    for e in (graph["edges"] if graph else []):
        negative[e["type"]] = negative.get(e["type"], 0) + (e["similarity"] < 0)
    types = [[_e(name), _num(s["count"]),
              *(_num(s["similarity"].get(k, float("nan"))) if s["count"] else "-" for k in ("mean", "median", "p10", "p90")),
              _num(negative.get(name, 0)), _e(", ".join(f"{k}: {v}" for k, v in s["stages"].items()))]
             for name, s in prov["edge_types"].items()]
    blocks = [[f'<span class="sw" style="background:{BLOCK_COLORS[BLOCK_NAMES.index(b)]}"></span>{_e(b)}',
               _num(v["count"]), _num(v["mean_similarity"])]
              for b, v in sorted(prov["dominant_blocks"].items(), key=lambda kv: BLOCK_NAMES.index(kv[0]))]
    mass = prov["attention_mass"]
    mass_names = [k for k in (mass[0] if mass else {}) if k != "layer"]
    mass_rows = [[r["layer"], *(_num(r[k]) for k in mass_names)] for r in mass]
    out = ("<h3>Edges by type</h3>" + _table(["type", "count", "mean sim", "median", "p10", "p90", "sim < 0", "stages"],
                                             types)
           + "<h3>Dominant block of non-sequential edges</h3>"
           + _table(["block", "edges", "mean similarity"], blocks, caption="in block order"))
    if graph:
        T = len(tokens)
        hubs = [[_num(p), _e(repr(tokens[p])), _num(out_deg), _num(later), _num(share)]
                for share, p, out_deg, later in hub_rows(graph, T)]
        out += ("<h3>Hub tokens (most linked to, per later token)</h3>"
                + _table(["position", "token", "out-degree", "later tokens", "out-degree / later tokens"], hubs,
                         caption=f"In a causal graph early tokens collect links just because more tokens follow them; "
                                 f"this ranks tokens by the fraction of later tokens that link to them (tokens with "
                                 f"fewer than {HUB_MIN_LATER} later tokens left out)."))
    return out + "<h3>Attention mass per layer</h3>" + _table(["layer", *mass_names], mass_rows)


def _share_table(names: list, shares: list) -> str:
    def color(name):
        return BLOCK_COLORS[BLOCK_NAMES.index(name)] if name in BLOCK_NAMES else EDGE_COLORS.get(name, "#9e9e9e")

    rows = [[f'<span class="sw" style="background:{color(n)}"></span>{_e(n)}', _num(s),
             f'<span class="bar" style="width:{300 * s:.0f}px;background:{color(n)}"></span>']
            for n, s in sorted(zip(names, shares), key=lambda r: -r[1])]
    return _table(["component", "mean share", ""], rows)


def _meta_rows(meta: dict, loss: float) -> list:
    rows = []
    for key, value in meta.items():
        shown = ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else value
        rows.append([_e(key), _e(shown)])
    return rows + [["loss (nats/token)", _num(loss, 4)]]


def _recall_html(recall: dict, tokens: list) -> str:
    """Per answer position of a recall example: its key and value positions, whether the graph links them, the answer."""
    def flag(value) -> str:
        return "—" if value is None else ("yes" if value else "<b>no</b>")

    def share(value) -> str:
        return "—" if value is None else f"{value:.2f}"

    rows = [[str(q["position"]), _e(str(tokens[q["position"]])), str(q["key_position"]), flag(q["key_linked"]),
             str(q["value_position"]), flag(q["value_linked"]), _e(str(q["predicted"])), _e(str(q["answer"])),
             flag(q["correct"])] for q in recall["queries"]]
    return ("<h2>Recall</h2><p>Each position that must produce an answer: where its key occurred earlier and where "
            "the answer followed it, whether the graph links each of them to the query (graph models), and the "
            f"prediction. Edge recall key {share(recall['edge_recall_key'])}, value "
            f"{share(recall['edge_recall_value'])}; accuracy {share(recall['accuracy'])} on this row.</p>"
            + _table(["query position", "query token", "key position", "key linked", "value position",
                      "value linked", "predicted", "answer", "correct"], rows, "recall"))


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
    """The report page (see the module docstring); ``pngs`` maps file names to PNG bytes (inlined)."""
    data = json.dumps({k: report[k] for k in ("tokens", "predictions", "token_attribution")}).replace("</", "<\\/")
    body = [f"<h1>SOSM inspect report</h1>{_table(['field', 'value'], _meta_rows(report['meta'], report['loss']))}"]
    if report["graph"] is not None:
        body.append(_graph_section(report, graph_page))
    tokens = "".join(f'<span class="tok">{_e(t)}</span>' for t in report["tokens"])
    body.append(f"<h2>Token attribution</h2><p>Position <b id=\"attr-pos\"></b>: tokens shaded by their DePass share "
                f"of the target logit (red positive, blue negative).</p><div id=\"attr-text\">{tokens}</div>"
                f"<h3>Heat map</h3>{heat_map(report['token_attribution']['matrix'], report['tokens'])}")
    if report["block_attribution"] is not None:
        b = report["block_attribution"]
        body.append(f"<h2>Block attribution</h2>{_share_table(b['names'], b['mean_shares'])}")
    e = report["edge_type_attribution"]
    body.append(f"<h2>Edge-type attribution</h2>{_share_table(e['names'], e['mean_shares'])}")
    if report["provenance"] is not None:
        body.append(f"<h2>Edge provenance</h2>{_provenance_tables(report['provenance'], report['graph'], report['tokens'])}")
    if report.get("routing"):
        body.append(_routing_html(report["routing"]))
    if report.get("recall"):
        body.append(_recall_html(report["recall"], report["tokens"]))
    if report["ablations"]:
        rows = [[_e(r["ablation"]), _num(r["loss"], 4), f'<span class="num">{r["delta_loss"]:+.4f}</span>', _e(r["note"])]
                for r in report["ablations"]]
        body.append(f"<h2>Ablations</h2>{_table(['ablation', 'loss', 'Δ loss', 'note'], rows, 'ablations')}")
    if pngs:
        images = "".join(f'<img alt="{_e(name)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
                         for name, png in pngs.items())
        body.append(f"<h2>Plots</h2>{images}")
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">'
            f"<title>SOSM inspect report</title><style>{_STYLE}{VIEW_STYLE}</style></head><body>{''.join(body)}"
            f'<script type="application/json" id="report-data">{data}</script><script>{VIEW_SCRIPT}{_SCRIPT}</script>'
            f"</body></html>")
