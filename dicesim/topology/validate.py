"""Check a topology graph; each problem is reported as one TopologyError line naming it."""

from __future__ import annotations

from collections import Counter

import networkx as nx

from dicesim.errors import TopologyError
from dicesim.limits import MAX_WORLD_SIZE, physical_problem
from dicesim.topology.graph import NODE_KINDS
from dicesim.topology.routing import check_routable


def _fail(G: nx.DiGraph, problem: str) -> TopologyError:
    return TopologyError(f"topology {G.graph.get('name', '?')!r}: {problem}")


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_graph_attrs(G: nx.DiGraph) -> None:
    g = G.graph
    checks = (
        ("name", isinstance(g.get("name"), str) and bool(g.get("name")), "a non-empty string"),
        ("p2p", isinstance(g.get("p2p"), bool), "true or false"),
        ("gpu", isinstance(g.get("gpu"), str) and bool(g.get("gpu")), "a GPU model key string"),
        ("gpus_per_node", _is_int(g.get("gpus_per_node")) and g.get("gpus_per_node", 0) > 0, "a positive integer"),
        ("sources", isinstance(g.get("sources"), dict), "a table of citation key -> text"),
    )
    for attr, ok, want in checks:
        if not ok:
            raise _fail(G, f"graph attribute {attr!r} must be {want}, got {g.get(attr)!r}")


def _check_nodes(G: nx.DiGraph) -> list[str]:
    gpus = []
    for n, kind in G.nodes(data="kind"):
        if kind not in NODE_KINDS:
            raise _fail(G, f"node {n} has unknown kind {kind!r} (allowed: {', '.join(NODE_KINDS)})")
        if kind == "gpu":
            gpus.append(n)
    if not gpus:
        raise _fail(G, "no GPU nodes (need at least one node with kind 'gpu')")
    if len(gpus) > MAX_WORLD_SIZE:
        raise _fail(G, f"{len(gpus)} GPUs, more than the limit of {MAX_WORLD_SIZE} (see docs/limits.md)")
    for n in gpus:
        for attr in ("rank", "server"):
            v = G.nodes[n].get(attr)
            if not _is_int(v) or v < 0:
                raise _fail(G, f"GPU {n} needs a non-negative integer {attr!r}, got {v!r}")
    ranks = Counter(G.nodes[n]["rank"] for n in gpus)
    dup = sorted(r for r, c in ranks.items() if c > 1)
    if dup:
        holders = sorted(n for n in gpus if G.nodes[n]["rank"] == dup[0])
        raise _fail(G, f"duplicate rank {dup[0]} on {', '.join(holders)}")
    missing = sorted(set(range(len(gpus))) - set(ranks))
    if missing:
        raise _fail(G, f"ranks must be 0..{len(gpus) - 1}; rank {missing[0]} is missing")
    return sorted(gpus, key=lambda n: G.nodes[n]["rank"])


def _check_servers(G: nx.DiGraph, gpus: list[str]) -> None:
    servers = [G.nodes[n]["server"] for n in gpus]
    seen: list[int] = []
    for n, s in zip(gpus, servers):
        if seen and s != seen[-1] and s in seen:
            raise _fail(G, f"ranks of server {s} are not contiguous (GPU {n} has rank {G.nodes[n]['rank']})")
        if not seen or s != seen[-1]:
            seen.append(s)
    per_node = G.graph["gpus_per_node"]
    for s, count in sorted(Counter(servers).items()):
        if count != per_node:
            raise _fail(G, f"server {s} has {count} GPUs but graph attribute gpus_per_node is {per_node}")


def _check_edges(G: nx.DiGraph) -> None:
    sources = G.graph["sources"]
    for u, v, d in G.edges(data=True):
        if u == v:
            raise _fail(G, f"edge {u}->{v} is a self-loop")
        for attr in ("bw_Bps", "latency_s"):
            x = d.get(attr)
            if x is None:
                raise _fail(G, f"edge {u}->{v} is missing {attr}")
            problem = physical_problem(attr, x)  # plausible from below too: a denormal rate reaches the solver
            if problem:
                raise _fail(G, f"edge {u}->{v} has {attr}={problem}")
        link = d.get("link")
        if not isinstance(link, str) or not link:
            raise _fail(G, f"edge {u}->{v} needs a link class string, got {link!r}")
        src = d.get("source")
        if src not in sources:
            raise _fail(G, f"edge {u}->{v} cites source {src!r}, which is not in graph sources "
                           f"(known: {', '.join(sorted(sources)) or 'none'})")


def validate_topology(G: nx.DiGraph) -> None:
    """Raise TopologyError (one line) for the first problem found; return None for a usable graph.

    Checks graph attributes, node kinds, GPU ranks (present, unique, 0..W-1, contiguous per
    server, gpus_per_node GPUs per server), edge attributes (positive finite bw_Bps and
    latency_s, a link class, a cited source) and that every GPU can reach every other GPU under
    the routing rules (staging through host memory when p2p is false).
    """
    if not isinstance(G, nx.DiGraph) or G.is_multigraph():
        raise TopologyError(f"a topology must be a networkx.DiGraph, got {type(G).__name__}")
    _check_graph_attrs(G)
    gpus = _check_nodes(G)
    _check_servers(G, gpus)
    _check_edges(G)
    try:
        check_routable(G)
    except TopologyError as exc:
        raise _fail(G, str(exc).split(": ", 1)[-1]) from None
