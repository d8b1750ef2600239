"""Report sections of a what-if study: speedup per setting, latency and memory along an axis, the summary.

Input is the study table (:func:`dicesim.study.study_table`) and the study's varying axes;
output is a list of :class:`~dicesim.report.html.Section`. Figures with more settings than
fit one chart get a dropdown (plotly ``updatemenus``, no server and no network): one
entry per model and value of the other axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dicesim.report.explorer import explorer
from dicesim.report.html import Section
from dicesim.report.study_families import family_summary, family_winners
from dicesim.report.study_text import fastest_per_setting, study_summary
from dicesim.report.units import unit_for

_LAYOUT = dict(template="plotly_white", margin=dict(l=70, r=30, t=90, b=60))
#: columns of the study's result table, in print order (those present)
TABLE_COLUMNS: tuple[str, ...] = (
    "model", "topology", "profile", "profile_basis", "world_size", "batch", "image_size", "strategy", "step_latency_s", "step_latency_low_s",
    "step_latency_high_s", "band_covers", "speedup",
    "exposed_comm_share_frac", "weighted_lag_steps", "max_lag_steps", "peak_buffer_bytes", "peak_memory_bytes",
    "memory_capacity_bytes", "fits", "parallelism", "pred_fd_change", "busiest_link_class", "busiest_link_utilisation",
)


def fig_menu(df: pd.DataFrame, *, x: str, y: str, color: str = "strategy", menu: Sequence[str] = (),
             kind: str = "bar", title: str = "") -> go.Figure:
    """``y`` over ``x`` per ``color``; one dropdown entry per combination of the ``menu`` columns.

    Bars for a categorical ``x``, lines with markers for a numeric one. Values are drawn in
    the display unit of ``y`` (ms, %, MiB, ...).
    """
    u = unit_for(y)
    menu = [m for m in menu if m in df.columns]
    if menu:  # the largest value of the last menu column first: the setting the summary quotes
        df = df.sort_values(menu, ascending=[True] * (len(menu) - 1) + [False], kind="stable")
    keys = ([" · ".join(t) for t in zip(*(df[m].astype(str).tolist() for m in menu))] if menu
            else ["all"] * len(df))
    entries = list(dict.fromkeys(keys))
    fig = go.Figure()
    owners: list[str] = []
    col_s = df[color].astype(str).tolist()
    colours = list(dict.fromkeys(col_s))
    # one pass over the rows instead of two boolean filters per trace (a study draws hundreds of traces)
    rows: dict[tuple[str, str], list[int]] = {}
    for i, kc in enumerate(zip(keys, col_s)):
        rows.setdefault(kc, []).append(i)
    x_v = df[x].to_numpy() if kind == "line" else np.array(df[x].astype(str).tolist(), dtype=object)
    y_v = df[y].to_numpy(dtype=float) * u.scale
    for entry in entries:
        for c in colours:
            idx = rows.get((entry, c))
            if idx is None:
                continue
            at = np.array(idx, dtype=np.intp)
            if kind == "line":  # by x, ties in table order (pandas' stable sort_values)
                at = at[np.argsort(x_v[at], kind="stable")]
            xs, ys = x_v[at].tolist(), y_v[at].tolist()
            common = dict(x=xs, y=ys, name=c, legendgroup=c, visible=entry == entries[0],
                          hovertemplate=f"%{{x}}: %{{y:.3f}} {u.unit}<extra>{c}</extra>")
            if kind == "line":
                fig.add_scatter(mode="lines+markers", **common)
            else:
                fig.add_bar(**common)
            owners.append(entry)
    if len(entries) > 1:
        buttons = [dict(label=e, method="update", args=[{"visible": [o == e for o in owners]},
                                                       {"title.text": f"{title} ({e})"}]) for e in entries]
        fig.update_layout(updatemenus=[dict(buttons=buttons, direction="down", x=1.0, xanchor="right", y=1.02,
                                            yanchor="bottom", showactive=True)])
    fig.update_layout(title=f"{title} ({entries[0]})" if len(entries) > 1 else title, barmode="group", **_LAYOUT)
    fig.update_xaxes(title_text=unit_for(x).title if kind == "line" else x)
    fig.update_yaxes(title_text=u.title, rangemode="tozero")
    return fig


def _line_axis(table: pd.DataFrame, axes: Sequence[str]) -> str:
    """The axis to draw lines along: the last numeric varying axis, else the first axis."""
    numeric = [a for a in axes if pd.api.types.is_numeric_dtype(table[a])]
    return numeric[-1] if numeric else (axes[0] if axes else "topology")


@dataclass(frozen=True)
class StudyDigest:
    """What both the report and the terminal show of a study, derived once from its table:
    the written summary, the fastest strategy per setting, which family wins where and why."""

    summary: tuple[str, ...]
    best: pd.DataFrame
    winners: pd.DataFrame
    family_lines: tuple[str, ...]


def plain_strings(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with its text columns as Python strings (object dtype), values unchanged. pandas 3 keeps
    text in Arrow arrays, where every row filter and take goes through Arrow's compute kernels; the
    report filters the study's small groups some thousands of times, and spends a third less time on
    plain objects (the same summary, byte for byte)."""
    text = {c: object for c in table.columns if isinstance(table[c].dtype, pd.StringDtype)}
    return table.astype(text) if text else table


def study_digest(table: pd.DataFrame, axes: Sequence[str]) -> StudyDigest:
    """The :class:`StudyDigest` of the study table ``table`` along ``axes``."""
    axes = list(axes)
    winners, best = family_winners(table), fastest_per_setting(table, axes)
    return StudyDigest(summary=tuple(study_summary(table, axes, best)), best=best,
                       winners=winners, family_lines=tuple(family_summary(table, winners)))


def study_sections(table: pd.DataFrame, axes: Sequence[str], *, skipped: pd.DataFrame | None = None,
                   digest: StudyDigest | None = None) -> list[Section]:
    """Sections of ``dicesim study``'s report from the study table (ok rows with ``speedup``);
    ``digest``: :func:`study_digest` of the same table and axes, when the caller has it already."""
    axes = list(axes)
    bar_axis = axes[0] if axes else "topology"
    line_axis = _line_axis(table, axes)
    bar_menu = ["model"] + [a for a in axes if a != bar_axis]
    line_menu = ["model"] + [a for a in axes if a != line_axis]
    d = digest if digest is not None else study_digest(table, axes)
    best = d.best
    sections = [Section(title="What changed and why", items=d.summary + ((best,) if len(best) else ()))]
    if table.empty:
        return sections + _skipped(skipped)
    winners = d.winners
    sections.append(Section(title="Which family wins, per machine and model", items=(
        *d.family_lines, winners,
        "Per model and setting: the fastest configuration that fits its GPUs' memory, and each family's best "
        "that fits (expert parallelism, sequence parallelism, data parallelism: every GPU the whole model). "
        "A cell reading 'does not fit' gives what the family's configuration closest to fitting needs per GPU "
        "of what the GPU has (docs/memory.md); such configurations are simulated for reference and never win.")))
    sections += [
        Section(title="Speedup of each strategy over sync", items=(
            fig_menu(table, x=bar_axis, y="speedup", menu=bar_menu, title="Speedup over sync"),
            "Speedup = sync's step latency / the strategy's, on the same model and setting.")),
        Section(title=f"Step latency vs {line_axis}", items=(
            fig_menu(table, x=line_axis, y="step_latency_s", menu=line_menu, kind="line",
                     title=f"Step latency vs {line_axis}"),)),
        Section(title="Exposed communication", items=(
            fig_menu(table, x=bar_axis, y="exposed_comm_share_frac", menu=bar_menu,
                     title="Share of the step spent waiting for communication"),
            "Exposed communication: the compute stream idle, waiting for an all-to-all (or for other ranks "
            "to reach it), as a share of the step.")),
        Section(title="Staleness", items=(
            fig_menu(table, x="strategy", y="weighted_lag_steps", color="model", menu=bar_menu,
                     title="Router-weighted mean lag of the expert outputs"),
            fig_menu(table, x="strategy", y="max_lag_steps", color="model", menu=bar_menu,
                     title="Largest lag of any expert output"))),
        Section(title="Memory per GPU", items=(
            fig_menu(table, x=line_axis, y="peak_memory_bytes", menu=line_menu, kind="line",
                     title="Memory per GPU (weights, activations, held buffers, runtime)"),
            fig_menu(table, x=line_axis, y="peak_buffer_bytes", menu=line_menu, kind="line",
                     title="Peak held-buffer memory per GPU"),
            "Memory per GPU: the fullest rank's weights, the working set of one block, the buffers held across "
            "steps and the runtime allowance (docs/memory.md), against the GPU's memory in the table below. "
            "Held buffers alone (dispatch/combine in flight, per-layer caches, K/V) in the second chart.")),
    ]
    if "pred_fd_change" in table.columns and table["pred_fd_change"].notna().any():
        sections.append(Section(title="Predicted quality cost", items=(
            fig_menu(table, x="strategy", y="pred_fd_change", color="model", menu=bar_menu,
                     title="Predicted FD increase over sync (lower is better)"),
            *quality_notes(table))))
    filters = [c for c in ["model", *axes, "strategy"] if c in table.columns]
    sections.append(Section(title="Explore: latency vs staleness vs memory", items=(
        explorer(table, x="weighted_lag_steps", y="step_latency_s", filters=filters, element_id="study-explorer"),
        "Pick a model, a setting and the metrics on each axis; the dashed line is the Pareto front of the "
        "configurations shown. The view is kept in the address (#...), so it can be bookmarked.")))
    cols = [c for c in TABLE_COLUMNS if c in table.columns]
    sections.append(Section(title="All configurations", items=(table[cols],)))
    return sections + _skipped(skipped)


def _skipped(skipped: pd.DataFrame | None) -> list[Section]:
    if skipped is None or skipped.empty:
        return []
    reasons = skipped.groupby(["status", "reason"], sort=True).size().reset_index(name="configurations")
    return [Section(title="Skipped and failed configurations", items=(reasons,))]


def quality_notes(table: pd.DataFrame) -> tuple[str, ...]:
    """Where the predicted quality comes from: the quality model's basis, once per distinct basis."""
    if "quality_basis" not in table.columns:
        return ()
    return tuple(f"Predicted quality: {b}." for b in dict.fromkeys(table["quality_basis"].dropna().astype(str)))
