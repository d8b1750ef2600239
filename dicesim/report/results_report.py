"""Reports of result files and tables: measured and predicted runs side by side; any table explored.

:func:`results_sections` puts :class:`~dicesim.results.RunResult` records (simulator and
executor alike) in one table, one latency chart and one per-step plot.
:func:`table_sections` renders any result table (sweep, study, recommend candidates,
``results table --out``) as an interactive Pareto explorer with a filter per axis.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go

from dicesim.errors import ConfigError
from dicesim.report.explorer import DEFAULT_METRICS, explorer
from dicesim.report.figures import fig_latency_bars
from dicesim.report.html import Section
from dicesim.report.units import unit_for
from dicesim.results import METRIC_NAMES, RunResult, per_step_frame, results_frame

_LAYOUT = dict(template="plotly_white", margin=dict(l=70, r=30, t=60, b=60))
_SHOWN = ("source", "label", "step_latency_s", "steady_step_latency_s", "exposed_comm_step_s", "overlap_frac",
          "mean_lag_steps", "weighted_lag_steps", "max_lag_steps", "peak_buffer_bytes", "shadow_rel_l2_mean")


def fig_per_step(per_step: pd.DataFrame) -> go.Figure:
    """Latency of every step of every run; measured runs solid, predicted dashed."""
    u = unit_for("latency_s")
    fig = go.Figure()
    for (label, source), g in per_step.groupby(["label", "source"], sort=False):
        fig.add_scatter(x=g["step"], y=g["latency_s"] * u.scale, mode="lines+markers", name=f"{source}: {label}",
                        line=dict(dash="dash" if source == "sim" else "solid"),
                        hovertemplate=f"step %{{x}}: %{{y:.3f}} {u.unit}<extra>{source}</extra>")
    fig.update_layout(title="Step latency per step (measured solid, predicted dashed)", **_LAYOUT)
    fig.update_xaxes(title_text="denoising step")
    fig.update_yaxes(title_text=u.title, rangemode="tozero")
    return fig


def results_sections(runs: Sequence[RunResult]) -> list[Section]:
    """One table, one latency chart and one per-step plot for predicted and measured runs together."""
    df = results_frame(runs)
    bars = df.assign(run=df["source"] + ": " + df["label"])
    shown = [c for c in _SHOWN if c in df.columns and df[c].notna().any()]
    sections = [Section(title="Runs", items=(
        f"{len(runs)} runs: {int((df['source'] == 'sim').sum())} predicted (simulator), "
        f"{int((df['source'] == 'executor').sum())} measured (executor); every number in the shared result schema "
        "(docs/results.md).", df[shown])),
        Section(title="Step latency", items=(fig_latency_bars(bars, label="run"),
                                             "Exposed communication is the darker part of each bar."))]
    per_step = per_step_frame(runs)
    if len(per_step):
        sections.append(Section(title="Per step", items=(fig_per_step(per_step),)))
    return sections


def table_sections(df: pd.DataFrame, *, x: str = "weighted_lag_steps", y: str = "step_latency_s",
                   max_rows: int = 500) -> list[Section]:
    """An explorer of any result table: filters for every descriptor column, a Pareto plot, the rows."""
    metrics = [m for m in dict.fromkeys([*DEFAULT_METRICS, *METRIC_NAMES]) if m in df.columns]
    for option, col in (("--x", x), ("--y", y)):
        if col not in metrics:
            raise ConfigError(option, f"{col!r} is not a metric column of this table", metrics)
    ok = df
    note = f"{len(df)} rows."
    if "status" in df.columns:
        from dicesim.report.sweep_report import with_speedup

        ok = df[df["status"] == "ok"]
        if {"index", "strategy", "step_latency_s"} <= set(df.columns):
            ok = with_speedup(df)[lambda d: d["status"] == "ok"]
        note = f"{len(df)} rows, {len(ok)} with results ({len(df) - len(ok)} skipped or failed)."
    ok = ok.dropna(subset=[x, y]).reset_index(drop=True)
    if ok.empty:
        return [Section(title="Table", items=(note + " Nothing to plot.",))]
    colour = "strategy" if "strategy" in ok.columns else ("source" if "source" in ok.columns else ok.columns[0])
    metrics = [m for m in dict.fromkeys([*DEFAULT_METRICS, *METRIC_NAMES]) if m in ok.columns]
    rows = ok if len(ok) <= max_rows else ok.nsmallest(max_rows, y)
    return [
        Section(title="Explore", items=(note, explorer(ok, x=x, y=y, color=colour, metrics=metrics),
                                        "Filters combine; the dashed line is the Pareto front of what is shown. "
                                        "The view is kept in the address (#...).")),
        Section(title="Rows", items=((f"The {max_rows} best by {y}.",) if len(ok) > max_rows else ()) + (rows,)),
    ]
