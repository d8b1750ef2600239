"""The simulator's side of the host-staged GPU check: W emulated ranks on one GPU.

The executor's host-staged mode (``python -m validate run --transport host-staged``) runs
one process holding every expert and the global batch of W emulated ranks, and moves the
rows that would cross ranks GPU -> pinned host memory -> GPU. The simulated run is the same
experiment (docs/gpu-overlap-check.md):

- **work**: one rank, ``W x batch`` images, every expert local (``world_size = 1``); its
  routed rows are the W ranks' rows summed, so the expert op sees every row the executor's
  expert op sees;
- **bytes**: every dispatch and combine is one flow of the rows whose source emulated rank
  is not their expert's owner in the W-rank placement (:func:`staged_rows_LT`) along
  :func:`~dicesim.topology.host_staged.loopback_route` (GPU -> host memory -> GPU: the
  device-to-host and host-to-device directions of the GPU's PCIe link at once, as pipelined
  copy engines run them); the count exchange is a latency, as between GPUs;
- **order and interference**: the exchanges run in issue order on one communicator (two with
  ``count_comm = "separate"``), and compute runs ``1 + interference`` times slower while one
  is in flight, exactly as for a rank of a multi-GPU run (:mod:`dicesim.sim.engine.engine`).
"""

from __future__ import annotations

import dataclasses

import networkx as nx
import numpy as np

from dicesim.placement import Placement, make_placement
from dicesim.plan import CollectiveKind, layout_for
from dicesim.plan.vocabulary import Issue
from dicesim.scenario import RoutingConfig
from dicesim.sim.api import prepare
from dicesim.sim.engine.engine import Engine
from dicesim.sim.engine.runspec import EngineSpec
from dicesim.sim.network.flowgroup import FlowGroup
from dicesim.sim.engine.groupcomm import COUNTS, DISPATCH, GroupComm, collective_latencies
from dicesim.sim.engine.program import Coll
from dicesim.sim.metrics import SimResult, build_result
from dicesim.sim.network.nccl import NcclModel
from dicesim.sim.network.network import FlowNetwork
from dicesim.sim.costs.profile import HardwareProfile
from dicesim.sim.costs.routing import TokenRouting, build_routing
from dicesim.strategy import Strategy, make_strategy
from dicesim.topology import RouteTable, get_topology
from dicesim.topology.host_staged import loopback_route


def staged_rows_LT(routing: TokenRouting, skip: bool) -> np.ndarray:
    """``[L, T]``: rows one exchange moves between different ranks, summed over every rank (the
    rows a one-GPU emulation of ``routing``'s ranks stages through host memory)."""
    send_LTWS = routing.send_rows_LTWS(skip)
    out = np.zeros(send_LTWS.shape[:2], dtype=np.int64)
    for members in routing.placement.groups():
        for m, r in enumerate(members):
            out += send_LTWS[:, :, r, :].sum(axis=-1) - send_LTWS[:, :, r, m]
    return out


def emulated_placement(strategy: Strategy, world_size: int, num_experts: int,
                       group_layout: str = "contiguous") -> Placement:
    """The W-rank placement the emulated ranks follow (the executor's, from the same layout)."""
    return layout_for(strategy, world_size, num_experts, group_layout=group_layout).placement


def merged_routing(routing: TokenRouting) -> TokenRouting:
    """The same copies on one rank that holds every expert (what the one GPU computes)."""
    counts = routing.counts_LTWE.sum(axis=2, keepdims=True)
    counts.setflags(write=False)
    W = routing.placement.world_size
    return TokenRouting(placement=make_placement(1, routing.placement.num_experts),
                        tokens_per_rank=routing.tokens_per_rank * W, top_k=routing.top_k, counts_LTWE=counts,
                        top1_share=routing.top1_share)


class LoopbackComm(GroupComm):
    """The one rank's exchanges: each one flow of the rows the emulated ranks would send each
    other (``staged_rows[skip][layer, tok]``) along :func:`loopback_route`, with the collective
    latencies of that route. Window reuse stays off for it (a one-rank group,
    :func:`~dicesim.sim.engine.reuse.reuse_blocker`): its windows would also have to key the staged rows."""

    def __init__(self, g: int, members: tuple[int, ...], table: RouteTable, G: nx.DiGraph, profile: HardwareProfile,
                 routing: TokenRouting, net: FlowNetwork, row_nbytes: int, *, nccl: NcclModel, library: str,
                 staged_rows: tuple[np.ndarray, np.ndarray]):
        super().__init__(g, members, table, G, profile, routing, net, row_nbytes, nccl=nccl, library=library)
        self._net, self._staged = net, staged_rows
        self._loop = loop = loopback_route(G, members[0])
        route_lat = float(sum(G.edges[e]["latency_s"] for e in loop))
        self.a2a_lat_s, self.count_lat_s = collective_latencies(G, [loop], route_lat, profile, nccl, library)
        self.links_L = np.array(sorted({net.link_id(e) for e in loop}), dtype=np.intp)

    def flow_group(self, direction: int, layer: int, tok: int, skip: bool) -> FlowGroup:
        nbytes = float(self._staged[skip][layer, tok] * self.row_nbytes)
        fg = self._cache.get(nbytes)
        if fg is None:  # a dispatch and its combine move the same bytes along the same loop
            fg = self._cache[nbytes] = self._net.compile([(self._loop, nbytes)], self.a2a_lat_s)
        return fg

    def moved_rows(self, coll: Coll) -> list[int]:
        return [0 if coll.kind == COUNTS else int(self._staged[coll.skip][coll.layer, coll.tok_step])]

    def distinct_groups(self, uses) -> tuple[list[FlowGroup], list]:
        return [self.flow_group(DISPATCH, layer, tok, skip) for skip, layer, tok in uses], []


class HostStagedEngine(Engine):
    """The engine with one rank whose collectives loop through host memory (see module doc)."""

    loopback = True
    library = "memcpy"  # cudaMemcpyAsync on copy engines, not NCCL: the topology holds measured copy rates

    def __init__(self, spec: EngineSpec, *, staged_rows: tuple[np.ndarray, np.ndarray]):
        if spec.layout.world_size != 1:
            raise ValueError("the host-staged engine runs one rank; the emulated ranks live in staged_rows")
        self._staged = staged_rows  # [skip] -> [L, T] rows through host memory per exchange (for _group_comm)
        super().__init__(spec)

    def _group_comm(self, g: int, members: tuple[int, ...], table: RouteTable, G: nx.DiGraph,
                    nccl: NcclModel) -> GroupComm:
        s = self.spec
        return LoopbackComm(g, members, table, G, s.profile, s.routing, self.net, s.row_nbytes, nccl=nccl,
                            library=self.library, staged_rows=self._staged)


def simulate_host_staged(*, model: str, strategy: Strategy | str, world_size: int, batch: int, steps: int,
                         profile: HardwareProfile | str, topology: str | nx.DiGraph = "1x-h100-host-staged",
                         image_size: int = 256, cfg: bool = True, dtype: str = "bf16",
                         num_experts: int | None = None, group_layout: str = "contiguous",
                         counts_WTLE: np.ndarray | None = None, routing: RoutingConfig | None = None,
                         seed: int = 0, record: bool = False) -> SimResult:
    """Predict a host-staged run: ``world_size`` emulated ranks of ``batch`` images each on one GPU.

    ``counts_WTLE``: the run's routed copies per emulated rank, step, layer and expert (the
    executor's ``host_staged.router_hist``); without it, ``routing`` (default uniform) decides.
    ``topology``: a one-GPU host-staged preset name or graph. ``record`` keeps the event table
    (every op its own event, for :mod:`dicesim.calibrate.overlap.slowdown`).
    """
    strat = make_strategy(strategy) if isinstance(strategy, str) else strategy
    G = get_topology(topology) if isinstance(topology, str) else topology
    preset_name = topology if isinstance(topology, str) else "1x-h100-host-staged"
    prep = prepare(model=model, num_experts=num_experts, batch=world_size * batch, image_size=image_size,
                   steps=steps, cfg=cfg, dtype=dtype, strategy=strat, world_size=1, topology=preset_name,
                   routing=routing, seed=seed, profile=profile, graph=G, record=record, merge_compute=not record)
    sc, spec = prep.scenario, prep.spec
    preset = sc.preset()
    placement = emulated_placement(strat, world_size, preset.num_experts, group_layout)
    tokens = spec.routing.tokens_per_rank // world_size
    if counts_WTLE is not None:
        counts = np.ascontiguousarray(np.asarray(counts_WTLE, dtype=np.int64).transpose(2, 1, 0, 3))
        counts.setflags(write=False)
        per_rank = TokenRouting(placement=placement, tokens_per_rank=tokens, top_k=preset.top_k, counts_LTWE=counts,
                                top1_share=sc.routing.top1_share)
    else:
        per_rank = build_routing(sc.routing, placement, num_layers=preset.depth, num_steps=steps,
                                 tokens_per_rank=tokens, top_k=preset.top_k, seed=seed,
                                 sampling=sc.routing.sampling)
    spec = dataclasses.replace(spec, routing=merged_routing(per_rank))
    staged = (staged_rows_LT(per_rank, False), staged_rows_LT(per_rank, True))
    raw = HostStagedEngine(spec, staged_rows=staged).run()
    meta = {"scenario": sc.model_dump(mode="json"), "profile": spec.profile.name, "topology": G.graph.get("name"),
            "host_staged": {"emulated_world_size": world_size, "batch_per_emulated_rank": batch,
                            "staged_rows_per_step": [int(v) for v in staged_per_step(spec.plan, staged)]}}
    return build_result(raw, plan=spec.plan, routing=spec.routing, row_nbytes=spec.row_nbytes, graph=G,
                        label=f"{sc.label()} host-staged W={world_size}", meta=meta)


def staged_per_step(plan, staged: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Rows through host memory issued in each step (dispatches and combines) under ``plan``;
    conditional communication may cut synced layers too (``skip``)."""
    lower = plan.rules.lower
    moves = (CollectiveKind.DISPATCH, CollectiveKind.COMBINE)
    out = np.zeros(plan.num_steps, dtype=np.int64)
    for t, actions in plan:
        for a in actions:
            n = sum(1 for e in lower(a) if type(e) is Issue and e.kind in moves)
            if n:
                out[t] += n * staged[a.skip][a.layer, a.tok_step]
    return out
