"""An interactive Pareto explorer for any result table (sweep, study, recommend, results).

:func:`explorer` turns a tidy table into an :class:`~dicesim.report.html.Interactive`
report item: one dropdown per filter axis (topology, world size, batch, ...; combined with
AND), dropdowns for the x and y metrics and for the colour, and a scatter of the rows that
pass the filters with their Pareto front recomputed in the browser. Everything the page
needs is in the page (data as JSON, plotly.js embedded once by the report), so it works
offline. The view is mirrored in the URL fragment (``#topology=dgx-h100&x=mean_lag_steps``),
so a filtered view can be bookmarked and a browser test can open one.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from dicesim.report.figures import fig_pareto
from dicesim.report.html import Interactive
from dicesim.report.units import unit_for

#: metrics where more is better (the front maximises them); every other metric is minimised
HIGHER_IS_BETTER = frozenset({"speedup", "overlap_frac"})
#: the metrics offered on the axes, when present in the table
DEFAULT_METRICS: tuple[str, ...] = (
    "step_latency_s", "weighted_lag_steps", "mean_lag_steps", "max_lag_steps", "peak_buffer_bytes", "speedup",
    "exposed_comm_step_s", "exposed_comm_share_frac", "overlap_frac", "pred_fd_change", "total_latency_s",
)
_MAX_FILTER_VALUES = 60  # a column with more distinct values is a measurement, not an axis

_SCRIPT = r"""
(function () {
  var gd = document.getElementById('{plot_id}');
  var D = JSON.parse(document.getElementById('%(data_id)s').textContent);
  var root = document.getElementById('%(ctrl_id)s');
  var sel = {};
  root.querySelectorAll('select').forEach(function (s) { sel[s.dataset.role] = s; });
  function fromHash() {
    var h = window.location.hash.replace(/^#/, '');
    if (!h) return;
    h.split('&').forEach(function (kv) {
      var i = kv.indexOf('='); if (i < 0) return;
      var k = decodeURIComponent(kv.slice(0, i)), v = decodeURIComponent(kv.slice(i + 1));
      var s = sel[k];
      if (s && Array.prototype.some.call(s.options, function (o) { return o.value === v; })) s.value = v;
    });
  }
  function toHash() {
    var parts = [];
    Object.keys(sel).forEach(function (k) {
      if (sel[k].value !== sel[k].dataset.initial) parts.push(encodeURIComponent(k) + '=' + encodeURIComponent(sel[k].value));
    });
    if (window.history && window.history.replaceState) {
      window.history.replaceState(null, '', parts.length ? '#' + parts.join('&') : window.location.pathname);
    }
  }
  function front(pts, sx, sy) {
    var idx = pts.map(function (_, i) { return i; }).filter(function (i) {
      return isFinite(pts[i].x) && isFinite(pts[i].y);
    });
    idx.sort(function (a, b) { return sx * pts[a].x - sx * pts[b].x || sy * pts[a].y - sy * pts[b].y; });
    var out = [], best = Infinity, i = 0;
    while (i < idx.length) {
      var j = i; while (j < idx.length && pts[idx[j]].x === pts[idx[i]].x) j++;
      var y = sy * pts[idx[i]].y;
      if (y < best) {
        for (var k = i; k < j; k++) if (sy * pts[idx[k]].y === y) out.push(pts[idx[k]]);
        best = y;
      }
      i = j;
    }
    return out;
  }
  function draw() {
    var xm = sel.x.value, ym = sel.y.value, cm = sel.color.value;
    var X = D.metrics[xm], Y = D.metrics[ym];
    var rows = D.rows.filter(function (r) {
      return D.filters.every(function (f) { return sel[f].value === '(all)' || String(r[f]) === sel[f].value; });
    });
    var pts = rows.map(function (r) {
      return {x: r[xm] === null ? NaN : r[xm] * X.scale, y: r[ym] === null ? NaN : r[ym] * Y.scale,
              c: String(r[cm]), t: r.__label};
    });
    var groups = {};
    pts.forEach(function (p) { (groups[p.c] = groups[p.c] || []).push(p); });
    var traces = Object.keys(groups).sort().map(function (g) {
      var ps = groups[g];
      return {type: 'scatter', mode: 'markers', name: g, x: ps.map(function (p) { return p.x; }),
              y: ps.map(function (p) { return p.y; }), text: ps.map(function (p) { return p.t; }),
              hovertemplate: '%%{text}<br>' + X.label + ' %%{x:.3f} ' + X.unit + '<br>' + Y.label + ' %%{y:.3f} ' +
                             Y.unit + '<extra>%%{fullData.name}</extra>'};
    });
    var fr = front(pts, X.sense, Y.sense);
    fr.sort(function (a, b) { return a.x - b.x; });
    traces.push({type: 'scatter', mode: 'lines+markers', name: 'Pareto front', x: fr.map(function (p) { return p.x; }),
                 y: fr.map(function (p) { return p.y; }), text: fr.map(function (p) { return p.t; }),
                 line: {shape: X.sense * Y.sense > 0 ? 'hv' : 'vh', color: 'black', dash: 'dash'},
                 marker: {symbol: 'circle-open', size: 12, color: 'black'}, hovertemplate: '%%{text}<extra>front</extra>'});
    var layout = {template: gd.layout && gd.layout.template, margin: {l: 70, r: 30, t: 60, b: 60},
                  title: {text: Y.title + ' vs ' + X.title},
                  xaxis: {title: {text: X.title}}, yaxis: {title: {text: Y.title}}};
    Plotly.react(gd, traces, layout);
    root.dataset.shown = String(rows.length);
    root.dataset.front = String(fr.length);
    root.querySelector('.status').textContent = rows.length + ' of ' + D.rows.length + ' configurations shown, ' +
      fr.length + ' on the Pareto front (' + (X.sense > 0 ? 'less' : 'more') + ' ' + X.label + ', ' +
      (Y.sense > 0 ? 'less' : 'more') + ' ' + Y.label + ' is better)';
    toHash();
  }
  fromHash();
  Object.keys(sel).forEach(function (k) { sel[k].addEventListener('change', draw); });
  window.addEventListener('hashchange', function () { fromHash(); draw(); });
  draw();
})();
"""


def _jsonable(v: Any) -> Any:
    if v is None:
        return None
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def filter_columns(table: pd.DataFrame, exclude: Sequence[str] = ()) -> list[str]:
    """Columns worth a filter: non-metric descriptors with 2..60 distinct values."""
    skip = set(exclude) | {"index", "key", "status", "reason", "label", "memory_note"}
    out = []
    for c in table.columns:
        if c in skip or c in DEFAULT_METRICS or c.endswith(("_s", "_frac", "_bytes", "_Bps", "_steps")):
            continue
        n = table[c].astype(str).nunique()
        if 2 <= n <= _MAX_FILTER_VALUES:
            out.append(c)
    return out


def _select(role: str, label: str, options: Sequence[tuple[str, str]], value: str) -> str:
    opts = "".join(f'<option value="{html.escape(v)}"{" selected" if v == value else ""}>{html.escape(t)}</option>'
                   for v, t in options)
    return (f'<label>{html.escape(label)} <select data-role="{html.escape(role)}" data-initial="{html.escape(value)}">'
            f"{opts}</select></label>")


def explorer(table: pd.DataFrame, *, x: str = "weighted_lag_steps", y: str = "step_latency_s",
             color: str = "strategy", filters: Sequence[str] | None = None, label_columns: Sequence[str] = (),
             metrics: Sequence[str] = DEFAULT_METRICS, element_id: str = "explorer") -> Interactive:
    """The interactive Pareto view of ``table`` (one row per configuration).

    ``filters`` default to :func:`filter_columns`; ``label_columns`` make the hover text
    (default: colour plus filters); ``element_id`` must be unique within one page.
    """
    metrics = [m for m in metrics if m in table.columns]
    for needed in (x, y):
        if needed not in metrics:
            raise ValueError(f"explorer: metric {needed!r} not in the table")
    filters = [f for f in (filter_columns(table) if filters is None else filters)
               if f in table.columns and table[f].astype(str).nunique() > 1]
    colours = [c for c in dict.fromkeys([color, *filters]) if c in table.columns]
    labels = list(label_columns) or [c for c in dict.fromkeys([color, *filters]) if c in table.columns]
    keep = list(dict.fromkeys([*colours, *metrics, *filters]))
    rows = []
    for rec in table[keep].to_dict(orient="records"):
        row = {k: _jsonable(v) for k, v in rec.items()}
        row["__label"] = " · ".join(f"{c}={rec[c]}" for c in labels)
        rows.append(row)
    meta = {}
    for m in metrics:
        u = unit_for(m)
        meta[m] = {"label": u.label, "unit": u.unit, "title": u.title, "scale": u.scale,
                   "sense": -1 if m in HIGHER_IS_BETTER else 1}
    data = {"rows": rows, "metrics": meta, "filters": filters}
    data_id, ctrl_id = f"{element_id}-data", f"{element_id}-controls"
    controls = [_select(f, f, [("(all)", "(all)")] + [(str(v), str(v)) for v in _sorted_values(table[f])], "(all)")
                for f in filters]
    axis_opts = [(m, meta[m]["title"]) for m in metrics]
    controls += [_select("x", "x", axis_opts, x), _select("y", "y", axis_opts, y),
                 _select("color", "colour", [(c, c) for c in colours], color)]
    payload = json.dumps(data, allow_nan=False).replace("<", "\\u003c")  # no markup inside the script element
    controls_html = (f'<script type="application/json" id="{data_id}">{payload}</script>'
                     f'<div class="controls" id="{ctrl_id}" data-shown="" data-front="">{"".join(controls)}'
                     '<span class="status"></span></div>')
    initial = fig_pareto(table.assign(label=[r["__label"] for r in rows]), x=x, y=y,
                         color=color if color in table.columns else "strategy")
    return Interactive(figure=initial, controls_html=controls_html,
                       script=_SCRIPT % {"data_id": data_id, "ctrl_id": ctrl_id})


def _sorted_values(series: pd.Series) -> list[Any]:
    values = series.dropna().unique().tolist()
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=str)
