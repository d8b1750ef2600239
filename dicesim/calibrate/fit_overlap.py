"""Communication slowed by compute (``comm_interference``), fitted on the step latency of async runs.

The simulator runs a rank's transfers ``1 + comm_interference`` times slower while the rank
computes (:mod:`dicesim.sim.network.linkscale`). Only collectives that overlap compute feel it, i.e.
those of asynchronous layers; their latency and bandwidth without it come from the
synchronous layers' collectives (:mod:`dicesim.calibrate.fit_comm`), and every op time from
:mod:`dicesim.calibrate.fit_compute`. What is left is one number, fitted here by least
squares on the relative step-latency error of the runs with asynchronous layers: every
other number is held, the simulator predicts each such configuration at a trial value, and
a bounded scalar search (a coarse grid, then Brent's method around its best point) finds
the minimum. ``sync`` and ``data_parallel`` runs cannot tell (no compute ever overlaps a
collective of theirs) and are left out.

Why not from the collectives' own durations (``duration = nominal + k x time a member computes
during it``, ``k = ci / (1 + ci)``, exact with two ranks in the simulator): on gloo an
overlapped collective's end is its completion callback, a Python function that waits for
the busy rank's interpreter lock, and the overlap itself grows with every stall of the
collective, so on measured runs that regression runs into any bound given to ``k``. The step
latency has neither problem, and it is what the simulator is asked to predict.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import networkx as nx
import numpy as np
from scipy.optimize import minimize_scalar

from dicesim.calibrate.measure import measured_metrics, simulated_metrics
from dicesim.calibrate.predict import simulate_run
from dicesim.calibrate.runs import TraceRun, config_key
from dicesim.plan import build_plan
from dicesim.plan.expert.kinds import MoEAction
from dicesim.sim.costs.profile import HardwareProfile

MAX_SLOWED_SHARE = 0.9  # k = ci / (1 + ci) searched in [0, this]: ci <= 9
GRID = 10  # coarse grid points over k before the local search
K_TOL = 1e-6  # absolute tolerance on k of the local search


@dataclass(frozen=True, kw_only=True)
class OverlapFit:
    """Fitted ``comm_interference`` and the step-latency errors with and without it."""

    comm_interference: float
    n_configs: int
    rel_err_rms_at_zero: float
    rel_err_rms: float


def _has_async_layers(run: TraceRun) -> bool:
    if run.strategy is None or run.world_size < 2 or run.ep_size < 2:
        return False
    plan = build_plan(run.strategy, run.preset.depth, run.steps)
    return any(a.kind == MoEAction.ISSUE_DISPATCH for _, acts in plan for a in acts)


def overlapped_configs(runs: list[TraceRun]) -> list[tuple[TraceRun, float]]:
    """One (run, measured step latency) per configuration with asynchronous layers: the repetition
    with the median step latency, as :func:`dicesim.calibrate.accuracy.representatives` picks it."""
    groups: dict[str, list[tuple[float, TraceRun]]] = {}
    for r in runs:
        if r.is_timeline and _has_async_layers(r):
            groups.setdefault(config_key(r), []).append((measured_metrics(r)["step_latency_s"], r))
    out = []
    for _, reps in sorted(groups.items()):
        reps.sort(key=lambda x: x[0])
        lat, run = reps[(len(reps) - 1) // 2]
        if lat > 0:
            out.append((run, lat))
    return out


def fit_comm_interference(runs: list[TraceRun], profile: HardwareProfile,
                          topology: Callable[[int], nx.DiGraph]) -> OverlapFit | None:
    """``comm_interference`` minimising the squared relative step-latency error of the runs with
    asynchronous layers, everything else in ``profile`` held (None without such runs).

    ``topology(world_size)``: the graph predictions run on (e.g. ``Calibration.topology``).
    """
    configs = overlapped_configs(runs)
    if not configs:
        return None
    meas = np.array([lat for _, lat in configs])
    graphs = {W: topology(W) for W in {r.world_size for r, _ in configs}}
    cache: dict[float, float] = {}

    def loss(k: float) -> float:
        k = float(min(max(k, 0.0), MAX_SLOWED_SHARE))
        if k not in cache:
            prof = profile.with_updates(comm_interference=k / (1.0 - k))
            pred = np.array([simulated_metrics(simulate_run(r, prof, graphs[r.world_size]))["step_latency_s"]
                             for r, _ in configs])
            cache[k] = float(np.mean((pred / meas - 1.0) ** 2))
        return cache[k]

    grid = np.linspace(0.0, MAX_SLOWED_SHARE, GRID)
    i = int(np.argmin([loss(k) for k in grid]))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, GRID - 1)]
    res = minimize_scalar(loss, bounds=(lo, hi), method="bounded", options={"xatol": K_TOL})
    # ties go to the smaller slow-down: where step latency cannot tell, none is invented
    k = min((float(res.x), float(grid[i])), key=lambda x: (loss(x), x))
    return OverlapFit(comm_interference=k / (1.0 - k), n_configs=len(configs),
                      rel_err_rms_at_zero=float(np.sqrt(loss(0.0))), rel_err_rms=float(np.sqrt(loss(k))))
