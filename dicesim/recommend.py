"""``dicesim recommend``: the strategies and modifiers that meet a set of limits, ranked, with reasons.

The search (docs/exploration.md has the full argument):

1. **Exact screening.** Every candidate of the :class:`~dicesim.search_space.SearchSpace`, and the
   presets outside it (data parallelism, the other families: :mod:`dicesim.alternatives`), gets
   its lags, held-buffer memory, memory per GPU (docs/memory.md) and predicted quality cost (the
   quality model, docs/quality.md) from its plan, without simulating. Candidates over the lag,
   memory or quality limits are out, and so are those that do not fit their GPUs' memory
   (status ``does not fit``, with what they need): they are never simulated, ranked or on the front.
2. **Timing classes.** Candidates with identical plans run identically; each class is
   simulated at most once.
3. **Branch and bound.** Classes are simulated in rounds along the partial order
   :func:`~dicesim.search_space.at_least_as_fast` (fastest first). Before a class is
   simulated, the slowest simulated class it is no faster than gives a lower bound on its
   latency. It is skipped when that bound already exceeds the latency target, or when a
   simulated, feasible candidate is at least as fast as the bound and no worse in lag,
   and memory than every member of the class (so no member could be recommended or
   be on the Pareto front). Skipped candidates are reported with the candidate that rules
   them out. ``exhaustive=True`` simulates every screened class instead; the test suite
   checks both give the same answer.

The answer: feasible candidates ranked by step latency (then lag, then memory per GPU), the Pareto
front of step latency vs router-weighted lag vs memory per GPU, and a one-line reason for
every other candidate. Predicted quality is a limit and a column, not an objective: the quality
model is a function of the router-weighted lag per half of the layers, which the front already
weighs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Optional

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dicesim.alternatives import (
    alternative_class, alternative_presets, alternative_rows, memory_base, memory_columns, memory_reason,
)
from dicesim.cluster import dask_client, map_jobs
from dicesim.collector import collector_paused
from dicesim.progress import NO_PROGRESS, Ticker
from dicesim.compare import predicted_quality
from dicesim.errors import ConfigError, config_error_from_pydantic
from dicesim.membudget import plan_workers, scenario_nbytes, usable_cpus
from dicesim.pareto import OBJECTIVES, SLACK, dominates, pareto_front
from dicesim.plan import PlanCache, PlanRefused
from dicesim.quality_model import covers
from dicesim.report.units import unit_for
from dicesim.results import QualityFn
from dicesim.scenario import Scenario
from dicesim.search_space import (
    SearchSpace,
    TimingClass,
    at_least_as_fast,
    candidates,
    class_metrics,
    timing_key,
)
from dicesim.strategy import ExpertParallelStrategy



class Limits(BaseModel):
    """What a recommendation must respect; None = no limit."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_lag_steps: Optional[float] = Field(None, ge=0)
    max_weighted_lag_steps: Optional[float] = Field(None, ge=0)
    max_buffer_bytes: Optional[float] = Field(None, ge=0)
    #: the "minimum predicted quality" limit, as the quality loss it allows: FD increase over sync
    max_fd_change: Optional[float] = Field(None, ge=0)
    max_step_latency_s: Optional[float] = Field(None, gt=0)

    def cheap_violation(self, row: dict[str, Any]) -> str:
        """The first limit ``row`` breaks that needs no simulation ('' if none)."""
        checks = (("max_lag_steps", self.max_lag_steps, "max lag", 1), ("weighted_lag_steps",
                  self.max_weighted_lag_steps, "weighted lag", 1), ("peak_buffer_bytes", self.max_buffer_bytes,
                  "peak buffer", 1), ("pred_fd_change", self.max_fd_change, "predicted FD change", 1))
        for col, limit, what, sense in checks:
            if limit is not None and sense * (row[col] - limit) > 0:
                return f"{what} {_show(col, row[col])} {'>' if sense > 0 else '<'} limit {_show(col, limit)}"
        return ""

    def describe(self) -> str:
        parts = [f"max lag <= {self.max_lag_steps:g} steps" if self.max_lag_steps is not None else "",
                 f"weighted lag <= {self.max_weighted_lag_steps:g} steps"
                 if self.max_weighted_lag_steps is not None else "",
                 f"buffers <= {_show('peak_buffer_bytes', self.max_buffer_bytes)} per GPU"
                 if self.max_buffer_bytes is not None else "",
                 f"predicted FD change <= {self.max_fd_change:g}" if self.max_fd_change is not None else "",
                 f"step latency <= {_show('step_latency_s', self.max_step_latency_s)}"
                 if self.max_step_latency_s is not None else ""]
        return ", ".join(p for p in parts if p) or "no limits"


def make_limits(**fields: object) -> Limits:
    try:
        return Limits(**fields)
    except ValidationError as exc:
        raise config_error_from_pydantic(exc, "limits") from None


def _show(col: str, value: float) -> str:
    u = unit_for(col)
    return f"{u.show(value)} {u.unit}".strip()


@dataclass(frozen=True, kw_only=True)
class Recommendation:
    """Every candidate with its status and reason, the ranking and the Pareto front."""

    scenario: Scenario
    limits: Limits
    table: pd.DataFrame  # one row per candidate
    n_classes: int
    n_simulated: int
    rounds: int
    violations: list[tuple[str, str]] = field(default_factory=list)
    #: every candidate's strategy by name (what a re-run or the sensitivity needs)
    strategies: dict[str, ExpertParallelStrategy] = field(default_factory=dict)

    @property
    def ranked(self) -> pd.DataFrame:
        ok = self.table[self.table["status"].isin(["recommended", "feasible"])]
        return ok.sort_values("rank", kind="stable").reset_index(drop=True)

    @property
    def front(self) -> pd.DataFrame:
        return self.table[self.table["on_front"]].sort_values("step_latency_s", kind="stable").reset_index(drop=True)

    @property
    def best(self) -> pd.Series | None:
        ranked = self.ranked
        return ranked.iloc[0] if len(ranked) else None


def screen(scenario: Scenario, space: SearchSpace, limits: Limits, *, quality: QualityFn | None = None,
           client: Any = None, plans: PlanCache | None = None) -> tuple[pd.DataFrame, list[TimingClass | None]]:
    """Steps 1 and 2: every candidate's plan-derived metrics, cheap-limit verdict and timing class
    (an index into the returned list of classes; None for a class the reference cannot run, whose
    candidates get status ``cannot run``). ``client``: a Dask client to spread the work; ``plans``:
    the search's plan cache (classes, quality model and simulations build each plan once)."""
    from dicesim.sim.api import prepare

    plans = plans if plans is not None else PlanCache()
    planned = quality is None  # the default: the quality model on the lags of the class's plan
    prep = prepare(scenario, plans=plans)
    L, T = scenario.preset().depth, scenario.steps
    cands = candidates(space, L)
    class_ids: dict[tuple, int] = {}
    reps: list[ExpertParallelStrategy] = []
    policies: list[dict[str, None]] = []
    for strategy, _ in cands:
        key = timing_key(strategy, L)
        if key not in class_ids:
            class_ids[key] = len(reps)
            reps.append(strategy)
            policies.append({})
        policies[class_ids[key]][strategy.cond_policy] = None
    jobs = [(s, tuple(p)) for s, p in zip(reps, policies)]
    plans.keep_at_least(len(reps) + 8)  # each class's plan stays for its quality and its simulation
    done = dict(map_jobs(partial(class_metrics, plans=plans), jobs, shared=(prep.routing, prep.spec.row_nbytes, L, T), client=client))
    # a refused class (the reference cannot run it) has no metrics, only the refusal
    classes = [None if isinstance(done[i], str) else done[i][0] for i in range(len(reps))]
    base = memory_base(scenario)
    rows = []
    for strategy, sync_label in cands:
        k = class_ids[timing_key(strategy, L)]
        row: dict[str, Any] = {
            "strategy": strategy.name, "scheme": strategy.scheme, "sync_layers": sync_label,
            "cond_interval": strategy.cond_interval,
            "cond_policy": strategy.cond_policy if strategy.cond_interval > 1 else "",
            "warmup_steps": strategy.effective_warmup, "timing_class": k,
        }
        if isinstance(done[k], str):
            rows.append({**row, "reason": done[k], "status": "cannot run", "_strategy": strategy})
            continue
        member = scenario.with_strategy(strategy)
        # members of a class have its representative's plan (timing_key), so its lags: one plan per class
        q = _planned_quality(member, plans, plan_of=reps[k]) if planned else quality(member)
        row.update(**done[k][2][strategy.cond_policy], peak_buffer_bytes=done[k][1], **q,
                   **memory_columns(base, done[k][1]))
        row["_strategy"] = strategy
        rows.append(row)
    quality = quality or partial(_planned_quality, plans=plans)
    for row in alternative_rows(scenario, alternative_presets(space.alternatives), quality):
        classes.append(alternative_class(row["strategy"]))
        rows.append({**row, "timing_class": len(classes) - 1})
    for row in rows:  # the limits first, then the GPUs' memory: what does not fit is never simulated
        if row.get("status") == "cannot run":
            continue
        row["reason"] = limits.cheap_violation(row)
        row["status"] = "over limit" if row["reason"] else "screened"
        if not row["reason"] and memory_reason(row):
            row["reason"], row["status"] = memory_reason(row), "does not fit"
    return pd.DataFrame(rows), classes


def _planned_quality(scenario: Scenario, plans: PlanCache, plan_of: Any = None) -> dict[str, Any]:
    """:func:`~dicesim.compare.predicted_quality` on the lags of the (same) plan kept in ``plans``;
    ``plan_of``: a strategy whose plan equals the scenario's (its timing class's representative)."""
    if not covers(scenario.strategy):
        return predicted_quality(scenario)
    try:
        plan = plans.get(plan_of if plan_of is not None else scenario.strategy, scenario.preset().depth,
                         scenario.steps)
    except PlanRefused:
        return predicted_quality(scenario)
    return predicted_quality(scenario, lags=plan.lags)


def _simulate_latency(scenario: Scenario, plans: PlanCache | None = None) -> dict[str, float]:
    from dicesim.compare import headline_metrics
    from dicesim.sim.api import simulate

    result = simulate(scenario, record=False, plans=plans)
    return headline_metrics(result.summary(), result.per_step)


def search(scenario: Scenario, space: SearchSpace, limits: Limits, *, quality: QualityFn | None = None,
           exhaustive: bool = False, workers: int | None = 0, scheduler: str | None = None, processes: bool = True,
           evaluate: Callable[[Scenario], dict[str, float]] | None = None,
           ticker: Ticker = NO_PROGRESS) -> Recommendation:
    """Run the search on ``scenario`` (its strategy is ignored), in this process (``workers=0``),
    on a LocalCluster of ``workers`` processes or on the Dask cluster at ``scheduler``.
    ``evaluate(scenario) -> metrics`` replaces the simulator (tests); ``ticker`` hears of each
    round's timing classes to simulate and of each one simulated. ``workers=None``: as many
    as the CPUs and the memory allow (:func:`dicesim.membudget.plan_workers`)."""
    if not scheduler:
        workers = plan_workers(workers, [scenario_nbytes(scenario, record=False)], jobs=usable_cpus())
    if workers <= 0 and not scheduler:
        # its plans (~10^4 actions each) stay here: no full collections rescanning them (dicesim/collector.py)
        with collector_paused():
            return _search(scenario, space, limits, quality, exhaustive, evaluate, None, ticker)
    with dask_client(workers=workers, scheduler=scheduler, processes=processes) as client:
        return _search(scenario, space, limits, quality, exhaustive, evaluate, client, ticker)


def _search(scenario: Scenario, space: SearchSpace, limits: Limits, quality: QualityFn | None, exhaustive: bool,
            evaluate: Callable[[Scenario], dict[str, float]] | None, client: Any, ticker: Ticker) -> Recommendation:
    plans = PlanCache()  # one per search: a plan is built once for its class, quality and simulation
    table, classes = screen(scenario, space, limits, quality=quality, client=client, plans=plans)
    evaluate = evaluate or partial(_simulate_latency, plans=plans)
    objectives = list(OBJECTIVES)
    cheap = [c for c in objectives if c != "step_latency_s"]
    members = {k: g.index.tolist() for k, g in table[table["status"] == "screened"].groupby("timing_class")}
    names = table["strategy"].tolist()
    values = {i: {c: float(table.at[i, c]) for c in cheap} for idxs in members.values() for i in idxs}
    latency: dict[int, dict[str, float]] = {}
    feasible_done: list[dict[str, float]] = []  # simulated candidates within every limit
    pruned: dict[int, str] = {}
    order = sorted(members, key=lambda k: (classes[k].rank(), k))
    # the order, once: the classes before each class (in ``order``) known to be at least as fast. A
    # strictly faster class ranks lower; of two classes each as fast as the other (equal sets, other
    # timing keys) the earlier one goes first: otherwise each waits for the other and none is ever ready
    faster = {k: [j for j in order[:i] if at_least_as_fast(classes[j], classes[k])] for i, k in enumerate(order)}
    rounds = 0
    # Progress: `ready` is never empty while classes are pending. The order is a preorder, so
    # among the pending classes some have no *strictly* faster pending class; classes that are
    # at least as fast as each other (equal order facts: with 1 or 2 steps many plans differ
    # but share their sync layers and steps) are ready together instead of waiting on each other
    # forever. Every round resolves all ready classes, so there are at most len(order) rounds.
    for _ in range(len(order) + 1):
        pending = [k for k in order if k not in latency and k not in pruned]
        if not pending:
            break
        # a class is ready when every class known to be at least as fast is resolved
        ready = [k for k in pending if all(j in latency or j in pruned for j in faster[k])]
        if not ready:  # pragma: no cover -- the first pending class in ``order`` always is
            raise RuntimeError("recommend: no timing class is ready (a cycle in the assumed order)")
        batch = []
        for k in ready:
            lower, bound_by = 0.0, ""
            for j in faster[k]:
                m = latency.get(j)
                if m is not None and m["step_latency_s"] > lower:
                    lower, bound_by = m["step_latency_s"], names[members[j][0]]
            if not exhaustive and limits.max_step_latency_s is not None and lower > limits.max_step_latency_s:
                pruned[k] = (f"bound: at least {_show('step_latency_s', lower)} (no faster than {bound_by}) > target "
                             f"{_show('step_latency_s', limits.max_step_latency_s)}")
                continue
            if not exhaustive:
                rival = _ruling_out([values[i] for i in members[k]], feasible_done, lower, objectives)
                if rival:
                    pruned[k] = (f"bound: dominated by {rival} (at least {_show('step_latency_s', lower)}, "
                                 f"no faster than {bound_by})")
                    continue
            batch.append(k)
        rounds += 1
        jobs = [(scenario.with_strategy(table.at[members[k][0], "_strategy"]),) for k in batch]
        ticker.expect(len(jobs))
        for i, metrics in map_jobs(evaluate, jobs, client=client):
            ticker.advance()
            k = batch[i]
            latency[k] = metrics
            if limits.max_step_latency_s is None or metrics["step_latency_s"] <= limits.max_step_latency_s:
                feasible_done += [{**values[i], "step_latency_s": metrics["step_latency_s"], "strategy": names[i]}
                                  for i in members[k]]
        feasible_done.sort(key=lambda r: r["step_latency_s"])
    return _finish(scenario, limits, table, members, latency, pruned, objectives, rounds, classes)


def _ruling_out(class_values: list[dict[str, float]], done: list[dict[str, Any]], lower: float,
                objectives: list[str]) -> str:
    """Name of a simulated feasible candidate (``done``, fastest first) that dominates every member
    of a class whose latency is at least ``lower``; '' if there is none."""
    if lower <= 0:
        return ""
    for d in done:
        if d["step_latency_s"] > lower * (1 + SLACK):
            break
        if all(dominates(d, {**v, "step_latency_s": lower}, objectives) for v in class_values):
            return str(d["strategy"])
    return ""


def _finish(scenario: Scenario, limits: Limits, table: pd.DataFrame, members: dict[int, list[int]],
            latency: dict[int, dict[str, float]], pruned: dict[int, str], objectives: list[str], rounds: int,
            classes: list[TimingClass | None]) -> Recommendation:
    table = table.copy()
    for col in ("step_latency_s", "exposed_comm_step_s", "speedup"):
        table[col] = np.nan
    # each column set once for every member (a .loc write per member and column cost ~1 s)
    cells: dict[str, dict[int, Any]] = {c: {} for c in ("step_latency_s", "exposed_comm_step_s", "status", "reason")}
    for k, m in latency.items():
        over = limits.max_step_latency_s is not None and m["step_latency_s"] > limits.max_step_latency_s
        why = (f"step latency {_show('step_latency_s', m['step_latency_s'])} > target "
               f"{_show('step_latency_s', limits.max_step_latency_s)}") if over else ""
        for idx in members[k]:
            cells["step_latency_s"][idx] = m["step_latency_s"]
            cells["exposed_comm_step_s"][idx] = m.get("exposed_comm_step_s", np.nan)
            cells["status"][idx], cells["reason"][idx] = ("too slow" if over else "feasible"), why
    for k, why in pruned.items():
        for idx in members[k]:
            cells["status"][idx], cells["reason"][idx] = "pruned", why
    for col, at in cells.items():
        if at:
            table.loc[list(at), col] = list(at.values())
    sync = table[(table["scheme"] == "sync") & table["step_latency_s"].notna()]
    if len(sync):
        table["speedup"] = float(sync["step_latency_s"].iloc[0]) / table["step_latency_s"]
    ok = table["status"] == "feasible"
    table["on_front"] = False
    if ok.any():
        front = pareto_front(table[ok], objectives)
        table.loc[table.index[ok][front], "on_front"] = True
    ranked = table[ok].sort_values(["step_latency_s", "weighted_lag_steps", "peak_memory_bytes"], kind="stable")
    table["rank"] = pd.array([pd.NA] * len(table), dtype="Int64")
    table.loc[ranked.index, "rank"] = np.arange(1, len(ranked) + 1)
    if len(ranked):
        table.loc[ranked.index[0], "status"] = "recommended"
    table["reason"] = [_reason(r, ranked) for _, r in table.iterrows()]
    violations = _violations(table, members, latency, classes)
    n_classes = len(members)
    return Recommendation(scenario=scenario, limits=limits, table=table.drop(columns=["_strategy"]),
                          n_classes=n_classes, n_simulated=len(latency), rounds=rounds, violations=violations,
                          strategies=dict(zip(table["strategy"], table["_strategy"])))


def _reason(row: pd.Series, ranked: pd.DataFrame) -> str:
    """Why a candidate won, placed where it did, or was excluded."""
    if row["status"] not in ("recommended", "feasible"):
        return str(row["reason"])
    best = ranked.iloc[0]
    front = " (on the Pareto front)" if row["on_front"] else ""
    if row["status"] == "recommended":
        return "fastest within the limits" + front
    slower = row["step_latency_s"] / best["step_latency_s"] - 1
    less = best["weighted_lag_steps"] - row["weighted_lag_steps"]
    mem = best["peak_memory_bytes"] - row["peak_memory_bytes"]
    gains = [f"{less:.2f} steps less weighted lag" if less > 1e-12 else "",
             f"{_show('peak_buffer_bytes', mem)} less memory per GPU" if mem > 0 else ""]
    trade = "; buys " + " and ".join(g for g in gains if g) if any(gains) else ""
    return f"#{int(row['rank'])}: {100 * slower:.1f} % slower than {best['strategy']}{trade}{front}"


def _violations(table: pd.DataFrame, members: dict[int, list[int]], latency: dict[int, dict[str, float]],
                classes: list[TimingClass | None]) -> list[tuple[str, str]]:
    """Simulated pairs where the assumed order failed (the faster-by-assumption class was slower)."""
    out = []
    for a in latency:
        for b in latency:
            if a != b and at_least_as_fast(classes[a], classes[b]) and (
                    latency[a]["step_latency_s"] > latency[b]["step_latency_s"] * (1 + 1e-6)):
                out.append((str(table.loc[members[a][0], "strategy"]), str(table.loc[members[b][0], "strategy"])))
    return out
