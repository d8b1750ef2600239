"""One collective operation on one topology, run through the simpy flow network.

This is how the published set is predicted: the operation a benchmark measured (an
nccl-tests all-to-all or ring all-reduce of ``nbytes`` per rank, or a DeepEP dispatch or
combine) becomes the flows that library moves, on the graph as the NCCL model says the
library sees it (:func:`dicesim.sim.network.nccl.effective_graph`), and
:class:`~dicesim.sim.network.network.FlowNetwork` times them, max-min sharing every link. The
metrics are then computed exactly as the benchmark defines them:

- nccl-tests (``doc/PERFORMANCE.md``): ``algbw = nbytes / t``; all-to-all ``busbw = algbw
  (n-1)/n``; all-reduce ``busbw = algbw 2(n-1)/n``.
- DeepEP: logical bytes over time (:mod:`dicesim.sim.microbench.deepep`); its low-latency
  kernels by their time (:mod:`dicesim.sim.microbench.deepep_ll`); ``deepep_ll_round`` is a
  dispatch followed by a combine, the pair ``tests/test_low_latency.py`` times with ``bench``
  and prints as "Dispatch + combine" (deepseek-ai/DeepEP @ ebfe47e, lines 98-117); the two
  kernels run one after the other, so their times add. Each low-latency kernel's time ends with its
  receiving pass over the arrived bytes at the GPU's memory rate.

Latency: ``base_latency_s`` once, plus per protocol hop the route latency and the
transport's ``hop_latency_s``. An all-to-all sends to every peer at once (one hop) and adds
``a2a_latency_s`` (its grouped send/receive pairs); a ring all-reduce is ``2(n-1)`` hops in
a row, with its bytes pipelined through them. Across servers the all-reduce runs one ring per
NIC of a server, each leaving and entering a server through its own NIC, with an equal share
of the bytes (:mod:`dicesim.sim.microbench.netpaths`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx
import simpy

from dicesim.sim.microbench.deepep import DeepEPConfig, deepep_traffic
from dicesim.sim.microbench.deepep_ll import LowLatencyConfig, ll_pair_nbytes, ll_recv_pass_s
from dicesim.sim.microbench.netpaths import nic_crossing, rdma_routes, ring_orders, server_nics
from dicesim.sim.network.nccl import KERNEL_BOUND, NcclModel, effective_graph, hop_latency_s, route_transports
from dicesim.sim.network.network import FlowNetwork
from dicesim.topology import all_pairs_routes, num_servers, world_size

OPERATIONS: tuple[str, ...] = ("all_to_all", "all_reduce", "deepep_dispatch", "deepep_combine",
                                "deepep_ll_dispatch", "deepep_ll_combine", "deepep_ll_round")


@dataclass(frozen=True)
class OpResult:
    """Simulated time of one operation and its benchmark metrics (``*_Bps`` in bytes/s)."""

    time_s: float
    metrics: dict[str, float] = field(default_factory=dict)
    #: the NCCL-model parameters the result depends on (nothing else of the model changes it)
    params: frozenset[str] = frozenset()


def _params(transports: set[str], *extra: str) -> frozenset[str]:
    return frozenset({"base_latency_s", *extra, *(f"bw_eff.{t}" for t in transports),
                      *(f"kernel_Bps.{t}" for t in transports if t in KERNEL_BOUND),
                      *(f"hop_latency_s.{t}" for t in transports)})


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
    tr = route_transports(G, routes)
    extra = model.base_latency_s + model.a2a_latency_s + hop_latency_s(model, tr)
    t = _drain_s(effective_graph(G, model), [(r, nbytes / n) for r in routes], extra)
    algbw = nbytes / t
    return OpResult(t, {"time_s": t, "algbw_Bps": algbw, "busbw_Bps": algbw * (n - 1) / n},
                    _params(tr, "a2a_latency_s"))


def _ring_routes(G: nx.DiGraph, ranks: list[int]) -> list[list[tuple]]:
    """The rings' hop routes: one ring in rank order inside a server; across whole servers with
    NICs, one ring per NIC of a server (:func:`~dicesim.sim.microbench.netpaths.ring_orders`)."""
    table = all_pairs_routes(G, ranks)
    n, S = len(ranks), num_servers(G)
    if S == 1 or ranks != list(range(world_size(G))) or not server_nics(G, 0):
        return [[table.route(ranks[i], ranks[(i + 1) % n]) for i in range(n)]]
    rings = []
    for c, order in enumerate(ring_orders(G)):
        hops = []
        for s in range(S):
            hops += [table.route(a, b) for a, b in zip(order[s][:-1], order[s][1:])]
            hops.append(nic_crossing(G, c, order[s][-1], order[(s + 1) % S][0]))
        rings.append(hops)
    return rings


def _all_reduce_ring(G: nx.DiGraph, ranks: list[int], nbytes: float, model: NcclModel) -> OpResult:
    n = len(ranks)
    rings = _ring_routes(G, ranks)
    hop_routes = [r for ring in rings for r in ring]
    hops = 2 * (n - 1)
    tr = route_transports(G, hop_routes)
    hop_s = hop_latency_s(model, tr)
    ring_lat = max(sum(G.edges[e]["latency_s"] for e in r) for r in hop_routes)
    # each flow waits out its own route once; the other hops of the ring add in sequence
    extra = model.base_latency_s + hops * hop_s + (hops - 1) * ring_lat
    per_link = 2 * (n - 1) / n * nbytes / len(rings)  # the rings split the bytes evenly
    t = _drain_s(effective_graph(G, model), [(r, per_link) for r in hop_routes], extra)
    algbw = nbytes / t
    return OpResult(t, {"time_s": t, "algbw_Bps": algbw, "busbw_Bps": algbw * 2 * (n - 1) / n}, _params(tr))


def _deepep(G: nx.DiGraph, cfg: DeepEPConfig, model: NcclModel, combine: bool) -> OpResult:
    nodes = num_servers(G)
    traffic = deepep_traffic(cfg, nodes=nodes, gpus_per_node=world_size(G) // nodes, combine=combine)
    table = all_pairs_routes(G)
    flows = [(table.route(s, d), nb) for s, d, nb in traffic.flows]
    tr = route_transports(G, [r for r, _ in flows], "deepep")
    extra = model.base_latency_s + hop_latency_s(model, tr)
    t = _drain_s(effective_graph(G, model, "deepep"), flows, extra)
    return OpResult(t, {"time_s": t, "deepep_nvl_Bps": traffic.nvl_logical_nbytes / t,
                        "deepep_rdma_Bps": traffic.rdma_logical_nbytes / t}, _params(tr))


def _deepep_ll(G: nx.DiGraph, cfg: LowLatencyConfig, model: NcclModel, combine: bool) -> OpResult:
    W, g = world_size(G), G.graph["gpus_per_node"]
    pairs = [(a, b) for a in range(W) for b in range(W) if a != b]
    near = [p for p in pairs if p[0] // g == p[1] // g] if cfg.transport == "nvlink+rdma" else []
    table = all_pairs_routes(G) if near else None
    routes = {**{p: table.route(*p) for p in near},  # type: ignore[union-attr]
              **rdma_routes(G, [p for p in pairs if p[0] // g != p[1] // g or cfg.transport == "rdma"])}
    nb = ll_pair_nbytes(cfg, W, combine)
    flows = [(r, nb) for r in routes.values()]
    tr = route_transports(G, routes.values(), "deepep")
    extra = model.base_latency_s + hop_latency_s(model, tr)
    # the kernel's receiving pass over the arrived bytes follows the transfer (deepep_ll module docstring)
    t = _drain_s(effective_graph(G, model, "deepep"), flows, extra) + ll_recv_pass_s(cfg, G.graph["gpu"], combine)
    return OpResult(t, {"time_s": t}, _params(tr))


def simulate_op(G: nx.DiGraph, operation: str, model: NcclModel, *, gpus: int | None = None, nbytes: float = 0.0,
                deepep: DeepEPConfig | None = None, low_latency: LowLatencyConfig | None = None) -> OpResult:
    """Simulate ``operation`` (one of OPERATIONS) on the first ``gpus`` ranks of ``G`` (default: all).

    ``nbytes``: the nccl-tests message size (bytes per rank); ``deepep``: the DeepEP setting of a
    normal-kernel operation; ``low_latency``: that of a low-latency one (both use the whole graph).
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
    if operation in ("deepep_ll_dispatch", "deepep_ll_combine", "deepep_ll_round"):
        if low_latency is None:
            raise ValueError(f"{operation} needs a LowLatencyConfig")
        if operation == "deepep_ll_round":
            a, b = _deepep_ll(G, low_latency, model, False), _deepep_ll(G, low_latency, model, True)
            t = a.time_s + b.time_s
            return OpResult(t, {"time_s": t}, a.params | b.params)
        return _deepep_ll(G, low_latency, model, operation == "deepep_ll_combine")
    raise ValueError(f"unknown operation {operation!r} (allowed: {', '.join(OPERATIONS)})")


def simulate_exchange(G: nx.DiGraph, groups: list[list[int]], nbytes: float, model: NcclModel, *,
                      pattern: str) -> float:
    """Seconds for every group in ``groups`` to run one exchange at the same time, sharing links.

    ``pattern``: ``"all_to_all"`` (each rank sends ``nbytes / len(group)`` to every peer of its
    group: one hop plus the all-to-all latency) or ``"ring_pass"`` (each rank sends ``nbytes`` to
    the next rank of its group, as one step of ring attention passes a K/V block: one hop).
    Groups of one rank move nothing.
    """
    if pattern not in ("all_to_all", "ring_pass"):
        raise ValueError(f"unknown pattern {pattern!r} (allowed: all_to_all, ring_pass)")
    table = all_pairs_routes(G, sorted({r for g in groups for r in g}))
    flows = []
    for g in groups:
        n = len(g)
        if n < 2:
            continue
        if pattern == "all_to_all":
            flows += [(table.route(a, b), nbytes / n) for a in g for b in g if a != b]
        else:
            flows += [(table.route(g[i], g[(i + 1) % n]), nbytes) for i in range(n)]
    if not flows:
        return 0.0
    extra = model.base_latency_s + hop_latency_s(model, route_transports(G, [r for r, _ in flows]))
    extra += model.a2a_latency_s if pattern == "all_to_all" else 0.0
    return _drain_s(effective_graph(G, model), flows, extra)
