"""The topology data model: a plain ``networkx.DiGraph`` plus the helpers that build and read it.

A topology is graph data only (no simulation objects). Every physical full-duplex link is two
directed edges, one per direction, each with its own bandwidth.

Graph attributes
    name (str), p2p (bool: GPU peer-to-peer allowed; False stages GPU-to-GPU traffic through
    host memory), gpu (GPU model key), gpus_per_node (int), sources (dict citation key -> text).
Node attributes
    kind (one of NODE_KINDS); GPU nodes also rank (0..W-1, contiguous per server) and server.
Edge attributes
    bw_Bps (bytes/s, one direction), latency_s, link (class key), source (key into sources).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import networkx as nx

NODE_KINDS: tuple[str, ...] = ("gpu", "nvswitch", "pcie_switch", "cpu", "host_mem", "nic", "net_switch")
"""Allowed values of the node attribute ``kind``."""

GPU_KEYS: tuple[str, ...] = ("rtx4090", "a100-sxm", "h100-sxm", "h200", "l40s", "generic")
"""GPU model keys the presets use; files may name others (the cost model decides what it knows)."""

GRAPH_ATTRS: tuple[str, ...] = ("name", "p2p", "gpu", "gpus_per_node", "sources")
EDGE_ATTRS: tuple[str, ...] = ("bw_Bps", "latency_s", "link", "source")

Edge = tuple[str, str]
"""A directed edge id ``(u, v)``: hashable, usable as a dict key."""


@dataclass(frozen=True, kw_only=True)
class LinkSpec:
    """One class of physical link: per-direction bandwidth, one-way latency, class key, citation key."""

    bw_Bps: float
    latency_s: float
    link: str
    source: str

    def __post_init__(self) -> None:
        if not (self.bw_Bps > 0 and self.latency_s > 0):
            raise ValueError(f"LinkSpec {self.link}: bw_Bps and latency_s must be positive")


def new_topology(
    *, name: str, p2p: bool, gpu: str, gpus_per_node: int, sources: Mapping[str, str]
) -> nx.DiGraph:
    """Return an empty topology graph with the five required graph attributes set."""
    G = nx.DiGraph()
    G.graph.update(name=name, p2p=bool(p2p), gpu=gpu, gpus_per_node=int(gpus_per_node), sources=dict(sources))
    return G


def add_gpu(G: nx.DiGraph, node: str, *, rank: int, server: int) -> str:
    """Add a GPU node with its global rank and server index; return the node id."""
    G.add_node(node, kind="gpu", rank=int(rank), server=int(server))
    return node


def add_device(G: nx.DiGraph, node: str, kind: str) -> str:
    """Add a non-GPU node (switch, CPU socket, host memory, NIC); return the node id."""
    G.add_node(node, kind=kind)
    return node


def add_link(G: nx.DiGraph, a: str, b: str, spec: LinkSpec, *, duplex: bool = True) -> None:
    """Add the directed edge a->b (and b->a when duplex) with the attributes of ``spec``."""
    attrs = {
        "bw_Bps": float(spec.bw_Bps),
        "latency_s": float(spec.latency_s),
        "link": spec.link,
        "source": spec.source,
    }
    G.add_edge(a, b, **attrs)
    if duplex:
        G.add_edge(b, a, **dict(attrs))


def gpu_nodes(G: nx.DiGraph) -> list[str]:
    """GPU node ids ordered by rank."""
    gpus = [n for n, k in G.nodes(data="kind") if k == "gpu"]
    return sorted(gpus, key=lambda n: G.nodes[n].get("rank", -1))


def world_size(G: nx.DiGraph) -> int:
    """Number of GPUs (ranks) in the topology."""
    return sum(1 for _, k in G.nodes(data="kind") if k == "gpu")


def num_servers(G: nx.DiGraph) -> int:
    """Number of distinct servers that hold GPUs."""
    return len({G.nodes[n]["server"] for n in gpu_nodes(G)})


def rank_node(G: nx.DiGraph, rank: int) -> str:
    """The GPU node id of ``rank`` (linear scan; use gpu_nodes() once for many look-ups)."""
    for n in gpu_nodes(G):
        if G.nodes[n]["rank"] == rank:
            return n
    raise KeyError(rank)


def server_prefix(server: int) -> str:
    """Node-id prefix of one server, e.g. ``n3.``."""
    return f"n{server}."


def path_latency_s(G: nx.DiGraph, path: tuple[Edge, ...]) -> float:
    """Sum of the one-way latencies along a route."""
    return float(sum(G.edges[e]["latency_s"] for e in path))


def path_bottleneck_Bps(G: nx.DiGraph, path: tuple[Edge, ...]) -> float:
    """Smallest per-direction bandwidth along a route (inf for an empty route)."""
    return float(min((G.edges[e]["bw_Bps"] for e in path), default=float("inf")))
