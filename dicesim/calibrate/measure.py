"""Headline numbers of a traced run, defined exactly as the simulator's metrics define them.

Per rank, step ``t`` ends at the end of its last compute-track event of that step; step
latency is the time between consecutive step ends of the slowest rank (as
:mod:`dicesim.sim.metrics`). Step 0 (warm-up: first-call allocations, and a synchronous
step for every asynchronous strategy) is left out of the means on both sides.

- exposed communication: time the compute track spends in ``wait`` events plus the host
  work right around each count exchange (calibration charges that work to the exchange,
  see :mod:`dicesim.calibrate.timeline`), mean over ranks; ``waits_s`` is the waits alone;
- communication busy: union of the rank's collectives in service (ready-to-done, see
  :func:`dicesim.calibrate.timeline.collective_instances`);
- overlap: communication busy time during which a compute op runs, over communication busy.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dicesim.calibrate.runs import TraceRun
from dicesim.calibrate.timeline import (
    inflight_union,
    wait_neighbours,
    collective_instances,
)
from dicesim.sim.metrics import SimResult

FIRST_STEP = 1  # steps before this are warm-up on both sides


def _union_len(s: np.ndarray, e: np.ndarray, lo: float, hi: float) -> float:
    return float(np.clip(np.minimum(e, hi) - np.maximum(s, lo), 0.0, None).sum())


def measured_metrics(run: TraceRun, instances: pd.DataFrame | None = None) -> dict[str, float]:
    """Mean step latency, exposed communication per step, overlap and comm fractions of a trace."""
    ev = run.events
    track = ev[(ev["stream"] == "compute") & ev["kind"].isin(("compute", "wait")) & (ev["step"] >= 0)]
    ends = track.groupby(["step", "rank"])["end_us"].max().unstack("rank")
    end_T = ends.max(axis=1).to_numpy() / 1e6
    steps = ends.index.to_numpy()
    lat_T = np.diff(end_T)  # latency of steps[1:]
    keep = steps[1:] >= FIRST_STEP
    lat = lat_T[keep]
    t_lo = float(end_T[list(steps).index(FIRST_STEP - 1)]) if FIRST_STEP - 1 in steps else float(end_T[0])
    t_hi = float(end_T[-1])
    waits = track[(track["kind"] == "wait") & (track["step"] >= FIRST_STEP)]
    W = run.world_size
    nsteps = max(len(lat), 1)
    waits_s = float((waits["end_us"] - waits["start_us"]).sum() / 1e6 / W / nsteps)
    count_host = sum((w[0] - w[2]) + (w[3] - w[1]) for k, w in wait_neighbours(run.events).items()
                     if k[1] == "counts" and w[0] >= t_lo)
    exposed = waits_s + count_host / W / nsteps
    inst = collective_instances(run) if instances is None else instances
    comm_busy = overlap = 0.0
    if len(inst):
        for r, (s, e) in inflight_union(inst).items():
            busy = _union_len(s, e, t_lo, t_hi)
            ops = track[(track["rank"] == r) & (track["kind"] == "compute")]
            for os_, oe in zip(ops["start_us"].to_numpy() / 1e6, ops["end_us"].to_numpy() / 1e6):
                overlap += _union_len(s, e, max(os_, t_lo), min(oe, t_hi))
            comm_busy += busy
    span = (t_hi - t_lo) * W
    return {"step_latency_s": float(lat.mean()) if len(lat) else float("nan"),
            "exposed_comm_s": exposed, "waits_s": waits_s,
            "overlap_frac": overlap / comm_busy if comm_busy > 0 else 0.0,
            "comm_frac": comm_busy / span if span > 0 else 0.0}


def simulated_metrics(res: SimResult) -> dict[str, float]:
    """The same numbers from a :class:`~dicesim.sim.metrics.SimResult` (steps >= FIRST_STEP)."""
    ps = res.per_step[res.per_step["step"] >= FIRST_STEP]
    comm = float(ps["comm_busy_s"].sum())
    lat = float(ps["latency_s"].sum())
    return {"step_latency_s": float(ps["latency_s"].mean()),
            "exposed_comm_s": float(ps["exposed_comm_s"].mean()),
            "overlap_frac": float(ps["overlap_s"].sum() / comm) if comm > 0 else 0.0,
            "comm_frac": comm / lat if lat > 0 else 0.0}
