"""Draw a topology graph: nodes by kind in layers (GPUs at the bottom), links by class."""

from __future__ import annotations

from collections import defaultdict

import networkx as nx
import plotly.graph_objects as go

#: vertical layer of each node kind (GPUs bottom, network switches top)
_LAYER = {"gpu": 0, "nic": 1, "nvswitch": 1, "pcie_switch": 1, "cpu": 2, "host_mem": 3, "net_switch": 4}
_SYMBOL = {"gpu": "square", "nvswitch": "diamond", "pcie_switch": "diamond", "cpu": "circle",
           "host_mem": "hexagon", "nic": "triangle-up", "net_switch": "star"}


def topology_layout(G: nx.DiGraph) -> dict[str, tuple[float, float]]:
    """x spreads the nodes of one kind-layer evenly, grouped by server; y is the kind's layer."""
    rows: dict[int, list[str]] = defaultdict(list)
    for n, attrs in G.nodes(data=True):
        rows[_LAYER.get(attrs.get("kind", ""), 5)].append(n)
    pos = {}
    for y, nodes in rows.items():
        nodes.sort(key=lambda n: (G.nodes[n].get("server", -1), G.nodes[n].get("rank", -1), n))
        for i, n in enumerate(nodes):
            pos[n] = ((i + 0.5) / len(nodes), float(y))
    return pos


def fig_topology(G: nx.DiGraph) -> go.Figure:
    """Nodes coloured by kind (hover: id, rank), one line trace per link class (hover: GB/s, us)."""
    pos = topology_layout(G)
    fig = go.Figure()
    by_class: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for u, v, attrs in G.edges(data=True):
        if u < v or not G.has_edge(v, u):  # draw each full-duplex pair once
            by_class[attrs.get("link", "?")].append((u, v))
    for link, edges in sorted(by_class.items()):
        xs, ys, text = [], [], []
        for u, v in edges:
            a = G.edges[u, v]
            label = f"{u} - {v}<br>{link}: {a['bw_Bps'] / 1e9:.1f} GB/s per direction, {a['latency_s'] * 1e6:.2f} us"
            xs += [pos[u][0], pos[v][0], None]
            ys += [pos[u][1], pos[v][1], None]
            text += [label, label, None]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=link, hoverinfo="text", text=text,
                                 line={"width": 1.5}))
    kinds: dict[str, list[str]] = defaultdict(list)
    for n, attrs in G.nodes(data=True):
        kinds[attrs.get("kind", "?")].append(n)
    for kind, nodes in sorted(kinds.items(), key=lambda kv: _LAYER.get(kv[0], 5)):
        hover = [f"{n}" + (f" (rank {G.nodes[n]['rank']})" if "rank" in G.nodes[n] else "") for n in nodes]
        fig.add_trace(go.Scatter(
            x=[pos[n][0] for n in nodes], y=[pos[n][1] for n in nodes], mode="markers", name=kind,
            marker={"size": 12, "symbol": _SYMBOL.get(kind, "circle")}, text=hover, hoverinfo="text"))
    fig.update_layout(title=f"{G.graph.get('name', 'topology')}: {sum(len(v) for v in kinds.values())} nodes",
                      xaxis={"visible": False}, yaxis={"visible": False}, height=420)
    return fig
