"""Collective fits: all-to-all latency and bandwidth, count-exchange latency, host issue cost.

The simulator times an all-to-all of one group as ``collective_base_s["all_to_all"]`` plus
the route latency plus the bytes of its busiest link drained at the link bandwidth (max-min
sharing; with one link class and a switch per rank, the busiest rank's sent or received
off-diagonal bytes). So the service times of the measured instances (see
:func:`dicesim.calibrate.timeline.collective_instances`) are fitted as
``alpha + max_link_nbytes / bw_Bps``: service times are averaged per run and size (a mean
step latency is made of mean collective times, stalls included), then fitted with an L1
loss over runs (the median run: one run slowed by other load on the machine must not set
the fit). Only collectives no compute overlaps are fitted when the runs have any: those of
synchronous layers (column ``sync_layer``), which the plan awaits at once. The others take
longer by however much their members' compute slowed them (``comm_interference``, fitted on
step latency by :mod:`dicesim.calibrate.fit_overlap`), which one latency for all would average in.
Count exchanges carry no payload worth the name: their latency is the median over runs of the
mean service time.
Host time around collectives is measured into op times (see :mod:`dicesim.calibrate.timeline`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from dicesim.calibrate.lsq import rel_errors, robust_nnls, weighted_median

DEFAULT_LINK_CLASS = "cpu-loopback"
STALL_FACTOR = 50.0


@dataclass(frozen=True, kw_only=True)
class CommFit:
    """Fitted collective parameters (seconds, bytes/s) and what they were fitted on."""

    link_class: str
    a2a_latency_s: float
    bw_Bps: float
    counts_latency_s: float
    n_a2a: int
    n_counts: int
    world_sizes: tuple[int, ...]
    nbytes_range: tuple[float, float]
    rel_err_median: float

    def a2a_time_s(self, max_link_nbytes: np.ndarray | float) -> np.ndarray:
        """Predicted service time of an all-to-all whose busiest link carries ``max_link_nbytes``."""
        return self.a2a_latency_s + np.asarray(max_link_nbytes, dtype=float) / self.bw_Bps


def _per_run(inst: pd.DataFrame, col: str, key: list[str], mean: bool) -> pd.DataFrame:
    """Mean (or median) of ``col`` per run (column ``trace``) and ``key``; ``n`` = instances."""
    df = inst if "trace" in inst.columns else inst.assign(trace="")
    med = df.groupby(key)[col].transform("median").abs()
    df = df[df[col] <= STALL_FACTOR * np.maximum(med, 1e-6)]
    return df.groupby(["trace"] + key, as_index=False).agg(**{col: (col, "mean" if mean else "median"),
                                                              "n": (col, "size")})


def fit_comm(instances: pd.DataFrame, *, link_class: str = DEFAULT_LINK_CLASS, mean: bool = True) -> CommFit | None:
    """Fit collective parameters from collective instances (None if there are none).

    ``mean``: average instances within a run (default) rather than take their median.
    """
    if instances is None or len(instances) == 0:
        return None
    inst = instances[instances["members"].map(len) > 1]
    a2a = inst[inst["name"].isin(("dispatch", "combine"))]
    cnt = inst[inst["name"] == "counts"]
    if a2a.empty:
        return None
    if "sync_layer" in a2a.columns and a2a["sync_layer"].any():
        a2a = a2a[a2a["sync_layer"]]
    a2a = _per_run(a2a, "service_s", ["name", "max_link_nbytes"], mean)
    x = a2a["max_link_nbytes"].to_numpy(dtype=float)
    y = a2a["service_s"].to_numpy(dtype=float)
    X = np.stack([np.ones_like(x), x], axis=1)
    if np.ptp(x) > 0:  # L1 over per-run means: the median run's behaviour
        alpha, beta = robust_nnls(X, np.maximum(y, 1e-9), weight_N=a2a["n"].to_numpy(), relative=False, l1=True)
    else:
        alpha, beta = float(np.median(y)), 0.0
    bw = 1.0 / beta if beta > 0 else 1e15  # no measurable size dependence: effectively infinite
    err = np.abs(rel_errors(alpha + x * beta, np.maximum(y, 1e-9)))
    if len(cnt):
        # unclipped: a rank that reaches its wait after the exchange finished measures < 0
        c = _per_run(cnt, "service_raw_s", ["name"], mean)["service_raw_s"].to_numpy(dtype=float)
        counts_lat = float(np.median(c))
    else:
        counts_lat = float(alpha)
    return CommFit(link_class=link_class, a2a_latency_s=float(alpha), bw_Bps=float(bw),
                   counts_latency_s=max(counts_lat, 0.0), n_a2a=len(y),
                   n_counts=len(cnt),
                   world_sizes=tuple(sorted({len(m) for m in inst["members"]})),
                   nbytes_range=(float(x.min()), float(x.max())), rel_err_median=weighted_median(err))
