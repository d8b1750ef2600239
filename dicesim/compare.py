"""Strategies side by side on one scenario: the numbers, the files, the headline table.

``compare_strategies`` simulates each strategy on the same scenario (in parallel worker
processes when asked), writes each strategy's Perfetto trace as soon as it finishes and
keeps only the small tables plus a two-step slice of the events for the report, so memory
stays flat however many steps the run has. ``comparison_table`` is the one table
``dicesim compare`` prints: step latency, speedup over ``sync``, exposed communication,
overlap, staleness and stale-buffer memory.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from dicesim.errors import ConfigError
from dicesim.plan import LagTable
from dicesim.progress import NO_PROGRESS, Ticker
from dicesim.results import RunResult, result_from_sim, sim_metrics
from dicesim.scenario import Scenario, check_run_size, load_scenario, make_scenario, strategy_refusal
from dicesim.strategy import COMPARE_DEFAULT, make_strategy
from dicesim.trust import Assessment, Sensitivity, Verdict, assess_run, knobs_for, order_verdict, sensitivity

#: headline numbers of one run in the result schema (dicesim.results), SI units;
#: ``exposed_comm_s`` is for the whole run, ``exposed_comm_step_s`` the mean per step
METRIC_KEYS: tuple[str, ...] = (
    "step_latency_s", "steady_step_latency_s", "total_latency_s", "exposed_comm_s", "exposed_comm_step_s",
    "overlap_frac", "comm_frac", "mean_lag_steps", "weighted_lag_steps", "max_lag_steps", "peak_buffer_bytes",
    "peak_memory_bytes", "memory_capacity_bytes", "memory_margin_bytes", "pred_fd_change", "pred_deviation",
)
#: the memory verdict a result row carries beside the metrics (``fits``: bool, None when unknown)
VERDICT_KEYS: tuple[str, ...] = ("fits", "memory_note")
#: what a statistically sampled run (drawn routing: steps or alike groups sampled) adds to its row: how much
#: was simulated and the step latency's 95% sampling interval (not the error band, which is
#: ``step_latency_low_s`` / ``_high_s`` in result rows), so a sweep or study never hides that it sampled
SAMPLING_KEYS: tuple[str, ...] = ("steps_simulated", "groups_simulated", "sampled_step_low_s", "sampled_step_high_s")
#: columns of the comparison table, in print order
TABLE_COLUMNS: tuple[str, ...] = (
    "strategy", "step_latency_s", "step_latency_low_s", "step_latency_high_s", "speedup", "exposed_comm_step_s",
    "comm_frac", "overlap_frac", "mean_lag_steps", "weighted_lag_steps", "peak_buffer_bytes", "peak_memory_bytes",
    "fits", "pred_fd_change", "pred_deviation",
)
#: how traces are written: gzip-compressed Chrome JSON (Perfetto opens it), plain JSON, or not at all
TRACE_FORMATS: tuple[str, ...] = ("gz", "json", "none")


@dataclass(frozen=True, kw_only=True)
class StrategyRun:
    """One strategy's simulated run, reduced to what reports need.

    ``events`` holds only the steps in ``timeline_steps`` (the full table went to the trace);
    ``summary`` is ``result``'s scalar fields.
    """

    strategy: str
    scenario: Scenario
    result: RunResult
    summary: dict[str, Any]
    per_step: pd.DataFrame
    lags: pd.DataFrame
    links: pd.DataFrame
    events: pd.DataFrame | None
    timeline_steps: tuple[int, ...]
    trace_path: Path | None = None
    #: band, assumptions and facts of the run (:func:`dicesim.trust.assess_run`)
    assessment: Assessment | None = None


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """Every strategy's run on one scenario, the side-by-side table and the verdict on their order."""

    scenario: Scenario
    runs: tuple[StrategyRun, ...]
    table: pd.DataFrame
    verdict: Verdict | None = None
    #: default presets left out because the scenario cannot run them: (name, one-line reason)
    refused: tuple[tuple[str, str], ...] = ()

    @property
    def fastest_run(self) -> StrategyRun:
        """The verdict's fastest run (the fastest that fits its GPUs' memory), else the fastest."""
        by_name = {r.strategy: r for r in self.runs}
        if self.verdict is not None and self.verdict.fastest in by_name:
            return by_name[self.verdict.fastest]
        return min(self.runs, key=lambda r: float(r.summary["step_latency_s"]))


def fitting(runs: Sequence[StrategyRun]) -> tuple[StrategyRun, ...]:
    """The runs that may win: those not known to exceed their GPUs' memory (all of them when none fits)."""
    fit = tuple(r for r in runs if r.summary.get("fits") is not False)
    return fit or tuple(runs)


def resolve_scenario(path: str | Path | None = None, *, model: str | None = None, topology: str | None = None,
                     world_size: int | None = None, batch: int | None = None, image_size: int | None = None,
                     steps: int | None = None, strategy: str | None = None, profile: str | None = None,
                     routing: str | None = None, zipf_alpha: float | None = None,
                     histogram: str | None = None, dtype: str | None = None, num_experts: int | None = None,
                     placement: str | None = None, interference: bool | None = None) -> Scenario:
    """The scenario file at ``path`` (or the default study) with the given fields replaced.

    ``strategy`` is a preset name and replaces the whole strategy; ``zipf_alpha`` alone
    switches uniform routing to Zipf, ``histogram`` alone to the measured load it names;
    ``num_experts`` replaces the model's expert count (a what-if), ``placement`` how groups of
    GPUs are formed when there are more GPUs than experts.
    """
    base = load_scenario(path) if path else make_scenario()
    fields = base.model_dump()
    given = dict(model=model, topology=topology, world_size=world_size, batch=batch, image_size=image_size,
                 steps=steps, profile=profile, dtype=dtype, placement=placement,
                 interference=interference)
    fields.update({k: v for k, v in given.items() if v is not None})
    if model is not None and base.num_experts is not None:
        fields["num_experts"] = None  # the file's expert count belonged to its model
    if num_experts is not None:
        fields["num_experts"] = num_experts
    if strategy is not None:
        fields["strategy"] = make_strategy(strategy)
    if histogram is not None:
        fields["routing"] = {**fields["routing"], "kind": routing or "histogram", "histogram": histogram}
    elif routing is not None or zipf_alpha is not None:
        kind = routing or ("zipf" if fields["routing"]["kind"] == "uniform" else fields["routing"]["kind"])
        fields["routing"] = {**fields["routing"], "kind": kind,
                             **({"alpha": zipf_alpha} if zipf_alpha is not None else {})}
    return make_scenario(**fields)


def predicted_quality(scenario: Scenario, lags: LagTable | None = None) -> dict[str, Any]:
    """The quality model's predicted FD change and deviation of the scenario's strategy, and
    their basis (:mod:`dicesim.quality_model`; router top-1 share from the scenario).
    ``lags``: the simulated run's own lag table (before a run: its plan's)."""
    from dicesim.quality_model import quality_columns

    return quality_columns(scenario.strategy, scenario.preset().depth, scenario.steps, scenario.routing.top1_share,
                           lags=lags)


def headline_metrics(summary: dict[str, Any], per_step: pd.DataFrame | None = None) -> dict[str, Any]:
    """:data:`METRIC_KEYS` from a simulator summary (and per-step table for per-step figures), and
    the memory verdict (:data:`VERDICT_KEYS`) where the summary has one."""
    metrics = sim_metrics(summary, per_step)
    out: dict[str, Any] = {k: metrics[k] for k in METRIC_KEYS if k in metrics}
    out.update({k: summary[k] for k in VERDICT_KEYS if k in summary})
    out.update(sampling_facts(summary))
    return out


def sampling_facts(summary: dict[str, Any]) -> dict[str, Any]:
    """:data:`SAMPLING_KEYS` of a sampled run's simulator summary (its totals name the sampling
    interval ``step_latency_low_s`` / ``_high_s``); empty for a run simulated whole."""
    counts = {k: int(summary[k]) for k in ("steps_simulated", "groups_simulated") if k in summary}
    if not counts:
        return {}
    return {**counts, "sampled_step_low_s": float(summary["step_latency_low_s"]),
            "sampled_step_high_s": float(summary["step_latency_high_s"])}


def default_timeline_steps(steps: int) -> tuple[int, ...]:
    """Two steady-state steps to draw: 2 and 3 (past the synchronous warm-up), or the last two."""
    if steps >= 4:
        return (2, 3)
    return tuple(range(max(steps - 2, 0), steps))


def trace_stem(strategy: str) -> str:
    """A file-name-safe stem for a strategy label (``dice*`` -> ``dice_``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", strategy).lstrip(".") or "run"


def run_strategy(scenario: Scenario, *, trace_dir: str | Path | None = None,
                 timeline_steps: Sequence[int] = (), record: bool = True, trace_format: str = "gz",
                 accuracy: str | Path | None = None, sample_steps: bool = True) -> StrategyRun:
    """Simulate ``scenario``; write its trace to ``trace_dir`` (if given and ``trace_format`` is not
    ``none``); keep a timeline slice; assess the run (band, assumptions, facts), its band from the
    accuracy file ``accuracy`` (default: the built-in one). ``sample_steps``: with drawn routing, simulate
    a sample of the steady steps and predict the rest with an interval (:mod:`dicesim.sim.stepsample`;
    the default; False: every step)."""
    from dicesim.evidence import load_evidence

    from dicesim.sim.api import resolve_profile, simulate
    from dicesim.topology import get_topology
    from dicesim.trace import TraceMeta, write_trace

    if trace_format not in TRACE_FORMATS:
        raise ConfigError("--traces", f"unknown trace format {trace_format!r}", TRACE_FORMATS)
    if trace_format == "none":
        trace_dir = None
    want_events = record and (trace_dir is not None or bool(timeline_steps))
    if want_events:
        check_run_size(scenario, record=True)
    G = get_topology(scenario.topology)
    profile = resolve_profile(None, scenario, G)
    result = simulate(scenario, graph=G, profile=profile, record=want_events,
                      sample_steps=None if sample_steps else 0)
    events = result.events if want_events else None
    name = scenario.strategy.name
    summary = result.summary()
    assessment = assess_run(scenario, G, profile, summary, result.links, evidence=load_evidence(accuracy))
    run_result = result_from_sim(scenario, {**summary, **predicted_quality(scenario, result.lag_table),
                                            "profile": result.meta["profile"],
                                            "profile_basis": result.meta["profile_basis"],
                                            "interference": scenario.interference, "run_facts": assessment.facts.sentences()},
                                 result.per_step, error_band=assessment.band, assumptions=assessment.assumptions)
    trace_path = None
    if events is not None and trace_dir is not None:
        # the record in the metadata makes the trace file a result file too (dicesim results table)
        meta = TraceMeta(source="sim", scenario=scenario.model_dump(mode="json"), strategy=name,
                         world_size=scenario.world_size, model=scenario.model,
                         extra={**{k: v for k, v in result.meta.items() if k != "scenario"},
                                "result": json.loads(run_result.to_json())})
        trace_path = write_trace(events, meta, trace_dir, trace_stem(name), gzip_json=trace_format == "gz")["json"]
    if events is not None:
        events = events[events["step"].isin(list(timeline_steps))].reset_index(drop=True)
    return StrategyRun(strategy=name, scenario=scenario, result=run_result, summary=run_result.row(),
                       per_step=result.per_step,
                       lags=result.lags, links=result.links, events=events,
                       timeline_steps=tuple(timeline_steps), trace_path=trace_path, assessment=assessment)


def _run_one(args: tuple) -> StrategyRun:
    scenario, trace_dir, steps, record, trace_format, accuracy = args
    return run_strategy(scenario, trace_dir=trace_dir, timeline_steps=steps, record=record, trace_format=trace_format,
                        accuracy=accuracy)


def comparison_table(runs: Sequence[StrategyRun], sync_step_latency_s: float) -> pd.DataFrame:
    """One row per strategy with :data:`TABLE_COLUMNS`; ``speedup`` = sync latency / latency."""
    rows = []
    for run in runs:
        row: dict[str, Any] = {"strategy": run.strategy}
        row.update({k: run.summary.get(k, math.nan) for k in TABLE_COLUMNS[1:] if k != "speedup"})
        lat = float(run.summary["step_latency_s"])
        row["speedup"] = sync_step_latency_s / lat if lat > 0 else math.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def compare_strategies(scenario: Scenario, strategies: Sequence[str] | None = None, *,
                       trace_dir: str | Path | None = None, workers: int = 1, record: bool = True,
                       timeline_steps: Sequence[int] | None = None, ticker: Ticker = NO_PROGRESS,
                       trace_format: str = "gz", accuracy: str | Path | None = None) -> Comparison:
    """Simulate every strategy preset in ``strategies`` on ``scenario``, in ``workers`` processes.

    ``strategies`` None: every family's comparison presets (:data:`COMPARE_DEFAULT`), less those the scenario
    cannot split (:func:`~dicesim.scenario.strategy_refusal`: ``ulysses`` where the heads do not split over the
    GPUs), named with their reason in ``refused`` and the verdict; a preset named here that cannot run fails.

    A ``sync`` run is added as the speedup baseline when it is not among ``strategies``
    (it is then not part of the table). Traces go to ``trace_dir/<strategy>.trace.json.gz``
    (``trace_format``: ``gz``, ``json`` or ``none``). ``ticker`` hears of each strategy simulated;
    ``accuracy``: the accuracy file the bands read (default: the built-in one).
    """
    refused: list[tuple[str, str]] = []
    if strategies is None:
        for n in COMPARE_DEFAULT:
            why = strategy_refusal(scenario, make_strategy(n))
            if why:
                refused.append((n, why))
        strategies = [n for n in COMPARE_DEFAULT if n not in dict(refused)]
    names = list(dict.fromkeys(s.strip() for s in strategies if s.strip()))
    if not names:
        raise ConfigError("strategies", "needs at least one strategy", COMPARE_DEFAULT)
    steps = tuple(default_timeline_steps(scenario.steps) if timeline_steps is None else timeline_steps)
    if record:
        check_run_size(scenario, record=True)  # here, not in a worker: the error must reach the CLI
    jobs = [(scenario.with_strategy(make_strategy(n)), trace_dir, steps, record, trace_format, accuracy)
            for n in names]
    if "sync" not in names:
        jobs.append((scenario.with_strategy(make_strategy("sync")), None, (), False, trace_format, accuracy))
    ticker.expect(len(jobs))
    runs = []
    with ExitStack() as stack:
        if workers > 1 and len(jobs) > 1:
            pool = stack.enter_context(ProcessPoolExecutor(max_workers=min(workers, len(jobs))))
            done = pool.map(_run_one, jobs)
        else:
            done = map(_run_one, jobs)
        for run in done:  # in job order
            runs.append(run)
            ticker.advance()
    baseline = next(r for r in runs if r.strategy == "sync")
    shown = tuple(runs[: len(names)])
    sync_s = float(baseline.summary["step_latency_s"])
    table = comparison_table(shown, sync_s)
    contenders = fitting(shown)
    verdict = order_verdict([(r.strategy, float(r.summary["step_latency_s"]), r.result.error_band)
                             for r in contenders], baseline_s=sync_s)
    left_out = [r.strategy for r in shown if r not in contenders]
    if left_out:  # a configuration that does not fit never wins (docs/memory.md)
        verdict = replace(verdict, sentence=f"{verdict.sentence} Left out, over GPU memory: {', '.join(left_out)}.")
    if refused:
        why = "; ".join(f"{n} ({r})" for n, r in refused)
        verdict = replace(verdict, sentence=f"{verdict.sentence} Left out, cannot run here: {why}.")
    return Comparison(scenario=scenario, runs=shown, table=table, verdict=verdict, refused=tuple(refused))


def runs_sensitivity(runs: Sequence[StrategyRun], *, workers: int = 1,
                     accuracy: str | Path | None = None) -> Sensitivity:
    """Vary the unmeasured parameters on the bottleneck of ``runs`` that fit their GPUs' memory (the union
    of their bottlenecks; the assumptions of the fastest) and simulate every run's strategy at each point
    (:func:`dicesim.trust.sensitivity`)."""
    from dicesim.evidence import load_evidence
    from dicesim.sim.api import resolve_profile
    from dicesim.sim.network.nccl import builtin_nccl_model
    from dicesim.topology import get_topology

    runs = fitting(runs)
    fastest = min(runs, key=lambda r: float(r.summary["step_latency_s"]))
    sc = fastest.scenario
    G = get_topology(sc.topology)
    profile = resolve_profile(None, sc, G)
    neck = tuple(dict.fromkeys(c for r in runs if r.assessment for c in r.assessment.bottleneck))
    assumptions = fastest.assessment.assumptions if fastest.assessment else ()
    knobs = knobs_for(assumptions, G, profile, builtin_nccl_model(), load_evidence(accuracy), neck)
    nominal = {r.strategy: float(r.summary["step_latency_s"]) for r in runs}
    return sensitivity(sc, {r.strategy: r.scenario.strategy for r in runs}, nominal, knobs, G, profile,
                       workers=workers)


def what_if_text(base: Scenario, scenario: Scenario, step_s: float) -> str:
    """How a what-if (``scenario`` against ``base``, the same strategy) moved the step latency, and why
    it did not when it did not; '' when nothing was changed or the base is not a valid scenario."""
    from dicesim.sim.api import simulate
    from dicesim.topology import get_topology
    from dicesim.trust import run_facts, what_if_changes, what_if_note

    changes = what_if_changes(base, scenario)
    if not changes:
        return ""
    try:
        base = make_scenario(**{**dict(base), "strategy": scenario.strategy})
    except ConfigError as exc:
        return f"What-if ({', '.join(changes)}): the scenario without it is not valid ({exc.one_line()})."
    base_s = float(simulate(base, record=False).summary()["step_latency_s"])
    return what_if_note(changes, run_facts(base, get_topology(base.topology)),
                        run_facts(scenario, get_topology(scenario.topology)), base_s, step_s)
