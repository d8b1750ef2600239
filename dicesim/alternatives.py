"""What ``dicesim recommend`` weighs besides the expert-parallel modifier space: the other families'
presets and data parallelism, and whether each candidate fits its GPUs' memory.

- :func:`alternative_presets`: every family's comparison presets (:data:`dicesim.strategy.COMPARE_DEFAULT`)
  that the modifier space cannot produce: data parallelism and the other families' (sequence
  parallelism and DistriFusion once that family is built in). Each is a timing class of its own,
  unordered against the others (:func:`alternative_class`), simulated unless screened out;
- :func:`alternative_rows`: their plan-derived metrics, as the screening computes them for the
  modifier space (lags, held buffers, predicted quality);
- :func:`memory_columns`: ``peak_memory_bytes``, ``memory_margin_bytes`` and ``fits`` per candidate
  (docs/memory.md). A candidate that does not fit is screened out with what it needs.

Memory of the modifier space's candidates: they share the layout, the workload and the
collectives, so each is the base of the scenario's layout (weights, working set, runtime) plus
its held buffers and their allocator slack, which equals :func:`dicesim.plan.memory.estimate_memory`
wherever the fullest rank's held buffers and working set peak on the same rank (every rank alike
under expected routing).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import numpy as np

from dicesim.plan.footprint import RUNTIME
from dicesim.plan.memory import MemoryEstimate, gib
from dicesim.plan.staleness import kept_share
from dicesim.scenario import Scenario, strategy_refusal
from dicesim.search_space import TimingClass, lag_metrics
from dicesim.strategy import COMPARE_DEFAULT, make_strategy


def alternative_presets(names: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """``names`` (default: every family's comparison presets) that are not expert-parallel
    strategies with an asynchronous or synchronous exchange: data parallelism and other families."""
    out = []
    for name in COMPARE_DEFAULT if names is None else names:
        s = make_strategy(name)
        if type(s).family != "expert_parallel" or getattr(s, "scheme", "") == "data_parallel":
            out.append(name)
    return tuple(out)


def alternative_class(name: str) -> TimingClass:
    """A timing class compared with no other (a scheme of its own, no synchronous sets)."""
    return TimingClass(**{f.name: f"alternative:{name}" if f.name == "scheme" else (name,) if f.name == "fixed"
                          else frozenset() for f in fields(TimingClass)})


def alternative_rows(scenario: Scenario, names: tuple[str, ...], quality: Any) -> list[dict[str, Any]]:
    """Screening rows of the alternatives (status, reason and timing class filled by the caller); one the
    scenario cannot split (``ulysses`` where the heads do not split over the GPUs) is a ``cannot run`` row
    with its reason."""
    from dicesim.sim.api import prepare

    rows = []
    for name in names:
        strategy = make_strategy(name)
        why = strategy_refusal(scenario, strategy)
        if why:
            rows.append({"strategy": name, "scheme": getattr(strategy, "scheme", type(strategy).family),
                         "sync_layers": "", "cond_interval": 1, "cond_policy": "", "warmup_steps": 0,
                         "reason": why, "status": "cannot run", "_strategy": strategy})
            continue
        p = prepare(scenario.with_strategy(strategy))
        plan = p.plan
        held = plan.rules.memory_TW(plan, p.routing, p.spec.row_nbytes)
        buf = sum((np.asarray(v, dtype=float) for v in held.values()), np.zeros((plan.num_steps, 1)))
        share = kept_share(strategy.kept_copy(p.routing.top_k), p.routing.top1_share)
        est = p.memory()
        rows.append({"strategy": name, "scheme": getattr(strategy, "scheme", type(strategy).family),
                     "sync_layers": "", "cond_interval": 1, "cond_policy": "", "warmup_steps": 0,
                     **lag_metrics(plan, p.routing.top_k, share), "peak_buffer_bytes": float(buf.max()),
                     **quality(scenario.with_strategy(strategy)), **_memory(est), "_strategy": strategy})
    return rows


def _memory(est: MemoryEstimate) -> dict[str, Any]:
    margin = est.margin_bytes
    return {"peak_memory_bytes": est.total_bytes, "memory_margin_bytes": np.nan if margin is None else margin,
            "fits": est.fits}


def memory_base(scenario: Scenario) -> MemoryEstimate:
    """The memory every modifier-space candidate shares: the synchronous plan's estimate on the
    scenario's expert-parallel layout (no held buffers)."""
    from dicesim.sim.api import prepare

    return prepare(scenario.with_strategy(make_strategy("sync"))).memory()


def memory_columns(base: MemoryEstimate, peak_buffer_bytes: float) -> dict[str, Any]:
    """Memory of a modifier-space candidate holding ``peak_buffer_bytes`` of buffers: ``base`` plus
    the buffers and their allocator slack."""
    total = base.total_bytes + (1 + RUNTIME.slack_frac) * peak_buffer_bytes
    cap = base.capacity_bytes
    return {"peak_memory_bytes": total, "memory_margin_bytes": np.nan if cap is None else cap - total,
            "fits": None if cap is None else bool(cap >= total)}


def memory_reason(row: dict[str, Any]) -> str:
    """The screening reason of a candidate that does not fit ('' if it fits or the fit is unknown)."""
    margin = row.get("memory_margin_bytes")
    if margin is None or not margin < 0:
        return ""
    need = row["peak_memory_bytes"]
    return f"does not fit in GPU memory: needs {gib(need)} of {gib(need + margin)} per GPU"
