"""Headless Chromium for the view tests: open a page at a window size, run a probe, read back what it measured.

:func:`probe` copies the page, appends :data:`PROBE` (which measures the DOM, moves the slider and
clicks a token) and returns its JSON result from ``--dump-dom``. Bounding boxes come from
``getBoundingClientRect`` after layout, so overlap and overflow are what a reader would see.
"""
import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
SIZES = [(1400, 1000), (1920, 1080)]

PROBE = r"""
(function(){
 function box(el){var r=el.getBoundingClientRect();return [r.left,r.top,r.right,r.bottom];}
 function shown(el){var r=el.getBoundingClientRect();return r.width>0&&r.height>0&&getComputedStyle(el).display!=='none';}
 function overlaps(els){els=els.filter(shown);var b=els.map(box),bad=[];
  for(var i=0;i<b.length;i++)for(var j=i+1;j<b.length;j++)
   if(b[i][0]<b[j][2]-0.5&&b[j][0]<b[i][2]-0.5&&b[i][1]<b[j][3]-0.5&&b[j][1]<b[i][3]-0.5)bad.push([els[i].textContent,els[j].textContent]);
  return bad;}
 function all(root,sel){return [].slice.call(root.querySelectorAll(sel));}
 var R={innerWidth:window.innerWidth,overflow:document.documentElement.scrollWidth-window.innerWidth,views:[]};
 all(document,'.sosm-view').forEach(function(view){
  var V={},svg=view.querySelector('svg.arcs'),labels=all(view,'text.label');
  V.labels=labels.filter(shown).length;V.nodes=all(view,'g.node').length;V.labelOverlaps=overlaps(labels);
  V.labelTexts=labels.slice(0,5).map(function(t){return t.textContent;});
  var sem=function(){return all(view,'path.edge.semantic').filter(shown).length;};
  V.semanticShown=sem();var slider=view.querySelector('input.threshold');
  if(slider){slider.value=slider.max;slider.dispatchEvent(new Event('input'));V.semanticAtMax=sem();
   slider.value=slider.min;slider.dispatchEvent(new Event('input'));V.semanticAtMin=sem();}
  var nodes=all(view,'g.node'),best=null,most=-1;
  nodes.forEach(function(g){var c=all(view,'path.edge').filter(function(p){return p.dataset.s===g.dataset.p||p.dataset.t===g.dataset.p;}).length;
   if(c>most){most=c;best=g;}});
  if(best){best.dispatchEvent(new MouseEvent('click',{bubbles:true}));
   V.focused=svg.classList.contains('focused');V.focusEdges=most;
   V.inEdges=all(view,'path.edge.in').length;V.outEdges=all(view,'path.edge.out').length;
   var other=all(view,'path.edge').filter(function(p){return !p.classList.contains('in')&&!p.classList.contains('out')&&shown(p);})[0];
   var mine=all(view,'path.edge.in,path.edge.out')[0];
   V.fadedOpacity=other?+getComputedStyle(other).strokeOpacity:null;V.focusOpacity=mine?+getComputedStyle(mine).strokeOpacity:null;
   V.panel=view.querySelector('.focus-panel').textContent;V.focusPosition=best.dataset.p;V.attrPos=(document.getElementById('attr-pos')||{}).textContent||null;
   best.dispatchEvent(new MouseEvent('click',{bubbles:true}));V.unfocused=!svg.classList.contains('focused');}
  var out=view.querySelector('button[data-zoom="0.8"]');
  if(out){V.width=+svg.getAttribute('width');for(var z=0;z<4;z++)out.click();V.zoomedWidth=+svg.getAttribute('width');
   V.zoomedLabels=labels.filter(shown).length;V.zoomedOverlaps=overlaps(labels);
   view.querySelector('button[data-zoom="1"]').click();V.restoredWidth=+svg.getAttribute('width');}
  R.views.push(V);});
 var heat=document.querySelector('svg.heat');
 if(heat){R.heat={rows:all(heat,'text.row-label').length,cols:all(heat,'text.col-label').length,
  colorbar:!!heat.querySelector('.colorbar rect'),ticks:all(heat,'.colorbar text.tick').map(function(t){return t.textContent;}),
  axes:all(heat,'text.axis').map(function(t){return t.textContent;}),
  caption:(heat.closest('figure').querySelector('figcaption')||{}).textContent||'',
  overlaps:overlaps(all(heat,'text'))};}
 var pre=document.createElement('pre');pre.id='probe-result';pre.textContent=JSON.stringify(R);document.body.appendChild(pre);
})();
"""


def probe(page: Path, width: int, height: int) -> dict:
    """Open ``page`` at ``width x height`` in headless Chromium and return :data:`PROBE`'s measurements."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "page.html"
        text = Path(page).read_text(encoding="utf-8")
        copy.write_text(text.replace("</body>", f"<script>{PROBE}</script></body>"), encoding="utf-8")
        done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                               "--no-first-run", "--disable-background-networking", "--disable-component-update",
                               "--disable-sync", "--hide-scrollbars", f"--user-data-dir={tmp}/profile",
                               f"--window-size={width},{height}", "--virtual-time-budget=5000", "--dump-dom",
                               f"file://{copy}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'<pre id="probe-result">(.*?)</pre>', done.stdout, re.S)
    assert found, "the probe did not run: " + done.stdout[-500:]
    return json.loads(html.unescape(found.group(1)))
