"""What one engine run needs (:class:`EngineSpec`) and what it measured (:class:`RawRun`).

Kept apart from :mod:`dicesim.sim.engine.engine` so the shortcuts built around the engine (folding,
metrics) can name them without the simpy model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import networkx as nx
import numpy as np
import pandas as pd

from dicesim.plan import ParallelLayout, Plan, PlanCache
from dicesim.sim.costs.costmodel import CostModel
from dicesim.sim.network.flowgroup import LinkShare
from dicesim.sim.network.nccl import NcclModel
from dicesim.sim.costs.profile import HardwareProfile
from dicesim.sim.costs.routing import TokenRouting
from dicesim.topology import RouteTable
from dicesim.topology.cache import TopologyCache

#: per-rank cumulative counters snapshotted at each step end (columns of RawRun.counters_WTK)
COUNTERS = ("compute_busy_s", "comm_busy_s", "overlap_s", "exposed_comm_s", "host_gap_s")


@dataclass(frozen=True, kw_only=True)
class EngineSpec:
    """Everything one simulation needs, already built and validated."""

    plan: Plan
    layout: ParallelLayout
    cost: CostModel
    routing: TokenRouting
    graph: nx.DiGraph
    profile: HardwareProfile
    row_nbytes: int
    record: bool = False
    merge_compute: bool = True
    nccl: NcclModel | None = None  # what NCCL reaches on the graph's links (None: the built-in model)
    #: simulate only these groups of the layout (None: all); the caller guarantees that the
    #: others share no link with them (:mod:`dicesim.sim.fold` decides and fills them in)
    groups: tuple[int, ...] | None = None
    #: take repeated windows from the record instead of simulating them (:mod:`dicesim.sim.engine.reuse`)
    reuse: bool = False
    #: simulated group -> how its flows stand for the folded groups that share its links in lock step
    #: (:class:`~dicesim.sim.network.flowgroup.LinkShare`, decided by :mod:`dicesim.sim.fold`)
    shares: Mapping[int, LinkShare] | None = None
    #: route tables of the simulated groups, in order, when already computed on a graph with the same
    #: latencies (routes depend on latencies only); None: the engine routes them
    routes: tuple[RouteTable, ...] | None = None
    #: the caller's plan cache: the engine keeps the plan's compiled program and window search in it
    #: (:mod:`dicesim.sim.engine.skeleton`); None: compiled and searched for this run alone
    plans: PlanCache | None = None
    #: the caller's topology cache: the fold's routes are searched once per graph and groups in it
    #: (:mod:`dicesim.topology.cache`); None: searched for this run alone
    topologies: TopologyCache | None = None


@dataclass(frozen=True)
class RawRun:
    """What the engine measured. Times in seconds; ``counters_WTK`` cumulative at step ends."""

    step_end_WT: np.ndarray
    counters_WTK: np.ndarray
    total_s: float
    link_stats: list[dict]
    events: pd.DataFrame | None
    collectives: int
    memo_hits: int
    memo_misses: int
    #: simpy events scheduled (the engine's work, for the benchmark's floor ratio)
    sim_events: int = 0
    #: window reuse: windows of the simulated groups, how many were repeats, why not applied
    windows: int = 0
    windows_reused: int = 0
    reuse_blocked: str | None = None
