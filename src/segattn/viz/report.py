"""The report page: one self-contained HTML file (images inline, data inline, no server, no network).

Per image: the prediction pictures, the static "where a pixel looks" figures and the family
figures; above them a row of canvases, one per map kind of each context module. Clicking a pixel on
any of them shows, on all of them, where the model looks from there (the stored rows of weights,
max-normalised to 0..255, drawn with the inferno map, opacity growing with the weight). The script reports problems in the page's
``#status`` line and on the console.
"""

from __future__ import annotations

import base64
import html
import json
from typing import Dict, List, Sequence, Tuple

import numpy as np

from segattn.io import atomic_write_text
from segattn.viz import render
from segattn.viz.model import Analysis

STYLE = """
body{font-family:sans-serif;margin:16px;color:#222;background:#fafafa}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}figure{display:inline-block;margin:4px;vertical-align:top}
figcaption{font-size:12px;color:#444;max-width:520px}img{image-rendering:auto;border:1px solid #ccc}
canvas{border:1px solid #888;cursor:crosshair}.views figure{margin:6px}#status{font-size:12px;color:#555}
"""

SCRIPT = r"""
(function(){
'use strict';
const status = document.getElementById('status');
function fail(msg){ status.textContent = 'error: ' + msg; status.style.color = '#b00'; console.error(msg); }
window.addEventListener('error', e => fail(String(e.message)));
const LUT = Uint8Array.from(atob(DATA.lut), c => c.charCodeAt(0));
function decode(b64){ return Uint8Array.from(atob(b64), c => c.charCodeAt(0)); }
let drawn = 0;
function drawView(canvas, img, view, rows, q){
  const ctx = canvas.getContext('2d');
  const [gh, gw] = view.map_grid, [sh, sw] = view.stride, [qh, qw] = view.query_grid;
  const qy = Math.min(qh - 1, Math.round(q[0] / sh)), qx = Math.min(qw - 1, Math.round(q[1] / sw));
  const off = (qy * qw + qx) * gh * gw;
  const heat = document.createElement('canvas'); heat.width = gw; heat.height = gh;
  const hctx = heat.getContext('2d'); const data = hctx.createImageData(gw, gh);
  for (let i = 0; i < gh * gw; i++) { const v = rows[off + i];
    data.data[4*i] = LUT[3*v]; data.data[4*i+1] = LUT[3*v+1]; data.data[4*i+2] = LUT[3*v+2];
    data.data[4*i+3] = Math.round(255 * (0.15 + 0.75 * v / 255)); }
  hctx.putImageData(data, 0, 0);
  ctx.globalAlpha = 1; ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
  ctx.imageSmoothingEnabled = true; ctx.drawImage(heat, 0, 0, canvas.width, canvas.height);
  const cy = (qy * sh + 0.5) * canvas.height / (qh * sh), cx = (qx * sw + 0.5) * canvas.width / (qw * sw);
  ctx.lineWidth = 4; ctx.strokeStyle = '#000'; ctx.beginPath(); ctx.arc(cx, cy, 6, 0, 2 * Math.PI); ctx.stroke();
  ctx.lineWidth = 2; ctx.strokeStyle = '#0ff'; ctx.beginPath(); ctx.arc(cx, cy, 6, 0, 2 * Math.PI); ctx.stroke();
  drawn++;
}
function setup(entry, index){
  const box = document.getElementById('views-' + index);
  const img = new Image();
  img.onload = function(){
    const views = entry.views.map(v => ({v: v, rows: decode(v.rows)}));
    const canvases = views.map(function(item){
      const fig = document.createElement('figure'); const c = document.createElement('canvas');
      const zoom = Math.max(1, 360 / img.width);
      c.width = Math.round(img.width * zoom); c.height = Math.round(img.height * zoom); fig.appendChild(c);
      const cap = document.createElement('figcaption'); cap.textContent = item.v.label; fig.appendChild(cap);
      box.appendChild(fig); return c; });
    function show(fy, fx){
      views.forEach(function(item, i){ const [sh, sw] = item.v.stride;
        const qgh = item.v.query_grid[0] * sh, qgw = item.v.query_grid[1] * sw;
        drawView(canvases[i], img, item.v, item.rows, [fy * qgh, fx * qgw]); });
      status.textContent = 'ready: ' + drawn + ' maps drawn; click any picture above to move the query';
    }
    canvases.forEach(function(c){ c.addEventListener('click', function(ev){
      const r = c.getBoundingClientRect(); show((ev.clientY - r.top) / r.height, (ev.clientX - r.left) / r.width); }); });
    show(0.5, 0.5);
  };
  img.onerror = () => fail('image ' + index + ' did not decode');
  img.src = entry.image;
}
try { DATA.entries.forEach(setup); if (!DATA.entries.length) status.textContent = 'ready: no images'; }
catch (e) { fail(e.message); }
})();
"""


def data_uri(image: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(render.png_bytes(image)).decode("ascii")


def page_data(analyses: Sequence[Analysis]) -> Dict[str, object]:
    """The JSON the script reads: colour table and, per image, the image and its views."""
    entries = []
    for a in analyses:
        entries.append({
            "name": a.name, "image": data_uri(a.image),
            "views": [{"label": v.label, "query_grid": list(v.query_grid), "map_grid": list(v.map_grid),
                       "stride": list(v.stride), "rows": base64.b64encode(v.rows).decode("ascii")} for v in a.views],
        })
    return {"lut": base64.b64encode(render.LUT.tobytes()).decode("ascii"), "entries": entries}


def build_page(title: str, analyses: Sequence[Analysis], predictions: Sequence[List[Tuple[str, np.ndarray]]],
               notes: str = "") -> str:
    """The HTML text: ``predictions[i]`` are (caption, picture) pairs shown first for image i."""
    parts: List[str] = [
        "<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<p id='status'>loading (this page needs JavaScript for the clickable maps)</p>",
    ]
    if notes:
        parts.append(f"<p>{html.escape(notes)}</p>")
    for i, a in enumerate(analyses):
        parts.append(f"<h2>{html.escape(a.name)}</h2><div class='views' id='views-{i}'></div><div>")
        figures = list(predictions[i] if i < len(predictions) else []) + list(a.figures)
        for cap, pic in figures:
            parts.append(f"<figure><img alt='{html.escape(cap)}' src='{data_uri(pic)}'>"
                         f"<figcaption>{html.escape(cap)}</figcaption></figure>")
        parts.append("</div>")
    data = json.dumps(page_data(analyses)).replace("</", "<\\/")
    parts.append(f"<script>const DATA = {data};</script><script>{SCRIPT}</script></body></html>")
    return "\n".join(parts)


def write_page(path: str, title: str, analyses: Sequence[Analysis],
               predictions: Sequence[List[Tuple[str, np.ndarray]]] = (), notes: str = "") -> str:
    """Write the page atomically; returns its path."""
    atomic_write_text(path, build_page(title, analyses, predictions, notes))
    return path
