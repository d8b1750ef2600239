"""Report sections for one simulated run and for a strategy comparison.

Inputs are :class:`dicesim.compare.StrategyRun` / :class:`dicesim.compare.Comparison`
(plain tables, no simulator objects); outputs are :class:`~dicesim.report.html.Section`
lists for :func:`~dicesim.report.html.write_report`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from dicesim.report.figures import fig_lag_heatmap, fig_latency_bars, fig_link_utilisation, fig_timeline
from dicesim.report.html import Section

if TYPE_CHECKING:
    from dicesim.compare import Comparison, StrategyRun

_UTILISATION = ("Utilisation = bytes carried / (what collectives reach on the link x run time), per directed link: "
                "the one measure of the busiest link in every output.")
_SUMMARY_ROWS = ("step_latency_s", "total_latency_s", "exposed_comm_step_s", "comm_frac", "overlap_frac",
                 "mean_lag_steps", "weighted_lag_steps", "max_lag_steps", "peak_buffer_bytes",
                 "peak_memory_bytes", "memory_capacity_bytes", "pred_fd_change", "pred_deviation")


def link_name(src: object, dst: object) -> str:
    """One link's readable name, as :func:`link_frame` writes it (``src→dst``)."""
    return f"{src}→{dst}"


def link_frame(links: pd.DataFrame) -> pd.DataFrame:
    """The links table with a readable ``link`` name (``src→dst``) and mean bandwidth while busy."""
    df = links.copy()
    if "link" not in df.columns and {"src", "dst"} <= set(df.columns):
        df.insert(0, "link", df["src"].astype(str) + "→" + df["dst"].astype(str))
    if {"nbytes", "busy_s"} <= set(df.columns):
        busy = df["busy_s"].to_numpy(dtype=float)
        df["mean_bw_Bps"] = [n / b if b > 0 else 0.0 for n, b in zip(df["nbytes"].to_numpy(dtype=float), busy)]
    return df


def busiest_links(links: pd.DataFrame, n: int = 8) -> pd.DataFrame:
    """The ``n`` busiest links (:func:`dicesim.sim.metrics.busiest_links`: by utilisation of what the
    link can carry) with name, class, utilisation, bytes and bandwidth columns."""
    from dicesim.sim.metrics import busiest_links as by_utilisation

    df = by_utilisation(link_frame(links), n)
    cols = [c for c in ("link", "link_class", "utilisation", "nbytes", "mean_bw_Bps", "eff_bw_Bps", "bw_Bps")
            if c in df.columns]
    return df[cols]


def summary_frame(summary: dict) -> pd.DataFrame:
    """A one-row frame of the headline numbers, in report order."""
    return pd.DataFrame([{k: summary[k] for k in _SUMMARY_ROWS if k in summary}])


def _quality_note(summary: dict) -> tuple[str, ...]:
    """Where the predicted quality columns come from (docs/quality.md)."""
    basis = summary.get("quality_basis")
    return (f"Predicted quality change (FD change, deviation from sync): {basis}.",) if basis else ()


def assumptions_frame(assumptions) -> pd.DataFrame:
    """The assumptions of a run as a table, bottleneck first."""
    rows = [a.model_dump() for a in sorted(assumptions, key=lambda a: not a.on_bottleneck)]
    return pd.DataFrame(rows, columns=["parameter", "value", "status", "source", "on_bottleneck"])


def trust_section(run: StrategyRun, *, verdict: str = "", what_if: str = "", sensitivity=None) -> Section:
    """Assumptions and accuracy: the verdict or band, the held-out errors it rests on, what the run does,
    the parameters it rests on with their status, the what-if and sensitivity notes."""
    from dicesim.trust import band_text

    band = run.result.error_band
    items: list = [verdict or f"Step latency {run.summary['step_latency_s'] * 1e3:.1f} ms, band {band_text(band)}."]
    if band is not None:
        items.append(f"Accuracy it rests on: {band.statement}. docs/trust.md explains the band, docs/accuracy.md the "
                     "held-out errors.")
    if run.assessment is not None:
        items.append("What the run does: " + " ".join(run.assessment.facts.sentences()))
    if what_if:
        items.append(what_if)
    if sensitivity is not None:
        items.append(sensitivity.verdict())
        if sensitivity.rows():
            items.append(pd.DataFrame(sensitivity.rows()))
    items.append(assumptions_frame(run.result.assumptions))
    return Section(title="Assumptions and accuracy", items=tuple(items))


def _profile_note(run: StrategyRun) -> str:
    """Which profile timed the run, what it rests on, and whether interference was switched off."""
    r = run.result
    basis = "measured: fitted from traces" if r.profile_basis == "measured" else "datasheet figures and stated assumptions"
    off = "; compute-communication interference switched off" if r.extra.get("interference") is False else ""
    return f"Hardware profile: {r.profile} ({basis}){off}."


def _lag_name(strategy) -> str:
    """What a strategy's lag heatmap shows: router-weighted expert-output lag, or its family's own lag."""
    subject = strategy.lag_subject
    return "Router-weighted lag" if subject == "expert output" else f"Lag of the {subject}"


def simulation_sections(run: StrategyRun, *, what_if: str = "", sensitivity=None) -> list[Section]:
    """Sections for ``dicesim simulate``: headline numbers, how far to trust them, timeline, staleness, links."""
    sc = run.scenario
    sections = [Section(title="Scenario", items=(
        f"{sc.label()}; strategy: {sc.strategy.describe()}; routing: {sc.routing.kind}.",
        _profile_note(run),
        *((f"Memory per GPU: {run.summary['memory_note']}.",) if run.summary.get("memory_note") else ()),
        summary_frame(run.summary),
        *_quality_note(run.summary),
    )), trust_section(run, what_if=what_if, sensitivity=sensitivity)]
    if run.events is not None and len(run.events):
        steps = ", ".join(str(s) for s in run.timeline_steps)
        sections.append(Section(title=f"Timeline of steps {steps}", items=(
            fig_timeline(run.events, steps=list(run.timeline_steps)),
            "The full run is in the Perfetto trace (open it at ui.perfetto.dev).",
        )))
    sections.append(Section(title="Staleness", items=(
        fig_lag_heatmap(run.lags, value="weighted_lag", title=f"{_lag_name(sc.strategy)} per layer and step"),
    )))
    if len(run.links):
        sections.append(Section(title="Interconnect", items=(
            fig_link_utilisation(link_frame(run.links)), _UTILISATION, busiest_links(run.links))))
    per_step = run.per_step.drop(columns=[c for c in ("end_s",) if c in run.per_step.columns])
    sections.append(Section(title="Per step", items=(per_step,)))
    return sections


def timeline_run(cmp: Comparison) -> StrategyRun:
    """The run whose timeline a comparison shows: dice if present, else the last async one."""
    by_name = {r.strategy: r for r in cmp.runs}
    if "dice" in by_name:
        return by_name["dice"]
    asyncs = [r for r in cmp.runs if r.scenario.strategy.is_async]
    return (asyncs or list(cmp.runs))[-1]


def comparison_sections(cmp: Comparison, *, what_if: str = "", sensitivity=None) -> list[Section]:
    """Sections for ``dicesim compare``: the verdict, the table, how far to trust it, latency bars, lag
    heatmaps on one colour scale, a timeline, links."""
    from dicesim.report.figures import lag_scale_max
    from dicesim.topology import machine_name

    sc = cmp.scenario
    top = lag_scale_max([r.lags for r in cmp.runs], "weighted_lag")
    fastest = cmp.fastest_run
    verdict = cmp.verdict.sentence if cmp.verdict else ""
    sections = [
        Section(title="Scenario", items=(
            f"{sc.model} on {sc.world_size} GPUs ({machine_name(sc.topology)}), batch {sc.batch} per GPU, "
            f"{sc.image_size} px, {sc.steps} steps, routing {sc.routing.kind}"
            + "".join(f", {o}" for o in sc.overrides()) + ". Speedup is over the synchronous baseline.",
            *((_profile_note(cmp.runs[0]),) if cmp.runs else ()),
            *([verdict] if verdict else []),
        )),
        Section(title="Strategies side by side", items=(fig_latency_bars(cmp.table), cmp.table,
                                                        *_quality_note(cmp.runs[0].summary if cmp.runs else {}))),
        trust_section(fastest, verdict=verdict, what_if=what_if, sensitivity=sensitivity),
        Section(title="Staleness per layer and step", items=tuple(
            fig_lag_heatmap(r.lags, value="weighted_lag", zmax=top,
                            title=f"{r.strategy}: {_lag_name(r.scenario.strategy).lower()}")
            for r in cmp.runs) + ("All maps share one colour scale: the same colour is the same lag.",)),
    ]
    tl = timeline_run(cmp)
    if tl.events is not None and len(tl.events):
        steps = ", ".join(str(s) for s in tl.timeline_steps)
        sections.append(Section(title=f"Timeline: {tl.strategy}, steps {steps}", items=(
            fig_timeline(tl.events, steps=list(tl.timeline_steps)),
            "Each strategy's full run is in <strategy>.trace.json (open it at ui.perfetto.dev).",
        )))
    links = [link_frame(r.links).assign(strategy=r.strategy) for r in cmp.runs if len(r.links)]
    if links:
        both = pd.concat(links, ignore_index=True)
        sections.append(Section(title="Link utilisation", items=(
            fig_link_utilisation(both, color="strategy", top=16), _UTILISATION)))
    return sections
