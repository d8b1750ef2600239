"""Time-varying link speed: the links of a busy endpoint run at a fraction of their bandwidth.

A link's *speed scale* ``s`` (0 < s <= 1) multiplies its bandwidth, and a flow's latency phase
advances at the smallest scale among the links it crosses: a flow waiting out ``lat`` nominal
seconds under scale ``s`` needs ``lat / s`` wall seconds. Scales are piecewise constant in time
(the engine sets them when a rank's compute starts and stops: :func:`comm_paths` says which links a
rank's compute slows, and how many ranks share each), so between two changes the flow
model is the ordinary max-min one with scaled capacities; at a change, the unfinished flows of
the affected components are carried over (remaining bytes exact, remaining latency converted
between the old and new speed) and re-planned. With every scale at 1 nothing here runs.
Legend: F flows, P (flow, link) pairs, L links.
"""

from __future__ import annotations

import networkx as nx
import numpy as np


def flow_scale_F(pair_flow_P: np.ndarray, pair_link_P: np.ndarray, scale_L: np.ndarray) -> np.ndarray:
    """Per flow, the smallest scale among its links (pairs sorted by flow; every flow has a pair;
    ``pair_link_P`` indexes ``scale_L``)."""
    starts = np.flatnonzero(np.r_[True, pair_flow_P[1:] != pair_flow_P[:-1]])
    return np.minimum.reduceat(scale_L[pair_link_P], starts)


def rescale_waits(parts: list[tuple], r: float, old_L: np.ndarray, new_L: np.ndarray) -> list[tuple]:
    """Carried-over parts (see :func:`dicesim.sim.network.flowplan.make_table`, global link ids) with the
    remaining latency of flows not yet draining at ``r`` converted from speed ``old_L`` to ``new_L``."""
    out = []
    for rem, act, pf, gpl, pw in parts:
        waiting = act > r
        if waiting.any():
            ratio = flow_scale_F(pf, gpl, old_L) / flow_scale_F(pf, gpl, new_L)
            act = np.where(waiting, r + (act - r) * ratio, act)
        out.append((rem, act, pf, gpl, pw))
    return out


def scale_key(links_L: np.ndarray, scale_L: np.ndarray) -> tuple:
    """Hashable record of which of ``links_L`` run slower than nominal, and how much (memo keys)."""
    s = scale_L[links_L]
    slow = np.flatnonzero(s != 1.0)
    return tuple(links_L[slow].tolist()), tuple(s[slow].tolist())


def comm_paths(G: nx.DiGraph, routes: list) -> tuple[list[list[tuple]], dict[tuple, int]]:
    """Per rank (GPU rank order), the links whose speed its compute lowers; and per such link how
    many ranks share it (``users``).

    A rank's own links are the ones into and out of its GPU node (its endpoint: the GPU drives the
    copies; ``users`` 1). A transfer staged through host memory (its route crosses a ``host_mem``
    node: no peer-to-peer) is carried by the shared path between the two GPUs as well, the PCIe
    uplinks, the CPU's memory and the socket link, which is where such transfers are bottlenecked:
    those links belong to both ends of every staged route over them (``users``: how many ranks).
    ``routes``: the simulated groups' :class:`~dicesim.topology.RouteTable` ``routes`` mappings.
    """
    from dicesim.topology import gpu_nodes

    gpus = gpu_nodes(G)
    own = [sorted(set(G.out_edges(n)) | set(G.in_edges(n))) for n in gpus]
    endpoint = {e for edges in own for e in edges}
    staged: dict[tuple, set[int]] = {}
    for table in routes:
        for (a, b), route in table.items():
            if a != b and any(G.nodes[v].get("kind") == "host_mem" for _, v in route):
                for e in route:
                    if e not in endpoint:
                        staged.setdefault(e, set()).update((a, b))
    paths = [list(edges) for edges in own]
    for e, ranks in staged.items():
        for r in ranks:
            paths[r].append(e)
    users = {e: 1 for e in endpoint} | {e: len(r) for e, r in staged.items()}
    return [sorted(p) for p in paths], users


def rank_port_links(net, G, routes: list) -> tuple[list[np.ndarray], np.ndarray]:
    """:func:`comm_paths` as link ids of ``net``: per rank its links, and per link its users (0: none)."""
    paths, users = comm_paths(G, routes)
    users_L = np.zeros(len(net.capacities_L), dtype=float)
    for e, n in users.items():
        users_L[net.link_id(e)] = n
    return [np.array(sorted(net.link_id(e) for e in p), dtype=np.intp) for p in paths], users_L


def efficiency_scaled_graph(G: nx.DiGraph, profile) -> nx.DiGraph:
    """``G`` with each link's bandwidth scaled by the profile's efficiency for its class (static)."""
    if all(profile.bw_eff(str(d.get("link", ""))) == 1.0 for _, _, d in G.edges(data=True)):
        return G
    H = G.copy()
    for _, _, d in H.edges(data=True):
        d["bw_Bps"] = d["bw_Bps"] * profile.bw_eff(str(d.get("link", "")))
    return H
