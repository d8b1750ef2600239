"""Routes between GPUs: shortest by total latency, ties broken the same way for any edge order.

Tie-break order: total latency (integer femtoseconds, so equal sums compare exactly), then
fewer hops, then the smaller predecessor node id. The result depends only on the graph's
content, never on insertion order, so a graph and its file round-trip route identically.

Without peer-to-peer (``G.graph['p2p']`` False) GPU-to-GPU traffic is staged in host memory:
source GPU -> nearest host_mem node (its own socket) -> destination GPU, and no other GPU may
forward. The staged route crosses the host bridge twice (up to memory, back down), which is
why consumer PCIe boxes lose half their host-link bandwidth.

Callers that route often build one ``RouteTable`` per graph and keep it beside the graph;
nothing here caches at module level.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import networkx as nx

from dicesim.errors import TopologyError
from dicesim.topology.graph import Edge, gpu_nodes

_FS_PER_S = 1e15

Route = tuple[Edge, ...]


@dataclass(frozen=True)
class _Adjacency:
    out: Mapping[str, tuple[tuple[str, int], ...]]
    is_gpu: Mapping[str, bool]


def _adjacency(G: nx.DiGraph) -> _Adjacency:
    out = {
        u: tuple(sorted((v, max(1, round(d["latency_s"] * _FS_PER_S))) for v, d in G.adj[u].items()))
        for u in G.nodes
    }
    return _Adjacency(out=out, is_gpu={n: k == "gpu" for n, k in G.nodes(data="kind")})


def _shortest_tree(adj: _Adjacency, src: str, gpu_transit: bool) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
    """Dijkstra from src; returns (node -> (latency_fs, hops), node -> predecessor)."""
    best: dict[str, tuple[int, int]] = {src: (0, 0)}
    pred: dict[str, str] = {}
    done: set[str] = set()
    heap = [(0, 0, src)]
    while heap:
        d, h, u = heapq.heappop(heap)
        if u in done:
            continue
        done.add(u)
        if u != src and adj.is_gpu[u] and not gpu_transit:
            continue  # GPUs are endpoints only: without p2p they cannot forward traffic
        for v, w in adj.out[u]:
            key = (d + w, h + 1)
            old = best.get(v)
            if old is None or key < old:
                best[v] = key
                pred[v] = u
                heapq.heappush(heap, (key[0], key[1], v))
            elif key == old and u < pred[v]:
                pred[v] = u
    return best, pred


def _walk(pred: Mapping[str, str], src: str, dst: str) -> Route:
    edges: list[Edge] = []
    node = dst
    while node != src:
        prev = pred[node]
        edges.append((prev, node))
        node = prev
    return tuple(reversed(edges))


@dataclass(frozen=True)
class RouteTable:
    """All-pairs routes over a set of ranks, computed once for one graph.

    ``routes[(src_rank, dst_rank)]`` is the tuple of directed edges (u, v) of the path; the
    route from a rank to itself is empty. ``latency_s`` and ``bottleneck_Bps`` hold each
    route's summed latency and smallest bandwidth.
    """

    ranks: tuple[int, ...]
    routes: Mapping[tuple[int, int], Route]
    latency_s: Mapping[tuple[int, int], float]
    bottleneck_Bps: Mapping[tuple[int, int], float]

    def __getitem__(self, pair: tuple[int, int]) -> Route:
        return self.routes[pair]

    def route(self, src_rank: int, dst_rank: int) -> Route:
        """The route from src_rank to dst_rank."""
        return self.routes[(src_rank, dst_rank)]

    def edges_used(self) -> frozenset[Edge]:
        """Every directed edge that at least one route crosses."""
        return frozenset(e for r in self.routes.values() for e in r)


def _rank_map(G: nx.DiGraph, ranks: Iterable[int] | None) -> dict[int, str]:
    by_rank = {G.nodes[n]["rank"]: n for n in gpu_nodes(G)}
    if ranks is None:
        return by_rank
    chosen = {}
    for r in ranks:
        if r not in by_rank:
            raise TopologyError(f"{G.graph.get('name', 'topology')}: rank {r} does not exist "
                                f"(ranks 0..{len(by_rank) - 1})")
        chosen[r] = by_rank[r]
    return chosen


def _nearest_host_mem(G: nx.DiGraph, best: Mapping[str, tuple[int, int]], gpu: str) -> str:
    mems = [n for n in best if G.nodes[n]["kind"] == "host_mem"]
    if not mems:
        raise TopologyError(f"{G.graph.get('name', 'topology')}: p2p is false but GPU {gpu} reaches no "
                            "host_mem node to stage traffic through")
    return min(mems, key=lambda n: (best[n], n))


def _no_route(G: nx.DiGraph, a: str, b: str) -> TopologyError:
    return TopologyError(f"{G.graph.get('name', 'topology')}: GPUs {a} and {b} are not connected "
                         "(no directed path)")


def all_pairs_routes(G: nx.DiGraph, ranks: Iterable[int] | None = None) -> RouteTable:
    """Routes between every ordered pair of ``ranks`` (default: all GPUs) as one RouteTable."""
    nodes = _rank_map(G, ranks)
    adj = _adjacency(G)
    p2p = bool(G.graph.get("p2p", True))
    routes: dict[tuple[int, int], Route] = {}
    mem_trees: dict[str, tuple[dict, dict]] = {}
    for r_src, n_src in nodes.items():
        best, pred = _shortest_tree(adj, n_src, gpu_transit=p2p)
        if not p2p:
            mem = _nearest_host_mem(G, best, n_src)
            up = _walk(pred, n_src, mem)
            if mem not in mem_trees:
                mem_trees[mem] = _shortest_tree(adj, mem, gpu_transit=False)
            best, pred = mem_trees[mem]
        for r_dst, n_dst in nodes.items():
            if r_dst == r_src:
                routes[(r_src, r_dst)] = ()
                continue
            if n_dst not in best:
                raise _no_route(G, n_src, n_dst)
            down = _walk(pred, mem if not p2p else n_src, n_dst)
            routes[(r_src, r_dst)] = (up + down) if not p2p else down
    lat = {k: float(sum(G.edges[e]["latency_s"] for e in r)) for k, r in routes.items()}
    bw = {k: float(min((G.edges[e]["bw_Bps"] for e in r), default=float("inf"))) for k, r in routes.items()}
    return RouteTable(ranks=tuple(nodes), routes=routes, latency_s=lat, bottleneck_Bps=bw)


def route(G: nx.DiGraph, src_rank: int, dst_rank: int) -> Route:
    """Directed edges of the route from src_rank to dst_rank (use all_pairs_routes for many)."""
    return all_pairs_routes(G, sorted({src_rank, dst_rank})).route(src_rank, dst_rank)
