"""Time-varying link speed: the links of a busy endpoint run at a fraction of their bandwidth.

A link's *speed scale* ``s`` (0 < s <= 1) multiplies its bandwidth, and a flow's latency phase
advances at the smallest scale among the links it crosses: a flow waiting out ``lat`` nominal
seconds under scale ``s`` needs ``lat / s`` wall seconds. Scales are piecewise constant in time
(the engine sets them when a rank's compute starts and stops), so between two changes the flow
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


def rank_port_links(net, G) -> list[np.ndarray]:
    """Per rank, the ids (in ``net``) of the links into and out of its GPU node: its endpoint."""
    from dicesim.topology import gpu_nodes

    out = []
    for node in gpu_nodes(G):
        edges = list(G.out_edges(node)) + list(G.in_edges(node))
        out.append(np.array(sorted(net.link_id(e) for e in edges), dtype=np.intp))
    return out


def efficiency_scaled_graph(G: nx.DiGraph, profile) -> nx.DiGraph:
    """``G`` with each link's bandwidth scaled by the profile's efficiency for its class (static)."""
    if all(profile.bw_eff(str(d.get("link", ""))) == 1.0 for _, _, d in G.edges(data=True)):
        return G
    H = G.copy()
    for _, _, d in H.edges(data=True):
        d["bw_Bps"] = d["bw_Bps"] * profile.bw_eff(str(d.get("link", "")))
    return H
