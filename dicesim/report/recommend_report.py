"""Report sections and terminal tables of ``dicesim recommend``.

Input is a :class:`dicesim.recommend.Recommendation` (plain tables; what is read of it:
:class:`RecommendationView`); output is a list of :class:`~dicesim.report.html.Section` and the
small tables the CLI prints.
"""

from __future__ import annotations

from typing import Any, Protocol

import pandas as pd
import plotly.graph_objects as go

from dicesim.report.explorer import explorer
from dicesim.report.html import Section
from dicesim.report.study_report import quality_notes
from dicesim.report.units import unit_for



class RecommendationView(Protocol):
    """What the report reads of a recommendation (the search lives above the reports)."""

    scenario: Any
    table: pd.DataFrame
    ranked: pd.DataFrame
    front: pd.DataFrame
    best: pd.Series | None
    limits: Any
    n_classes: int
    n_simulated: int
    rounds: int
    violations: list

#: columns of the ranking and front tables, in print order (those present)
RANK_COLUMNS: tuple[str, ...] = (
    "rank", "strategy", "step_latency_s", "speedup", "weighted_lag_steps", "max_lag_steps", "peak_buffer_bytes",
    "peak_memory_bytes", "pred_fd_change", "reason",
)
_LAYOUT = dict(template="plotly_white", margin=dict(l=70, r=30, t=60, b=60))


def _columns(df: pd.DataFrame, cols: tuple[str, ...]) -> pd.DataFrame:
    shown = [c for c in cols if c in df.columns]
    return df[shown]


def ranking_table(rec: RecommendationView, top: int = 10) -> pd.DataFrame:
    """The ``top`` feasible candidates, fastest first, with why each placed where it did."""
    return _columns(rec.ranked.head(top), RANK_COLUMNS)


def front_table(rec: RecommendationView) -> pd.DataFrame:
    """The Pareto front (latency vs weighted lag vs memory per GPU), fastest first."""
    return _columns(rec.front, tuple(c for c in RANK_COLUMNS if c != "reason"))


def exclusion_table(rec: RecommendationView) -> pd.DataFrame:
    """How many candidates each kind of reason excluded, with one example each."""
    out = rec.table[~rec.table["status"].isin(["recommended", "feasible"])]
    if out.empty:
        return pd.DataFrame(columns=["status", "why", "candidates", "example"])
    why = out["reason"].str.replace(r"\d[\d.,]*\s*(ms|MiB|GiB|steps|%)?", "#", regex=True)
    why = why.str.replace(r"(dominated by|no faster than) \S+", r"\1 …", regex=True)
    g = out.assign(why=why).groupby(["status", "why"], sort=False)
    return pd.DataFrame({"candidates": g.size(), "example": g["strategy"].first() + ": " + g["reason"].first()}
                        ).reset_index()


def fig_front(table: pd.DataFrame) -> go.Figure:
    """Latency vs weighted lag of every simulated candidate, memory per GPU as colour, front circled."""
    sim = table[table["step_latency_s"].notna() & table["status"].isin(["recommended", "feasible", "too slow"])]
    ux, uy, um = unit_for("weighted_lag_steps"), unit_for("step_latency_s"), unit_for("peak_memory_bytes")
    fig = go.Figure()
    for status, symbol in (("recommended", "star"), ("feasible", "circle"), ("too slow", "x")):
        part = sim[sim["status"] == status]
        if part.empty:
            continue
        fig.add_scatter(x=part["weighted_lag_steps"] * ux.scale, y=part["step_latency_s"] * uy.scale, mode="markers",
                        name=status, text=part["strategy"], marker=dict(
                            symbol=symbol, size=14 if status == "recommended" else 8,
                            color=part["peak_memory_bytes"] * um.scale, colorscale="Viridis", showscale=True,
                            cmin=float(sim["peak_memory_bytes"].min() * um.scale),
                            cmax=float(sim["peak_memory_bytes"].max() * um.scale),
                            colorbar=dict(title=dict(text=um.title))),
                        customdata=part["peak_memory_bytes"] * um.scale,
                        hovertemplate=(f"%{{text}}<br>{ux.label} %{{x:.3f}} {ux.unit}<br>{uy.label} %{{y:.3f}} "
                                       f"{uy.unit}<br>{um.label} %{{customdata:.1f}} {um.unit}<extra>{status}</extra>"))
    front = table[table["on_front"]]
    if len(front):
        fig.add_scatter(x=front["weighted_lag_steps"] * ux.scale, y=front["step_latency_s"] * uy.scale,
                        mode="markers", name="Pareto front", hoverinfo="skip",
                        marker=dict(symbol="circle-open", size=16, color="black", line=dict(width=1.5)))
    fig.update_layout(title="Step latency vs staleness (colour: memory per GPU)",
                      legend=dict(orientation="h", y=-0.2), **_LAYOUT)
    fig.update_xaxes(title_text=ux.title)
    fig.update_yaxes(title_text=uy.title)
    return fig


def recommend_sections(rec: RecommendationView, *, robust: Any = None) -> list[Section]:
    """Sections of the recommend report: the answer (with its band and, when asked, the robust choice), the
    front, the search, every candidate. ``robust``: :func:`dicesim.robust.trust_ranked`'s result."""
    sc = rec.scenario
    best = rec.best
    head = (f"Recommended: {best['strategy']} ({best['reason']}), {unit_for('step_latency_s').show(best['step_latency_s'])}"
            f" ms per step" + (f", {best['speedup']:.2f}x over sync" if pd.notna(best.get("speedup")) else "") + "."
            if best is not None else "No candidate meets every limit; the exclusion table says what ruled each out.")
    search = (f"{len(rec.table)} candidates in {rec.n_classes} timing classes passed or failed the limits that need no "
              f"simulation; {rec.n_simulated} classes were simulated in {rec.rounds} rounds, the rest were ruled "
              "out by bounds (docs/exploration.md explains the search).")
    if rec.violations:
        search += (f" Warning: the order the bounds rely on failed for {len(rec.violations)} simulated pairs "
                   f"(e.g. {rec.violations[0][0]} slower than {rec.violations[0][1]}); rerun with --exhaustive.")
    sections = [Section(title="Recommendation", items=tuple(filter(None, (
        f"{sc.setup_label()}; limits: {rec.limits.describe()}.", head, *quality_notes(rec.table)))) + (ranking_table(rec),)),
        *_trust(robust),
        Section(title="Pareto front: latency vs staleness vs memory", items=(
            fig_front(rec.table),
            "No candidate on the front is beaten by another in step latency, weighted lag and memory per GPU "
            "together; candidates that do not fit their GPUs' memory are never on it (docs/memory.md).",
            front_table(rec))),
        Section(title="How the search went", items=(search, exclusion_table(rec)))]
    simulated = rec.table[rec.table["step_latency_s"].notna()]
    if len(simulated) > 1:
        sections.append(Section(title="Explore the simulated candidates", items=(
            explorer(simulated, filters=[c for c in ("scheme", "sync_layers", "cond_interval", "cond_policy",
                                                     "warmup_steps", "status") if c in simulated.columns],
                     color="scheme", element_id="recommend-explorer"),)))
    cols = ("strategy", "status", "step_latency_s", "weighted_lag_steps", "max_lag_steps", "peak_buffer_bytes",
            "peak_memory_bytes", "pred_fd_change", "reason")
    sections.append(Section(title="Every candidate", items=(_columns(rec.table, cols),)))
    return sections


def _trust(robust: Any) -> list[Section]:
    """How far to trust the answer: the top candidates' bands and order, the robust choice, the assumptions."""
    if robust is None:
        return []
    from dicesim.report.run_report import trust_section

    first = next(r for r in robust.runs if r.strategy == (robust.choice or robust.runs[0].strategy))
    items = [robust.verdict.sentence, *([robust.sentence] if robust.sentence else [])]
    bands = pd.DataFrame([{"strategy": r.strategy, "step_latency_s": r.summary["step_latency_s"],
                           "step_latency_low_s": r.summary.get("step_latency_low_s"),
                           "step_latency_high_s": r.summary.get("step_latency_high_s"),
                           **({"worst_shortfall_frac": robust.regret[r.strategy]} if robust.regret else {})}
                          for r in robust.runs])
    section = trust_section(first, sensitivity=robust.sensitivity)
    return [Section(title="How far to trust it", items=(*items, bands)), section]
