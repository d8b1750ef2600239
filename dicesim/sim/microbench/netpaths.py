"""Routes through the NICs that the GPU routing table does not take.

:mod:`dicesim.topology.routing` routes every GPU pair by least latency, so two GPUs of one
server talk over NVLink or PCIe. Two collective implementations send through the NICs anyway:

- NCCL's rings across servers: a ring channel runs "NET n -> GPU a -> GPU b -> .. -> GPU x -> NET n"
  and channel c starts at NET ``c mod nets`` (NVIDIA/nccl ``src/graph/search.cc`` @ 5067397, lines
  827 and 736), so a multi-node all-reduce spreads its rings over every NIC of a server;
  :func:`ring_orders` and :func:`nic_crossing` build one ring per NIC.
- DeepEP's low-latency kernels of February 2025 put every message through the NIC with IBGDA,
  same-server peers included (``csrc/kernels/internode_ll.cu`` @ ebfe47e, lines 142-143; only a
  rank's own messages are a local copy); :func:`rdma_routes` gives those routes.

Routes are tuples of directed edges, as :class:`~dicesim.sim.network.network.FlowNetwork` takes.
"""

from __future__ import annotations

import networkx as nx

from dicesim.topology import num_servers, rank_node
from dicesim.topology.graph import server_prefix

Route = tuple[tuple[str, str], ...]


def _edges(path: list[str]) -> Route:
    return tuple(zip(path[:-1], path[1:]))


def _path(G: nx.DiGraph, a: str, b: str) -> list[str]:
    return nx.shortest_path(G, a, b, weight="latency_s")


def server_nics(G: nx.DiGraph, server: int) -> list[str]:
    """The NIC nodes of ``server`` in their index order (``n<s>.nic<k>``)."""
    pre = server_prefix(server)
    nics = [n for n, k in G.nodes(data="kind") if k == "nic" and n.startswith(pre)]
    return sorted(nics, key=lambda n: int(n.rsplit("nic", 1)[1]))


def nic_gpu(G: nx.DiGraph, nic: str) -> str:
    """The GPU closest to ``nic`` by latency (the one it is attached to, where it is attached to a GPU)."""
    dist = nx.single_source_dijkstra_path_length(G, nic, weight="latency_s")
    gpus = [(d, G.nodes[n]["rank"], n) for n, d in dist.items() if G.nodes[n].get("kind") == "gpu"]
    return min(gpus)[2]


def ring_orders(G: nx.DiGraph) -> list[list[list[int]]]:
    """One ring per NIC of a server: ``rings[c][s]`` is the rank order ring ``c`` visits in server ``s``.

    Ring ``c`` enters every server at the GPU next to NIC ``c`` and runs through the server's GPUs in
    rank order from there (wrapping), so it leaves from the GPU before it; its crossing to the next
    server goes out through NIC ``c`` and in through NIC ``c`` of the next server (:func:`nic_crossing`).
    """
    S = num_servers(G)
    g = G.graph["gpus_per_node"]
    rings = []
    for nic in server_nics(G, 0):
        entry = G.nodes[nic_gpu(G, nic)]["rank"] % g
        rings.append([[s * g + (entry + i) % g for i in range(g)] for s in range(S)])
    return rings


def _inside(G: nx.DiGraph, server: int) -> nx.DiGraph:
    pre = server_prefix(server)
    return G.subgraph([n for n in G if n.startswith(pre)])


def nic_crossing(G: nx.DiGraph, c: int, src_rank: int, dst_rank: int) -> Route:
    """Route of ring ``c`` from ``src_rank`` (leaving its server) to ``dst_rank`` (entering the next)
    through NIC ``c`` of both servers; the legs to and from the NICs stay inside each server."""
    g = G.graph["gpus_per_node"]
    sa, sb = src_rank // g, dst_rank // g
    a, b = rank_node(G, src_rank), rank_node(G, dst_rank)
    nic_a, nic_b = server_nics(G, sa)[c], server_nics(G, sb)[c]
    return (_edges(_path(_inside(G, sa), a, nic_a)) + _edges(_path(G, nic_a, nic_b))
            + _edges(_path(_inside(G, sb), nic_b, b)))


def rdma_routes(G: nx.DiGraph, pairs: list[tuple[int, int]]) -> dict[tuple[int, int], Route]:
    """``(src, dst) -> route`` for each pair of distinct ranks, avoiding every NVLink edge, so a
    same-server pair goes out through the sender's NIC and back in through the receiver's."""
    H = nx.DiGraph()  # a plain copy: Dijkstra over a subgraph view is several times slower
    H.add_edges_from((u, v, {"latency_s": d["latency_s"]}) for u, v, d in G.edges(data=True)
                     if not str(d.get("link", "")).lower().startswith("nvlink"))
    node = {r: n for n, r in G.nodes(data="rank") if r is not None}
    by_src: dict[int, list[int]] = {}
    for a, b in pairs:
        by_src.setdefault(a, []).append(b)
    out = {}
    for a, dsts in sorted(by_src.items()):
        if node[a] not in H:
            raise ValueError(f"rank {a} of {G.graph.get('name', 'the topology')!r} has no route to a NIC")
        paths = nx.single_source_dijkstra_path(H, node[a], weight="latency_s")
        for b in dsts:
            out[(a, b)] = _edges(paths[node[b]])
    return out
