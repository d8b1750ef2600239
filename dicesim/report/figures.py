"""Pure functions from result tables to plotly figures; no simulation, no files.

Every figure takes a tidy ``pandas`` table (the simulator's ``summary``/``per_step``/``lags``/
``links``/``events`` tables or a sweep table) and returns a ``plotly.graph_objects.Figure``.
Values are converted with :mod:`dicesim.report.units`, so axis titles always carry the
unit the numbers are drawn in (ms, %, steps, MiB).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dicesim.report.units import unit_for
from dicesim.trace.schema import KNOWN_STREAMS

_LAYOUT = dict(template="plotly_white", margin=dict(l=70, r=30, t=60, b=60))
# Fixed colours per event family keep a timeline readable next to its neighbours.
_KIND_COLOURS = {"compute": "#4C78A8", "collective": "#F58518", "wait": "#BAB0AC", "marker": "#54A24B"}


def _stream_rank(stream: str) -> tuple[int, str]:
    return (KNOWN_STREAMS.index(stream) if stream in KNOWN_STREAMS else len(KNOWN_STREAMS), stream)


def _require(df: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {', '.join(missing)}")


def pareto_mask(df: pd.DataFrame, x: str, y: str) -> np.ndarray:
    """Rows that no other row dominates in (x, y), both minimised; exact duplicates are all kept.

    Rows with a missing or infinite x or y are never on the front.
    """
    xs, ys = df[x].to_numpy(dtype=float), df[y].to_numpy(dtype=float)
    keep = np.zeros(len(df), dtype=bool)
    idx = np.flatnonzero(np.isfinite(xs) & np.isfinite(ys))
    idx = idx[np.lexsort((ys[idx], xs[idx]))]
    best_y = np.inf
    i = 0
    while i < len(idx):
        j = i
        while j < len(idx) and xs[idx[j]] == xs[idx[i]]:
            j += 1
        y_min = ys[idx[i]]  # sorted by y inside one x
        if y_min < best_y:
            same = idx[i:j][ys[idx[i:j]] == y_min]
            keep[same] = True
            best_y = y_min
        i = j
    return keep


def fig_latency_bars(summary_df: pd.DataFrame, *, label: str = "strategy") -> go.Figure:
    """Step latency per strategy, split into exposed communication and everything else.

    Needs ``label`` and ``step_latency_s``; ``exposed_comm_step_s`` (else ``exposed_comm_s``,
    which must then be per step too) splits each bar and
    ``speedup`` (x over sync) labels it when present.
    """
    _require(summary_df, [label, "step_latency_s"], "fig_latency_bars")
    u = unit_for("step_latency_s")
    names = summary_df[label].astype(str).tolist()
    step = summary_df["step_latency_s"].to_numpy(dtype=float) * u.scale
    fig = go.Figure()
    exposed_col = next((c for c in ("exposed_comm_step_s", "exposed_comm_s") if c in summary_df.columns), None)
    if exposed_col:
        exposed = summary_df[exposed_col].to_numpy(dtype=float) * u.scale
        fig.add_bar(x=names, y=step - exposed, name="compute + hidden comm", marker_color=_KIND_COLOURS["compute"],
                    hovertemplate="%{x}: %{y:.2f} ms<extra>compute + hidden comm</extra>")
        fig.add_bar(x=names, y=exposed, name="exposed comm", marker_color=_KIND_COLOURS["collective"],
                    hovertemplate="%{x}: %{y:.2f} ms<extra>exposed comm</extra>")
    else:
        fig.add_bar(x=names, y=step, name="step latency", marker_color=_KIND_COLOURS["compute"])
    if {"step_latency_low_s", "step_latency_high_s"} <= set(summary_df.columns):
        lo = summary_df["step_latency_low_s"].to_numpy(dtype=float) * u.scale
        hi = summary_df["step_latency_high_s"].to_numpy(dtype=float) * u.scale
        fig.add_scatter(x=names, y=step, mode="markers", name="error band", marker=dict(color="black", size=4),
                        error_y=dict(type="data", symmetric=False, array=(hi - step).tolist(),
                                     arrayminus=(step - lo).tolist(), color="black"),
                        hovertemplate="%{x}: band %{customdata[0]:.1f}-%{customdata[1]:.1f} ms<extra></extra>",
                        customdata=np.stack([lo, hi], axis=1))
    if "speedup" in summary_df.columns:
        texts = [f"{s:.2f}x" for s in summary_df["speedup"].to_numpy(dtype=float)]
        fig.add_scatter(x=names, y=step, mode="text", text=texts, textposition="top center",
                        showlegend=False, hoverinfo="skip")
    fig.update_layout(barmode="stack", title="Step latency per strategy", **_LAYOUT)
    fig.update_xaxes(title_text=label)
    fig.update_yaxes(title_text=u.title, rangemode="tozero")
    return fig


def fig_timeline(events_df: pd.DataFrame, *, ranks: Sequence[int] | None = None,
                 steps: Sequence[int] | None = None, include_links: bool = False) -> go.Figure:
    """Gantt-like view: one row per (rank, stream) track, one bar per event, time in ms.

    ``ranks`` / ``steps`` select events (None = all); link rows (rank -1) are left out
    unless ``include_links``. Bars are coloured by event kind (compute, collective, wait);
    hovering shows the op name, layer, steps and bytes.
    """
    _require(events_df, ["rank", "stream", "kind", "name", "start_us", "end_us"], "fig_timeline")
    df = events_df
    if not include_links:
        df = df[df["kind"].astype(str) != "link"]
    if ranks is not None:
        df = df[df["rank"].isin(list(ranks))]
    if steps is not None and "step" in df.columns:
        df = df[df["step"].isin(list(steps))]
    df = df[df["kind"].astype(str) != "marker"]
    fig = go.Figure()
    t0_us = float(df["start_us"].min()) if len(df) else 0.0
    track = [("links" if r < 0 else f"rank {r}") + f" · {s}"
             for r, s in zip(df["rank"].tolist(), df["stream"].astype(str).tolist())]
    df = df.assign(_track=track)
    tracks = df[["rank", "stream", "_track"]].drop_duplicates("_track")
    order = [t for _, _, t in sorted(zip(tracks["rank"].tolist(), map(_stream_rank, tracks["stream"].astype(str)),
                                         tracks["_track"].tolist()))]
    for kind, part in df.groupby(df["kind"].astype(str), sort=True):
        start_ms = (part["start_us"].to_numpy(dtype=float) - t0_us) / 1e3
        dur_ms = (part["end_us"].to_numpy(dtype=float) - part["start_us"].to_numpy(dtype=float)) / 1e3
        cols = [c for c in ("name", "layer", "step", "tok_step", "nbytes") if c in part.columns]
        custom = part[cols].astype(object).to_numpy()
        hover = "<br>".join(f"{c}: %{{customdata[{i}]}}" for i, c in enumerate(cols))
        fig.add_bar(y=part["_track"].tolist(), x=dur_ms, base=start_ms, orientation="h", name=kind,
                    marker_color=_KIND_COLOURS.get(kind, "#999999"), customdata=custom,
                    hovertemplate=hover + "<br>start %{base:.3f} ms, %{x:.3f} ms<extra>%{fullData.name}</extra>")
    fig.update_layout(barmode="overlay", title="Timeline per rank and stream", height=max(300, 28 * len(order) + 120),
                      **_LAYOUT)
    fig.update_xaxes(title_text="time since first shown event (ms)")
    fig.update_yaxes(title_text="rank · stream", categoryorder="array", categoryarray=order[::-1])
    return fig


def lag_scale_max(lag_tables: Sequence[pd.DataFrame], value: str = "lag") -> float:
    """The top of one colour scale for several lag maps (the largest cell over all of them, >= 1), so the
    same colour means the same lag in every strategy's map."""
    tops = [float(t.groupby(["layer", "step"])[value].mean().max()) for t in lag_tables if len(t)]
    return max([1.0, *[v for v in tops if v == v]])


def fig_lag_heatmap(lags_df: pd.DataFrame, *, value: str = "lag", title: str | None = None,
                    zmax: float | None = None) -> go.Figure:
    """Lag of each MoE layer's expert output (steps) on a layer x step grid.

    Needs ``layer``, ``step`` and ``value``; several rows per cell (e.g. kept and dropped
    copies) are averaged. ``zmax``: the top of the colour scale (share one across maps with
    :func:`lag_scale_max`); default this map's own largest lag.
    """
    _require(lags_df, ["layer", "step", value], "fig_lag_heatmap")
    grid = lags_df.pivot_table(index="layer", columns="step", values=value, aggfunc="mean").sort_index()
    grid = grid.reindex(sorted(grid.columns), axis=1)
    u = unit_for(value)
    z = grid.to_numpy(dtype=float) * u.scale
    if zmax is None:
        zmax = max(float(np.nanmax(z)) if z.size else 0.0, 1.0)  # an all-zero (sync) map keeps a 0..1 scale
    else:
        zmax *= u.scale
    fig = go.Figure(go.Heatmap(
        z=z, x=[int(c) for c in grid.columns], y=[int(i) for i in grid.index],
        colorscale="Viridis", zmin=0, zmax=zmax, colorbar=dict(title=dict(text=u.title)),
        hovertemplate="layer %{y}, step %{x}: %{z:.2f} " + u.unit + "<extra></extra>",
    ))
    fig.update_layout(title=title or f"{u.label} per layer and step", **_LAYOUT)
    fig.update_xaxes(title_text="denoising step")
    fig.update_yaxes(title_text="MoE layer")
    return fig


def fig_link_utilisation(links_df: pd.DataFrame, *, top: int = 40, value: str = "utilisation",
                         color: str = "link_class") -> go.Figure:
    """Utilisation of each interconnect link (%), busiest first, one bar colour per ``color``.

    Needs ``link`` (a name) and ``value`` (a 0..1 fraction). Several rows per link (e.g. one
    per strategy, ``color="strategy"``) become grouped bars. ``nbytes`` joins the hover
    text. Only the ``top`` busiest links are drawn.
    """
    _require(links_df, ["link", value], "fig_link_utilisation")
    peak = links_df.groupby(links_df["link"].astype(str), sort=False)[value].max()
    order = peak.sort_values(ascending=False, kind="stable").head(top).index.tolist()
    df = links_df[links_df["link"].astype(str).isin(order)]
    u = unit_for(value)
    fig = go.Figure()
    groups = df.groupby(df[color].astype(str), sort=False) if color in df.columns else [("link", df)]
    for cls, part in groups:
        mib = part["nbytes"].to_numpy(dtype=float) / 2**20 if "nbytes" in part.columns else np.zeros(len(part))
        fig.add_bar(x=part["link"].astype(str).tolist(), y=part[value].to_numpy(dtype=float) * u.scale, name=str(cls),
                    customdata=mib,
                    hovertemplate="%{x}: %{y:.1f} %<br>%{customdata:.1f} MiB<extra>%{fullData.name}</extra>")
    fig.update_layout(title="Link utilisation", barmode="group", **_LAYOUT)
    fig.update_xaxes(title_text="link", categoryorder="array", categoryarray=order, tickangle=-45)
    fig.update_yaxes(title_text=u.title, rangemode="tozero")
    return fig


def fig_pareto(sweep_df: pd.DataFrame, x: str = "weighted_lag_steps", y: str = "step_latency_s", *,
               color: str = "strategy", hover: str | None = "label") -> go.Figure:
    """Scatter of every configuration in (x, y), coloured by ``color``, with the Pareto front.

    Both axes are minimised; the front is drawn as a step line through the undominated points.
    """
    _require(sweep_df, [x, y], "fig_pareto")
    ux, uy = unit_for(x), unit_for(y)
    df = sweep_df.dropna(subset=[x, y])
    fig = go.Figure()
    groups = df.groupby(df[color].astype(str), sort=True) if color in df.columns else [("configuration", df)]
    for name, part in groups:
        text = part[hover].astype(str).tolist() if hover and hover in part.columns else None
        fig.add_scatter(x=part[x].to_numpy(dtype=float) * ux.scale, y=part[y].to_numpy(dtype=float) * uy.scale,
                        mode="markers", name=str(name), text=text,
                        hovertemplate=(("%{text}<br>" if text else "") + f"{ux.label} %{{x:.3f}} {ux.unit}<br>"
                                       f"{uy.label} %{{y:.3f}} {uy.unit}<extra>%{{fullData.name}}</extra>"))
    if len(df):
        front = df[pareto_mask(df, x, y)].sort_values([x, y])
        fig.add_scatter(x=front[x].to_numpy(dtype=float) * ux.scale, y=front[y].to_numpy(dtype=float) * uy.scale,
                        mode="lines", line=dict(shape="hv", color="black", dash="dash"), name="Pareto front",
                        hoverinfo="skip")
    fig.update_layout(title=f"{uy.label} vs {ux.label}", **_LAYOUT)
    fig.update_xaxes(title_text=ux.title)
    fig.update_yaxes(title_text=uy.title)
    return fig
