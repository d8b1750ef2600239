"""Routing at scale: early-exit searches give the routes of a full search; reachability without all pairs."""

from __future__ import annotations

import itertools

import networkx as nx
import pytest

from dicesim.errors import TopologyError
from dicesim.topology import all_pairs_routes, check_routable, get_topology, gpu_nodes, group_routes
from dicesim.topology.routing import _adjacency, _shortest_tree, _walk

PRESETS = ("8x-rtx4090-pcie", "4x-l40s-pcie", "dgx-h100", "2x-dgx-h100-ib", "tiny-2x2-ib", "tiny-ring4")


def _full_search_route(G, a, b):
    """Reference: a Dijkstra without early exit (and, without p2p, through the source's nearest memory)."""
    adj = _adjacency(G)
    nodes = {G.nodes[n]["rank"]: n for n in gpu_nodes(G)}
    if G.graph["p2p"]:
        _, pred = _shortest_tree(adj, nodes[a], gpu_transit=True)
        return _walk(pred, nodes[a], nodes[b])
    best, pred = _shortest_tree(adj, nodes[a], gpu_transit=False)
    mem = min((n for n in best if G.nodes[n]["kind"] == "host_mem"), key=lambda n: (best[n], n))
    _, down = _shortest_tree(adj, mem, gpu_transit=False)
    return _walk(pred, nodes[a], mem) + _walk(down, mem, nodes[b])


@pytest.mark.parametrize("name", PRESETS)
def test_group_routes_equal_full_searches(name):
    G = get_topology(name)
    W = len(gpu_nodes(G))
    groups = [tuple(range(W))] + [tuple(range(g, W, 2)) for g in range(2)] + [(W - 1, 0)]
    for members, table in zip(groups, group_routes(G, groups)):
        for a, b in itertools.permutations(members, 2):
            assert table.route(a, b) == _full_search_route(G, a, b)
    assert group_routes(G, [tuple(range(W))])[0].routes == all_pairs_routes(G).routes


def test_check_routable_reports_what_all_pairs_would():
    G = get_topology("dgx-h100")
    check_routable(G)
    H = G.copy()
    H.remove_edge("n0.nvsw0", "n0.gpu5")
    with pytest.raises(TopologyError) as a:
        check_routable(H)
    with pytest.raises(TopologyError) as b:
        all_pairs_routes(H)
    assert str(a.value) == str(b.value) and "not connected" in str(a.value)


def test_check_routable_without_p2p_needs_host_memory_reaching_every_gpu():
    G = get_topology("8x-rtx4090-pcie")
    check_routable(G)
    H = G.copy()
    H.remove_edges_from([("n0.cpu0", "n0.cpu1"), ("n0.cpu1", "n0.cpu0")])  # sockets no longer joined
    assert not nx.is_strongly_connected(H.subgraph([n for n in H if not n.startswith("n0.gpu")]))
    with pytest.raises(TopologyError, match="not connected"):
        check_routable(H)


@pytest.mark.parametrize("name", ["2x-dgx-h100-ib", "tiny-2x2-ib", "4x-dgx-h100-rail", "3x-l40s-roce"])
def test_groups_spread_over_servers_route_as_the_search(name):
    """Groups over several servers are searched by one compiled multi-source Dijkstra (FarTrees):
    the routes, latencies and bottlenecks are those of the Python search, ties included."""
    from dicesim.topology.routing import _rank_map, _table

    G = get_topology(name)
    W = len(gpu_nodes(G))
    groups = [tuple(range(g, W, s)) for s in (2, max(W // 4, 1)) for g in range(min(s, 3))] + [(0, W - 1)]
    adj, by_rank = _adjacency(G), _rank_map(G, None)
    for members, fast in zip(groups, group_routes(G, groups)):
        slow = _table(G, adj, _rank_map(G, members, by_rank))
        assert fast.routes == slow.routes and fast.latency_s == slow.latency_s
        assert fast.bottleneck_Bps == slow.bottleneck_Bps


def test_far_trees_keep_the_tie_break_on_a_graph_full_of_ties():
    """Every edge has the same latency on a grid of switches: many shortest routes tie on latency and
    hops, and the smaller predecessor name must win as in the Python search."""
    from dicesim.topology import add_device, add_gpu, add_link, new_topology
    from dicesim.topology.fartrees import FarTrees
    from dicesim.topology.graph import LinkSpec

    G = new_topology(name="grid", p2p=True, gpu="h100-sxm", gpus_per_node=1, sources={"generic": "test graph"})
    link = LinkSpec(bw_Bps=1e9, latency_s=1e-6, link="generic", source="generic")
    n = 4
    for i, j in itertools.product(range(n), range(n)):
        add_device(G, f"s{i}{j}", "net_switch")
    for i, j in itertools.product(range(n), range(n)):
        for di, dj in ((0, 1), (1, 0)):
            if i + di < n and j + dj < n:
                add_link(G, f"s{i}{j}", f"s{i + di}{j + dj}", link)
                add_link(G, f"s{i + di}{j + dj}", f"s{i}{j}", link)
    for r, (i, j) in enumerate(itertools.product(range(n), range(n))):
        g = add_gpu(G, f"n{r}.gpu0", rank=r, server=r)
        add_link(G, g, f"s{i}{j}", link)
        add_link(G, f"s{i}{j}", g, link)
    gpus = gpu_nodes(G)
    far = FarTrees(G, gpus, 1e15)
    adj = _adjacency(G)
    for src in gpus:
        keys, pred = far.tree(src)
        best, ref = _shortest_tree(adj, src, gpu_transit=True)
        for dst in gpus:
            assert keys[dst] == best[dst]
            if dst != src:
                assert _walk(pred, src, dst) == _walk(ref, src, dst)
