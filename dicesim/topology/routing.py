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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import networkx as nx

from dicesim.errors import TopologyError
from dicesim.topology.fartrees import FarTrees
from dicesim.topology.graph import Edge, gpu_nodes

_FS_PER_S = 1e15

Route = tuple[Edge, ...]


@dataclass(frozen=True)
class _Adjacency:
    out: Mapping[str, tuple[tuple[str, int], ...]]
    is_gpu: Mapping[str, bool]
    is_mem: Mapping[str, bool]


def _adjacency(G: nx.DiGraph) -> _Adjacency:
    out = {
        u: tuple(sorted((v, max(1, round(d["latency_s"] * _FS_PER_S))) for v, d in G.adj[u].items()))
        for u in G.nodes
    }
    kinds = dict(G.nodes(data="kind"))
    return _Adjacency(out=out, is_gpu={n: k == "gpu" for n, k in kinds.items()},
                      is_mem={n: k == "host_mem" for n, k in kinds.items()})


def _shortest_tree(adj: _Adjacency, src: str, gpu_transit: bool, until: set[str] | None = None,
                   until_mem: bool = False) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
    """Dijkstra from src; returns (node -> (latency_fs, hops), node -> predecessor).

    Stops early once every node of ``until`` is settled, or (``until_mem``) once the first
    host_mem node is: a settled node's predecessor is final (a tie can only come from a node
    settled earlier), so routes to settled nodes are those of a full search.
    """
    best: dict[str, tuple[int, int]] = {src: (0, 0)}
    pred: dict[str, str] = {}
    done: set[str] = set()
    left = set(until) if until is not None else None
    heap = [(0, 0, src)]
    while heap:
        d, h, u = heapq.heappop(heap)
        if u in done:
            continue
        done.add(u)
        if left is not None:
            left.discard(u)
            if not left:
                break
        if until_mem and adj.is_mem[u]:
            break
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


def _rank_map(G: nx.DiGraph, ranks: Iterable[int] | None, by_rank: dict[int, str] | None = None) -> dict[int, str]:
    if by_rank is None:
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
    return _table(G, _adjacency(G), _rank_map(G, ranks))


def group_routes(G: nx.DiGraph, groups: Sequence[Iterable[int]]) -> list[RouteTable]:
    """One :func:`all_pairs_routes` table per group of ranks (e.g. expert-parallel groups). The
    groups share one adjacency and each search stops once it has reached its group, so many
    small groups on a large graph cost little more than their own neighbourhoods. Groups spread
    over several servers (whose searches cross most of the graph) are searched all at once by
    :class:`~dicesim.topology.fartrees.FarTrees`, with the same routes."""
    if not groups:
        return []
    adj = _adjacency(G)
    by_rank = _rank_map(G, None)
    maps = [_rank_map(G, group, by_rank) for group in groups]
    far = None
    if bool(G.graph.get("p2p", True)):
        server = dict(G.nodes(data="server"))
        spread = [m for m in maps if len({server.get(n) for n in m.values()}) > 1]
        if spread:
            far = FarTrees(G, sorted({n for m in spread for n in m.values()}), _FS_PER_S)
    return [_table(G, adj, m, far) for m in maps]


def _table(G: nx.DiGraph, adj: _Adjacency, nodes: dict[int, str], far: FarTrees | None = None) -> RouteTable:
    p2p = bool(G.graph.get("p2p", True))
    targets = set(nodes.values())
    routes: dict[tuple[int, int], Route] = {}
    mem_trees: dict[str, tuple[dict, dict]] = {}
    for r_src, n_src in nodes.items():
        if p2p and far is not None and n_src in far:
            best, pred = far.tree(n_src)
        elif p2p:
            best, pred = _shortest_tree(adj, n_src, gpu_transit=True, until=targets)
        else:
            best, pred = _shortest_tree(adj, n_src, gpu_transit=False, until_mem=True)
            mem = _nearest_host_mem(G, best, n_src)
            up = _walk(pred, n_src, mem)
            if mem not in mem_trees:
                mem_trees[mem] = _shortest_tree(adj, mem, gpu_transit=False, until=targets)
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


def check_routable(G: nx.DiGraph) -> None:
    """Raise the TopologyError :func:`all_pairs_routes` would unless every GPU reaches every other
    GPU under the routing rules; near-linear in the graph when it does (no all-pairs table)."""
    gpus = gpu_nodes(G)
    if len(gpus) > 1 and not _all_reachable(G, gpus):
        all_pairs_routes(G)  # raises the precise error: the first unreachable pair in rank order


def _all_reachable(G: nx.DiGraph, gpus: list[str]) -> bool:
    want = set(gpus)
    if bool(G.graph.get("p2p", True)):  # GPUs may forward: strong connectivity between the GPUs
        return want <= nx.descendants(G, gpus[0]) | {gpus[0]} and want <= nx.ancestors(G, gpus[0]) | {gpus[0]}
    # staged: each GPU's nearest host memory must reach every GPU, and no GPU forwards
    adj = _adjacency(G)
    H = nx.DiGraph()
    H.add_nodes_from(G.nodes)
    H.add_edges_from((u, v) for u, v in G.edges if not adj.is_gpu[u])
    comp = {n: i for i, c in enumerate(nx.strongly_connected_components(H)) for n in c}
    reach: dict[int, bool] = {}  # nodes of one component reach the same set
    for g in gpus:
        best, _ = _shortest_tree(adj, g, gpu_transit=False, until_mem=True)
        mems = [n for n in best if adj.is_mem[n]]
        if not mems:
            return False
        c = comp[min(mems, key=lambda n: (best[n], n))]
        if c not in reach:
            mem = next(n for n in mems if comp[n] == c)
            reach[c] = want <= nx.descendants(H, mem)
        if not reach[c]:
            return False
    return True


def route(G: nx.DiGraph, src_rank: int, dst_rank: int) -> Route:
    """Directed edges of the route from src_rank to dst_rank (use all_pairs_routes for many)."""
    return all_pairs_routes(G, sorted({src_rank, dst_rank})).route(src_rank, dst_rank)
