"""From one engine run to the numbers people ask for: latency, overlap, staleness, memory.

Definitions (per rank, then averaged over ranks unless said otherwise):

- step latency: time between consecutive step ends of the slowest rank;
- compute busy / comm busy: time the compute stream runs / at least one of the rank's
  collectives is in flight; overlap: both at once;
- exposed communication: the compute stream idle waiting for a collective (including
  waiting for other ranks to reach it);
- overlap_frac = overlap / comm busy; comm_frac = comm busy / run time;
- lags come from :func:`dicesim.plan.lag_table`; ``mean_lag`` averages over token-expert
  copies (kept copy weight 1, dropped copies top_k - 1); ``weighted_lag`` weights the kept
  and dropped copy by their router-score share (``top1_share``, cond policy);
- buffers: :func:`dicesim.plan.held_buffers_by_step` (every step end), rows from
  :func:`dicesim.plan.buffer_rows` with this rank's received rows, times the row bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd

from dicesim.limits import check_finite_figures
from dicesim.plan import Plan, buffer_rows, held_buffers_by_step, lag_table
from dicesim.sim.engine import COUNTERS, RawRun
from dicesim.sim.routing import TokenRouting, kept_share


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

    def summary(self) -> dict[str, Any]:
        """Headline numbers (seconds, bytes, fractions, steps of lag)."""
        return dict(self.totals)


def buffer_bytes_TW(plan: Plan, routing: TokenRouting, row_nbytes: int) -> np.ndarray:
    """Cross-step buffer bytes held by each rank at the end of each step, ``[T, W]``."""
    W = routing.placement.world_size
    recv = [routing.recv_rows_LTW(False), routing.recv_rows_LTW(True)]
    zeros = np.zeros(W, dtype=np.int64)
    out = np.zeros((plan.num_steps, W))
    for t, held in enumerate(held_buffers_by_step(plan)):
        total = np.zeros(W)
        for hb in held:
            rr = recv[hb.skip][hb.layer, hb.tok_step] if hb.tok_step >= 0 else zeros
            total += buffer_rows(hb, local_tokens=routing.tokens_per_rank, top_k=routing.top_k, recv_rows=rr)
        out[t] = total * row_nbytes
    return out


def lag_tables(plan: Plan, top_k: int, share_kept: float) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """Per (step, layer) lags, per-layer token-copy lag distribution, and the means."""
    lt = lag_table(plan)
    T, L = lt.kept.shape
    weighted = share_kept * lt.kept + (1.0 - share_kept) * lt.dropped
    steps, layers = np.meshgrid(np.arange(T), np.arange(L), indexing="ij")
    lags = pd.DataFrame({
        "step": steps.ravel(), "layer": layers.ravel(), "lag_kept": lt.kept.ravel(),
        "lag_dropped": lt.dropped.ravel(), "skip": lt.skip.ravel(), "weighted_lag": weighted.ravel(),
    })
    rows = []
    for l in range(L):
        vals = np.concatenate([lt.kept[:, l], lt.dropped[:, l]])
        wts = np.concatenate([np.ones(T), np.full(T, top_k - 1.0)])
        for lag in np.unique(vals):
            rows.append((l, int(lag), float(wts[vals == lag].sum() / wts.sum())))
    token_lags = pd.DataFrame(rows, columns=["layer", "lag", "copy_frac"])
    copy_mean = (lt.kept + (top_k - 1) * lt.dropped) / top_k
    means = {"mean_lag": float(copy_mean.mean()) if copy_mean.size else 0.0,
             "weighted_lag": float(weighted.mean()) if weighted.size else 0.0,
             "max_lag": float(lt.max_lag)}
    return lags, token_lags, means


def links_table(raw: RawRun, G: nx.DiGraph) -> pd.DataFrame:
    """Per directed link: bytes carried, busy time, busy fraction and mean utilisation of the run."""
    total = raw.total_s if raw.total_s > 0 else float("nan")
    rows = []
    for s in raw.link_stats:
        u, v = s["link"]
        bw = float(G.edges[u, v]["bw_Bps"])
        rows.append((u, v, s["link_class"], bw, s["nbytes"], s["busy_s"], s["busy_s"] / total,
                     s["nbytes"] / (bw * total)))
    return pd.DataFrame(rows, columns=["src", "dst", "link_class", "bw_Bps", "nbytes", "busy_s",
                                       "busy_frac", "utilisation"])


def build_result(raw: RawRun, *, plan: Plan, routing: TokenRouting, row_nbytes: int, graph: nx.DiGraph,
                 label: str = "", meta: dict[str, Any] | None = None) -> SimResult:
    """Assemble the :class:`SimResult` of one engine run."""
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
    buf_TW = buffer_bytes_TW(plan, routing, row_nbytes)
    tot_WK = cum[:, -1, :] if T else np.zeros((W, len(COUNTERS)))
    comp_W = tot_WK[:, k["compute_busy_s"]]
    comm_W = tot_WK[:, k["comm_busy_s"]]
    per_rank = pd.DataFrame({
        "rank": np.arange(W), "end_s": raw.step_end_WT[:, -1], "compute_busy_s": comp_W, "comm_busy_s": comm_W,
        "overlap_s": tot_WK[:, k["overlap_s"]], "exposed_comm_s": tot_WK[:, k["exposed_comm_s"]],
        "host_gap_s": tot_WK[:, k["host_gap_s"]], "peak_buffer_bytes": buf_TW.max(axis=0),
    })
    buffers = pd.DataFrame({
        "step": np.repeat(np.arange(T), W), "rank": np.tile(np.arange(W), T), "nbytes": buf_TW.ravel(),
    })
    share = kept_share(plan.strategy.kept_copy(routing.top_k), routing.top1_share)
    lags, token_lags, lag_means = lag_tables(plan, routing.top_k, share)
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
                     meta=dict(meta or {}))
