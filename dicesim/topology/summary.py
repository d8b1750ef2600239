"""Human-facing summaries of a topology: a dict for programs, a DataFrame of link classes, one line."""

from __future__ import annotations

from collections import Counter
from typing import Any

import networkx as nx
import pandas as pd

from dicesim.topology.graph import NODE_KINDS, gpu_nodes, num_servers, world_size

LINK_COLUMNS = ("link", "between", "directed_edges", "bw_Bps", "latency_s", "source")


def _link_rows(G: nx.DiGraph) -> list[dict[str, Any]]:
    groups: Counter[tuple[str, str, float, float, str]] = Counter()
    for u, v, d in G.edges(data=True):
        between = "<->".join(sorted((G.nodes[u]["kind"], G.nodes[v]["kind"])))
        groups[(d["link"], between, d["bw_Bps"], d["latency_s"], d["source"])] += 1
    rows = [
        dict(zip(LINK_COLUMNS, (link, between, count, bw, lat, src)))
        for (link, between, bw, lat, src), count in groups.items()
    ]
    # Fastest classes first: the order a reader scans a hierarchy (NVLink, PCIe, network).
    return sorted(rows, key=lambda r: (-r["bw_Bps"], r["latency_s"], r["link"], r["between"]))


def describe(G: nx.DiGraph) -> dict[str, Any]:
    """Summary of a topology.

    Keys: name, gpu, p2p, world_size, servers, gpus_per_node, nodes (kind -> count), and links:
    one dict per link class (link, between = node kinds joined, directed_edges, bw_Bps,
    latency_s, source), fastest first. ``pandas.DataFrame(describe(G)['links'])`` is a table.
    """
    kinds = Counter(k for _, k in G.nodes(data="kind"))
    return {
        "name": G.graph["name"],
        "gpu": G.graph["gpu"],
        "p2p": bool(G.graph["p2p"]),
        "world_size": world_size(G),
        "servers": num_servers(G),
        "gpus_per_node": G.graph["gpus_per_node"],
        "nodes": {k: kinds[k] for k in NODE_KINDS if kinds[k]},
        "links": _link_rows(G),
    }


def links_table(G: nx.DiGraph) -> pd.DataFrame:
    """The link classes of describe(G) as a DataFrame with columns LINK_COLUMNS."""
    return pd.DataFrame(_link_rows(G), columns=list(LINK_COLUMNS))


def summary_line(G: nx.DiGraph) -> str:
    """One line such as ``8 x h100-sxm on 1 server, p2p; nvlink4 450 GB/s, 1 us``."""
    info = describe(G)
    gpu_links = [r for r in info["links"] if "gpu" in r["between"].split("<->")]
    slowest = min(info["links"], key=lambda r: r["bw_Bps"], default=None)
    parts = [
        f"{info['world_size']} x {info['gpu']} on {info['servers']} server{'s' if info['servers'] != 1 else ''}",
        "p2p" if info["p2p"] else "no p2p (staged in host memory)",
    ]
    head = ", ".join(parts)
    if not gpu_links or slowest is None:
        return head
    fast = gpu_links[0]
    tail = f"{fast['link']} {fast['bw_Bps'] / 1e9:g} GB/s, {fast['latency_s'] * 1e6:g} us"
    if slowest["bw_Bps"] < fast["bw_Bps"]:
        tail += f"; slowest {slowest['link']} {slowest['bw_Bps'] / 1e9:g} GB/s"
    return f"{head}; {tail}"


def gpu_table(G: nx.DiGraph) -> pd.DataFrame:
    """One row per GPU: rank, node id, server."""
    rows = [{"rank": G.nodes[n]["rank"], "node": n, "server": G.nodes[n]["server"]} for n in gpu_nodes(G)]
    return pd.DataFrame(rows, columns=["rank", "node", "server"])
