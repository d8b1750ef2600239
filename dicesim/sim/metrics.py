"""From one engine run to the numbers people ask for: latency, overlap, staleness, memory.

Definitions (per rank, then averaged over ranks unless said otherwise):

- step latency: time between consecutive step ends of the slowest rank;
- compute busy / comm busy: time the compute stream runs / at least one of the rank's
  collectives is in flight; overlap: both at once;
- exposed communication: the compute stream idle waiting for a collective (including
  waiting for other ranks to reach it);
- overlap_frac = overlap / comm busy; comm_frac = comm busy / run time;
- lags: the run's plan's own lag table (derived once, :attr:`dicesim.plan.Plan.lags`), as
  figures by :mod:`dicesim.plan.staleness` (``mean_lag`` over token-expert copies,
  ``weighted_lag`` by router-score share: ``top1_share`` and the cond policy);
- buffers: the run's held buffers (:attr:`dicesim.plan.Plan.held`) in bytes per rank and step,
  from the strategy family's memory (:meth:`dicesim.plan.PlanFamily.memory_TW`, every holder it
  names summed);
- memory per GPU: :class:`dicesim.plan.memory.MemoryEstimate` (weights, activations, held
  buffers, runtime) against the GPU's capacity: ``peak_memory_bytes``, ``fits``,
  ``memory_margin_bytes``, ``memory_by_holder`` (docs/memory.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd

from dicesim.limits import check_finite_figures
from dicesim.plan import LagTable, Plan
from dicesim.plan.memory import MemoryEstimate
from dicesim.plan.staleness import kept_share, lag_frames
from dicesim.sim.engine.runspec import COUNTERS, RawRun
from dicesim.sim.costs.routing import TokenRouting


@dataclass(frozen=True)
class SimResult:
    """One simulated run. Tables are pandas DataFrames; :meth:`summary` gives the headline numbers."""

    label: str
    totals: dict[str, Any]
    per_step: pd.DataFrame
    per_rank: pd.DataFrame
    lags: pd.DataFrame
    token_lags: pd.DataFrame
    buffers: pd.DataFrame
    links: pd.DataFrame
    events: pd.DataFrame | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    #: the run's own lag table (what the quality model reads after the run)
    lag_table: LagTable | None = None
    #: memory per GPU and the verdict against the GPU's (docs/memory.md)
    memory: MemoryEstimate | None = None

    def summary(self) -> dict[str, Any]:
        """Headline numbers (seconds, bytes, fractions, steps of lag) and the memory verdict."""
        return {**self.totals, **(self.memory.totals() if self.memory is not None else {})}


def links_table(raw: RawRun, G: nx.DiGraph) -> pd.DataFrame:
    """Per directed link: line rate (``bw_Bps``) and what collectives reach on it (``eff_bw_Bps``), bytes
    carried, busy time and fraction (some flow draining), and ``utilisation``: bytes carried / (reachable
    bandwidth x run time), the share of what the link could have carried (what "busiest" ranks by:
    :func:`busiest_links`)."""
    total = raw.total_s if raw.total_s > 0 else float("nan")
    rows = []
    for s in raw.link_stats:
        u, v = s["link"]
        bw = float(G.edges[u, v]["bw_Bps"])
        eff = float(s.get("eff_bw_Bps", bw))
        rows.append((u, v, s["link_class"], bw, eff, s["nbytes"], s["busy_s"], s["busy_s"] / total,
                     s["nbytes"] / (eff * total)))
    return pd.DataFrame(rows, columns=["src", "dst", "link_class", "bw_Bps", "eff_bw_Bps", "nbytes", "busy_s",
                                       "busy_frac", "utilisation"])


def busiest_links(links: pd.DataFrame, n: int | None = None) -> pd.DataFrame:
    """The links by ``utilisation`` (bytes carried / (reachable bandwidth x run time)), highest first: the
    one definition of "busiest" every output uses. ``busy_frac`` is not it: under max-min sharing every
    link a flow crosses counts as busy while the flow drains, bottleneck or not."""
    out = links.sort_values(["utilisation", "nbytes"], ascending=False, kind="stable")
    return (out if n is None else out.head(n)).reset_index(drop=True)


def build_result(raw: RawRun, *, plan: Plan, routing: TokenRouting, row_nbytes: int, graph: nx.DiGraph,
                 label: str = "", meta: dict[str, Any] | None = None,
                 memory: MemoryEstimate | None = None, held_TW: dict[str, Any] | None = None) -> SimResult:
    """Assemble the :class:`SimResult` of one engine run (``memory``: its per-GPU memory; ``held_TW``:
    the family's ``memory_TW`` for this plan and routing when the caller has it already)."""
    T, W = plan.num_steps, routing.placement.world_size
    end_T = raw.step_end_WT.max(axis=0)
    lat_T = np.diff(np.concatenate([[0.0], end_T]))
    cum = raw.counters_WTK  # [W, T, K]
    per_WTK = np.diff(np.concatenate([np.zeros((W, 1, cum.shape[2])), cum], axis=1), axis=1)
    k = {name: i for i, name in enumerate(COUNTERS)}
    comp_WT = per_WTK[..., k["compute_busy_s"]]
    comm_WT = per_WTK[..., k["comm_busy_s"]]
    with np.errstate(divide="ignore", invalid="ignore"):
        per_step = pd.DataFrame({
            "step": np.arange(T), "latency_s": lat_T, "end_s": end_T,
            "compute_busy_s": comp_WT.mean(axis=0), "comm_busy_s": comm_WT.mean(axis=0),
            "overlap_s": per_WTK[..., k["overlap_s"]].mean(axis=0),
            "exposed_comm_s": per_WTK[..., k["exposed_comm_s"]].mean(axis=0),
            "host_gap_s": per_WTK[..., k["host_gap_s"]].mean(axis=0),
            "comm_frac": np.where(lat_T > 0, comm_WT.mean(axis=0) / lat_T, 0.0),
        })
    held = held_TW if held_TW is not None else plan.rules.memory_TW(plan, routing, row_nbytes)  # every holder, summed
    buf_TW = sum((np.asarray(v, dtype=float) for v in held.values()), np.zeros((T, W)))
    tot_WK = cum[:, -1, :] if T else np.zeros((W, len(COUNTERS)))
    comp_W = tot_WK[:, k["compute_busy_s"]]
    comm_W = tot_WK[:, k["comm_busy_s"]]
    per_rank = pd.DataFrame({
        "rank": np.arange(W), "end_s": raw.step_end_WT[:, -1], "compute_busy_s": comp_W, "comm_busy_s": comm_W,
        "overlap_s": tot_WK[:, k["overlap_s"]], "exposed_comm_s": tot_WK[:, k["exposed_comm_s"]],
        "host_gap_s": tot_WK[:, k["host_gap_s"]], "peak_buffer_bytes": buf_TW.max(axis=0),
        **({"peak_memory_bytes": memory.total_W} if memory is not None else {}),
    })
    buffers = pd.DataFrame({
        "step": np.repeat(np.arange(T), W), "rank": np.tile(np.arange(W), T), "nbytes": buf_TW.ravel(),
    })
    share = kept_share(plan.strategy.kept_copy(routing.top_k), routing.top1_share)
    lags, token_lags, lag_means = _lag_frames(plan, routing.top_k, share)
    total = raw.total_s
    comm_sum = float(comm_W.sum())
    totals = {
        "total_latency_s": total,
        "step_latency_s": total / T if T else 0.0,
        "steady_step_latency_s": float(np.median(lat_T)) if T else 0.0,
        "compute_busy_s": float(comp_W.mean()),
        "comm_busy_s": float(comm_W.mean()),
        "exposed_comm_s": float(tot_WK[:, k["exposed_comm_s"]].mean()),
        "overlap_frac": float(tot_WK[:, k["overlap_s"]].sum() / comm_sum) if comm_sum > 0 else 0.0,
        "comm_frac": float(comm_W.mean() / total) if total > 0 else 0.0,
        **lag_means,
        "peak_buffer_bytes": float(buf_TW.max()) if buf_TW.size else 0.0,
        "collectives": raw.collectives,
    }
    check_finite_figures({**totals, **per_step.sum(numeric_only=True).to_dict()}, where=label or "simulation")
    return SimResult(label=label, totals=totals, per_step=per_step, per_rank=per_rank, lags=lags,
                     token_lags=token_lags, buffers=buffers, links=links_table(raw, graph), events=raw.events,
                     meta=dict(meta or {}), lag_table=plan.lags, memory=memory)


def _lag_frames(plan: Plan, top_k: int, share_kept: float) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """:func:`lag_frames` of ``plan``, derived once per plan and model routing constants (``Plan.derived``);
    each run gets its own copies, so a caller that edits its result's frames changes no other run's."""
    key = ("lag_frames", int(top_k), float(share_kept))
    lags, token_lags, means = plan.derived(key, lambda: lag_frames(plan.lags, top_k, share_kept))
    return lags.copy(), token_lags.copy(), dict(means)
