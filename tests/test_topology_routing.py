"""Routing: shortest by latency, independent of edge order, host-staged without peer-to-peer."""

from __future__ import annotations

import random

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dicesim.errors import TopologyError
from dicesim.topology import (
    LinkSpec,
    add_device,
    add_gpu,
    add_link,
    all_pairs_routes,
    get_topology,
    new_topology,
    path_latency_s,
    pcie_server,
    ring,
    route,
    validate_topology,
)

LAT = (1e-6, 2e-6, 3e-6)  # few distinct values on purpose: many equal-latency ties


@st.composite
def random_topologies(draw):
    """Connected random graphs of GPUs and switches with duplex links of tie-prone latencies."""
    n_gpu, n_sw = draw(st.integers(2, 7)), draw(st.integers(0, 4))
    names = [f"n0.gpu{i}" for i in range(n_gpu)] + [f"n0.sw{j}" for j in range(n_sw)]
    G = new_topology(name="rand", p2p=True, gpu="generic", gpus_per_node=n_gpu, sources={"generic": "test"})
    for i in range(n_gpu):
        add_gpu(G, names[i], rank=i, server=0)
    for j in range(n_sw):
        add_device(G, names[n_gpu + j], "pcie_switch")
    order = draw(st.permutations(names))
    for k in range(1, len(order)):  # a random spanning tree keeps it connected
        a = order[draw(st.integers(0, k - 1))]
        lat = draw(st.sampled_from(LAT))
        add_link(G, a, order[k], LinkSpec(bw_Bps=1e9, latency_s=lat, link="x", source="generic"))
    for _ in range(draw(st.integers(0, 8))):
        a, b = draw(st.sampled_from(names)), draw(st.sampled_from(names))
        if a != b and not G.has_edge(a, b):
            add_link(G, a, b, LinkSpec(bw_Bps=1e9, latency_s=draw(st.sampled_from(LAT)), link="x", source="generic"))
    return G


def _shuffled(G: nx.DiGraph, seed: int) -> nx.DiGraph:
    rng = random.Random(seed)
    H = nx.DiGraph()
    H.graph.update(G.graph)
    nodes, edges = list(G.nodes(data=True)), list(G.edges(data=True))
    rng.shuffle(nodes)
    rng.shuffle(edges)
    H.add_nodes_from(nodes)
    H.add_edges_from(edges)
    return H


@given(G=random_topologies(), seed=st.integers(0, 2**16))
@settings(max_examples=60, deadline=None)
def test_routes_are_shortest_paths_and_order_independent(G, seed):
    validate_topology(G)
    table = all_pairs_routes(G)
    by_rank = {d["rank"]: n for n, d in G.nodes(data=True) if d["kind"] == "gpu"}
    for (s, d), path in table.routes.items():
        if s == d:
            assert path == ()
            continue
        assert path[0][0] == by_rank[s] and path[-1][1] == by_rank[d]
        assert all(a[1] == b[0] for a, b in zip(path, path[1:]))
        best = nx.dijkstra_path_length(G, by_rank[s], by_rank[d], weight="latency_s")
        assert path_latency_s(G, path) == pytest.approx(best)
        assert table.latency_s[(s, d)] == pytest.approx(best)
    assert all_pairs_routes(_shuffled(G, seed)).routes == table.routes


@given(sockets=st.integers(1, 3), per_switch=st.integers(1, 3), switches=st.integers(1, 2))
@settings(max_examples=20, deadline=None)
def test_without_p2p_every_route_stages_in_the_source_socket_memory(sockets, per_switch, switches):
    spec = LinkSpec(bw_Bps=1e9, latency_s=1e-6, link="pcie4", source="generic")
    G = pcie_server(sockets=sockets, switches_per_socket=switches, gpus_per_switch=per_switch, gpu_link=spec,
                    uplink=spec, host_mem=spec, socket_link=spec, p2p=False, gpu="rtx4090", name="x")
    validate_topology(G)
    per_socket = switches * per_switch
    for (s, d), path in all_pairs_routes(G).routes.items():
        if s == d:
            continue
        nodes = [path[0][0]] + [v for _, v in path]
        mems = [n for n in nodes if G.nodes[n]["kind"] == "host_mem"]
        assert mems == [f"n0.mem{s // per_socket}"]
        assert [n for n in nodes if G.nodes[n]["kind"] == "gpu"] == [f"n0.gpu{s}", f"n0.gpu{d}"]
        # up through the switch uplink and back down it: both directions carry the bytes
        up = (f"n0.pcie{s // per_switch}", f"n0.cpu{s // per_socket}")
        assert up in path
        if s // per_switch == d // per_switch:
            assert (up[1], up[0]) in path


def test_no_p2p_without_host_memory_is_an_error():
    G = ring(4, 1e9, 1e-6)
    G.graph["p2p"] = False
    with pytest.raises(TopologyError, match="reaches no host_mem node"):
        all_pairs_routes(G)
    with pytest.raises(TopologyError, match="^topology 'ring4': .*host_mem"):
        validate_topology(G)


def test_subset_of_ranks_and_unknown_rank():
    G = get_topology("dgx-h100")
    table = all_pairs_routes(G, [2, 5])
    assert set(table.routes) == {(2, 2), (2, 5), (5, 2), (5, 5)}
    assert table[(2, 5)] == table.route(2, 5) == route(G, 2, 5)
    assert table.edges_used() == {("n0.gpu2", "n0.nvsw0"), ("n0.nvsw0", "n0.gpu5"),
                                  ("n0.gpu5", "n0.nvsw0"), ("n0.nvsw0", "n0.gpu2")}
    with pytest.raises(TopologyError, match="rank 8 does not exist"):
        all_pairs_routes(G, [0, 8])


def test_routes_are_hashable_edge_tuples():
    table = all_pairs_routes(get_topology("8x-rtx4090-pcie"))
    load = {}
    for path in table.routes.values():
        for e in path:
            load[e] = load.get(e, 0) + 1
    # with host staging all 7 peers of GPU 0 pull its bytes up one uplink direction
    assert load[("n0.gpu0", "n0.pcie0")] == 7
    assert load[("n0.pcie0", "n0.cpu0")] == 4 * 7  # 4 GPUs behind the switch, 7 peers each
