"""One collective operation on one topology, run through the simpy flow network.

This is how the published set is predicted: the operation a benchmark measured (an
nccl-tests all-to-all or ring all-reduce of ``nbytes`` per rank, or a DeepEP dispatch or
combine) becomes the flows that library moves, on the graph as the NCCL model says the
library sees it (:func:`dicesim.sim.network.nccl.effective_graph`), and
:class:`~dicesim.sim.network.network.FlowNetwork` times them, max-min sharing every link. The
metrics are then computed exactly as the benchmark defines them:

- nccl-tests (``doc/PERFORMANCE.md``): ``algbw = nbytes / t``; all-to-all ``busbw = algbw
  (n-1)/n``; all-reduce ``busbw = algbw 2(n-1)/n``.
- DeepEP: logical bytes over time (:mod:`dicesim.sim.microbench.deepep`).

Latency: ``base_latency_s`` once, plus per protocol hop the route latency and the
transport's ``hop_latency_s``. An all-to-all sends to every peer at once (one hop) and adds
``a2a_latency_s`` (its grouped send/receive pairs); a ring all-reduce is ``2(n-1)`` hops in
a row, with its bytes pipelined through them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx
import simpy

from dicesim.sim.microbench.deepep import DeepEPConfig, deepep_traffic
from dicesim.sim.network.nccl import NcclModel, effective_graph, hop_latency_s, route_transports
from dicesim.sim.network.network import FlowNetwork
from dicesim.topology import all_pairs_routes, num_servers, world_size

OPERATIONS: tuple[str, ...] = ("all_to_all", "all_reduce", "deepep_dispatch", "deepep_combine")


@dataclass(frozen=True)
class OpResult:
    """Simulated time of one operation and its benchmark metrics (``*_Bps`` in bytes/s)."""

    time_s: float
    metrics: dict[str, float] = field(default_factory=dict)


def _drain_s(G: nx.DiGraph, flows: list[tuple], extra_latency_s: float) -> float:
    env = simpy.Environment()
    net = FlowNetwork(env, G, memo_size=0)
    ev = net.transfer(flows, extra_latency_s)
    env.run()
    return float(ev.value.end_s)


def _all_to_all(G: nx.DiGraph, ranks: list[int], nbytes: float, model: NcclModel) -> OpResult:
    n = len(ranks)
    table = all_pairs_routes(G, ranks)
    routes = [table.route(a, b) for a in ranks for b in ranks if a != b]
    extra = model.base_latency_s + model.a2a_latency_s + hop_latency_s(model, route_transports(G, routes))
    t = _drain_s(effective_graph(G, model), [(r, nbytes / n) for r in routes], extra)
    algbw = nbytes / t
    return OpResult(t, {"time_s": t, "algbw_Bps": algbw, "busbw_Bps": algbw * (n - 1) / n})


def _all_reduce_ring(G: nx.DiGraph, ranks: list[int], nbytes: float, model: NcclModel) -> OpResult:
    n = len(ranks)
    table = all_pairs_routes(G, ranks)
    ring = [table.route(ranks[i], ranks[(i + 1) % n]) for i in range(n)]
    hops = 2 * (n - 1)
    hop_s = hop_latency_s(model, route_transports(G, ring))
    ring_lat = max(table.latency_s[(ranks[i], ranks[(i + 1) % n])] for i in range(n))
    # each flow waits out its own route once; the other hops of the ring add in sequence
    extra = model.base_latency_s + hops * hop_s + (hops - 1) * ring_lat
    per_link = 2 * (n - 1) / n * nbytes
    t = _drain_s(effective_graph(G, model), [(r, per_link) for r in ring], extra)
    algbw = nbytes / t
    return OpResult(t, {"time_s": t, "algbw_Bps": algbw, "busbw_Bps": algbw * 2 * (n - 1) / n})


def _deepep(G: nx.DiGraph, cfg: DeepEPConfig, model: NcclModel, combine: bool) -> OpResult:
    nodes = num_servers(G)
    traffic = deepep_traffic(cfg, nodes=nodes, gpus_per_node=world_size(G) // nodes, combine=combine)
    table = all_pairs_routes(G)
    flows = [(table.route(s, d), nb) for s, d, nb in traffic.flows]
    extra = model.base_latency_s + hop_latency_s(model, route_transports(G, [r for r, _ in flows], "deepep"))
    t = _drain_s(effective_graph(G, model, "deepep"), flows, extra)
    return OpResult(t, {"time_s": t, "deepep_nvl_Bps": traffic.nvl_logical_nbytes / t,
                        "deepep_rdma_Bps": traffic.rdma_logical_nbytes / t})


def simulate_op(G: nx.DiGraph, operation: str, model: NcclModel, *, gpus: int | None = None, nbytes: float = 0.0,
                deepep: DeepEPConfig | None = None) -> OpResult:
    """Simulate ``operation`` (one of OPERATIONS) on the first ``gpus`` ranks of ``G`` (default: all).

    ``nbytes``: the nccl-tests message size (bytes per rank); ``deepep``: the DeepEP setting.
    """
    ranks = list(range(gpus or world_size(G)))
    if operation == "all_to_all":
        return _all_to_all(G, ranks, nbytes, model)
    if operation == "all_reduce":
        return _all_reduce_ring(G, ranks, nbytes, model)
    if operation in ("deepep_dispatch", "deepep_combine"):
        if deepep is None:
            raise ValueError(f"{operation} needs a DeepEPConfig")
        return _deepep(G, deepep, model, operation == "deepep_combine")
    raise ValueError(f"unknown operation {operation!r} (allowed: {', '.join(OPERATIONS)})")
