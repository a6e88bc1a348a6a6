"""The CSS and JS of :func:`sosm.graph.view.render_view` (inline in every page: no URL of any kind).

``VIEW_SCRIPT`` wires each ``.sosm-view`` on the page: the similarity slider and type toggles
(``filter``), zoom and pan (``place`` re-positions nodes and arcs from their 1:1 x and hides a
label that would overlap the previous one), and focus mode (``setFocus``: classes ``in``/``out``
on the focused token's edges, ``focused`` on the drawing, the provenance tables in the panel, a
``tokenfocus`` event for the page; ``view.sosmFocus(position)`` focuses from outside).
"""

VIEW_STYLE = """
.sosm-view{max-width:100%}.sosm-view .controls{display:flex;flex-wrap:wrap;gap:6px 18px;align-items:center;margin:6px 0}
.sosm-view .controls label{white-space:nowrap;font-size:13px}.sosm-view .toggles label{margin-right:10px}
.sosm-view .toggles svg{vertical-align:middle;margin:0 3px}.sosm-view .zoom button{margin-left:3px;min-width:28px}
.sosm-view .palette{font-size:12px;margin:4px 0}.sosm-view .chip{display:inline-block;margin:0 7px 2px 0;white-space:nowrap}
.sosm-view .chip i{display:inline-block;width:11px;height:11px;margin-right:3px;vertical-align:-1px;border:1px solid #444}
.sosm-view .chip.unused{opacity:.35}.sosm-view .hint{font-size:12px;color:#555}.sosm-view .note{font-size:13px;color:#8a4b00}
.sosm-view .frame{max-width:100%;overflow:auto;border:1px solid #ddd;background:#fff;cursor:grab}
.sosm-view .frame.dragging{cursor:grabbing}.sosm-view svg.arcs{display:block}
.sosm-view path.edge{fill:none}.sosm-view path.edge.off{display:none}
.sosm-view svg.focused path.edge{stroke-opacity:.06}.sosm-view svg.focused path.edge.in,
.sosm-view svg.focused path.edge.out{stroke-opacity:1;stroke-width:3px;display:inline}
.sosm-view svg.focused g.node{opacity:.3}.sosm-view svg.focused g.node.near{opacity:1}
.sosm-view g.node{cursor:pointer}.sosm-view g.node circle{stroke:#222;stroke-width:.7}
.sosm-view g.node.focus circle{stroke-width:3}.sosm-view g.node.focus text{font-weight:bold}
.sosm-view text.label{font:12px monospace;fill:#222}.sosm-view text.label.crowded{display:none}
.sosm-view .focus-panel{font-size:13px;margin:8px 0;padding:6px 8px;background:#f6f6f6;min-height:1.5em}
.sosm-view .focus-panel table{border-collapse:collapse;margin:4px 12px 4px 0;display:inline-table;vertical-align:top}
.sosm-view .focus-panel td,.sosm-view .focus-panel th{border:1px solid #ccc;padding:1px 6px;font-size:12px;text-align:left}
"""

VIEW_SCRIPT = r"""
(function(){
document.querySelectorAll('.sosm-view').forEach(function(view){
 var svg=view.querySelector('svg.arcs'),frame=view.querySelector('.frame'),panel=view.querySelector('.focus-panel');
 var base=+svg.dataset.base,up=+svg.dataset.up,down=+svg.dataset.down,zoom=1,focus=null;
 var nodes=[].slice.call(svg.querySelectorAll('g.node')),edges=[].slice.call(svg.querySelectorAll('path.edge'));
 var x0={};nodes.forEach(function(g){x0[g.dataset.p]=+g.querySelector('circle').getAttribute('cx');});
 var width0=+svg.getAttribute('width'),slider=view.querySelector('input.threshold'),out=view.querySelector('.threshold-value');
 var label={};nodes.forEach(function(g){label[g.dataset.p]=g.dataset.label;});
 function arc(p){var t=x0[p.dataset.t]*zoom,s=p.dataset.s;
  if(!(s in x0))return 'M'+t+','+(base+26)+' L'+t+','+base;
  var sx=x0[s]*zoom,h=Math.abs(x0[p.dataset.t]-x0[s])/2,b=(+s<+p.dataset.t)?h*up:-h*down;
  return 'M'+sx+','+base+' Q'+(sx+t)/2+','+(base-2*b)+' '+t+','+base;}
 function place(){svg.setAttribute('width',Math.max(width0*zoom,200));var last=-1e9;
  nodes.forEach(function(g){var x=x0[g.dataset.p]*zoom,c=g.querySelector('circle'),t=g.querySelector('text');
   c.setAttribute('cx',x);t.setAttribute('x',x);var w=+t.dataset.w;
   var crowd=(x-w/2<last+4)&&!g.classList.contains('focus');t.classList.toggle('crowded',crowd);if(!crowd)last=x+w/2;});
  edges.forEach(function(p){p.setAttribute('d',arc(p));});}
 function filter(){var thr=slider?+slider.value:-2,shown=0,total=0,on={};
  view.querySelectorAll('input.type-toggle').forEach(function(b){on[b.value]=b.checked;});
  edges.forEach(function(p){var hide=!on[p.dataset.type];
   if(p.dataset.type==='semantic'){total++;hide=hide||(+p.dataset.sim<thr&&!p.classList.contains('in')&&!p.classList.contains('out'));if(!hide)shown++;}
   p.classList.toggle('off',hide);});
  if(out)out.textContent=(+slider.value).toFixed(2)+' ('+shown+' of '+total+' semantic edges)';}
 function row(p,end){var q=p.dataset[end];return '<tr><td>'+(q in label?q:'')+'</td><td>'+esc(q in label?label[q]:q)+'</td><td>'+
  p.dataset.type+'</td><td>'+p.dataset.sim+'</td><td>'+p.dataset.block+'</td><td>'+p.dataset.stage+'</td></tr>';}
 function esc(s){return String(s).replace(/&/g,'&amp;').replace(/</g,'&lt;');}
 function setFocus(p){focus=(focus===p)?null:p;svg.classList.toggle('focused',focus!==null);
  var ins=[],outs=[],near={};
  edges.forEach(function(e){var i=focus!==null&&e.dataset.t===focus,o=focus!==null&&e.dataset.s===focus;
   e.classList.toggle('in',i);e.classList.toggle('out',o);if(i){ins.push(e);near[e.dataset.s]=1;}if(o){outs.push(e);near[e.dataset.t]=1;}});
  nodes.forEach(function(g){g.classList.toggle('focus',g.dataset.p===focus);g.classList.toggle('near',g.dataset.p===focus||!!near[g.dataset.p]);});
  var head='<tr><th>position</th><th>token</th><th>type</th><th>similarity</th><th>block</th><th>stage</th></tr>';
  panel.innerHTML=focus===null?'No token in focus.':'<b>'+esc(label[focus])+'</b> at position '+focus+': '+ins.length+
   ' in-edges (the earlier tokens it links to), '+outs.length+' out-edges (tokens that link to it).<br><table><caption>in-edges (source)</caption>'+
   head+ins.map(function(e){return row(e,'s');}).join('')+'</table><table><caption>out-edges (target)</caption>'+head+
   outs.map(function(e){return row(e,'t');}).join('')+'</table>';
  filter();place();
  if(focus!==null){var x=x0[focus]*zoom;if(x<frame.scrollLeft||x>frame.scrollLeft+frame.clientWidth)frame.scrollLeft=x-frame.clientWidth/2;}
  view.dispatchEvent(new CustomEvent('tokenfocus',{detail:focus===null?null:+focus}));}
 nodes.forEach(function(g){g.addEventListener('click',function(ev){ev.stopPropagation();setFocus(g.dataset.p);});});
 document.addEventListener('keydown',function(ev){if(ev.key==='Escape'&&focus!==null)setFocus(focus);});
 if(slider)slider.addEventListener('input',filter);
 view.querySelectorAll('input.type-toggle').forEach(function(b){b.addEventListener('change',filter);});
 view.querySelectorAll('button[data-zoom]').forEach(function(b){b.addEventListener('click',function(){
  var f=+b.dataset.zoom;zoom=f===1?1:Math.min(8,Math.max(0.05,zoom*f));place();});});
 frame.addEventListener('wheel',function(ev){if(!ev.ctrlKey)return;ev.preventDefault();zoom=Math.min(8,Math.max(0.05,zoom*(ev.deltaY<0?1.15:0.87)));place();},{passive:false});
 var drag=null;frame.addEventListener('mousedown',function(ev){drag={x:ev.clientX,y:ev.clientY,l:frame.scrollLeft,t:frame.scrollTop};frame.classList.add('dragging');});
 window.addEventListener('mousemove',function(ev){if(drag){frame.scrollLeft=drag.l-(ev.clientX-drag.x);frame.scrollTop=drag.t-(ev.clientY-drag.y);}});
 window.addEventListener('mouseup',function(){drag=null;frame.classList.remove('dragging');});
 view.sosmFocus=function(p){if(focus!==String(p))setFocus(String(p));};
 filter();place();});
})();
"""
