"""Cluster presets (16-128 servers): rail-optimised fabrics with cited figures, and what they mean for folding."""

from __future__ import annotations

import pytest
from sim_equal import assert_same_run

from dicesim.errors import TopologyError
from dicesim.sim.api import prepare, simulate
from dicesim.sim.fold import plan_fold
from dicesim.topology import SCALED_NAMES, get_topology, gpu_nodes, num_servers, route, validate_topology, world_size
from dicesim.topology import hardware as hw


@pytest.mark.parametrize("name, gpu, nics, leaves", [
    ("16x-dgx-h100-rail", "h100-sxm", 8, 8), ("33x-dgx-h100-rail", "h100-sxm", 8, 16),
    ("128x-dgx-h100-rail", "h100-sxm", 8, 32), ("16x-l40s-roce", "l40s", 4, 4), ("128x-l40s-roce", "l40s", 4, 16),
])
def test_cluster_presets_have_the_cited_shape(name, gpu, nics, leaves):
    servers = int(name.split("x-")[0])
    G = get_topology(name)
    validate_topology(G)
    assert (world_size(G), num_servers(G), G.graph["gpu"], G.graph["name"]) == (8 * servers, servers, gpu, name)
    kinds = [k for _, k in G.nodes(data="kind")]
    assert kinds.count("nic") == nics * servers and kinds.count("net_switch") == leaves + 1  # leaves + spine
    for u, v, d in G.edges(data=True):
        assert G.has_edge(v, u) and G.graph["sources"][d["source"]].strip()
    # each leaf's uplink carries as much as its 32 node ports (1:1, ib-ndr-spine / eth-spine)
    trunk = G.edges["net.u0.leaf0", "net.spine"]["bw_Bps"]
    assert trunk == hw.LEAF_UPLINKS * (hw.IB_NDR_UPLINK if gpu == "h100-sxm" else hw.ROCE_UPLINK).bw_Bps


def test_rail_routes_stay_on_their_rail_and_cross_the_spine_between_units():
    G = get_topology("64x-dgx-h100-rail")
    nodes = [v for _, v in route(G, 0, 8)]  # GPU 0 of servers 0 and 1: same rail, same unit
    assert nodes == ["n0.nic0", "net.u0.leaf0", "n1.nic0", "n1.gpu0"]
    far = [v for _, v in route(G, 0, 8 * 40)]  # server 40 is in the second unit of 32
    assert "net.spine" in far and "net.u1.leaf0" in far
    assert min(G.edges[e]["bw_Bps"] for e in route(G, 0, 8 * 40)) == hw.IB_NDR.bw_Bps


def test_roce_nics_hang_off_the_pcie_switches():
    G = get_topology("2x-l40s-roce")
    assert sorted(G.predecessors("n0.nic1")) == ["n0.pcie1", "net.u0.leaf1"]
    path = [v for _, v in route(G, 0, 8)]
    assert path[:2] == ["n0.pcie0", "n0.nic0"] and path[-1] == "n1.gpu0"


def test_out_of_range_and_unknown_cluster_names_are_one_line_errors():
    with pytest.raises(TopologyError, match="out of range"):
        get_topology("2049x-dgx-h100-rail")
    with pytest.raises(TopologyError) as exc:
        get_topology("16x-dgx-b200-rail")
    assert all(n in str(exc.value) for n in SCALED_NAMES)


@pytest.mark.parametrize("topology, placement, folds", [
    ("16x-dgx-h100-rail", "contiguous", True),  # each group inside one server
    ("16x-dgx-h100-rail", "strided", True),  # one rail per group, one leaf per rail: nothing shared
    ("64x-dgx-h100-rail", "strided", True),  # two units: the groups of a rail share the uplinks in lock step
    ("64x-l40s-roce", "contiguous", True),
])
def test_folding_follows_the_fabric(topology, placement, folds):
    W = world_size(get_topology(topology))
    spec = prepare(model="XL/2", world_size=W, topology=topology, placement=placement, strategy="dice", steps=2,
                   batch=1).spec
    fold = plan_fold(spec)
    assert fold.applied is folds
    assert bool(fold.shares) is (placement == "strided" and topology.startswith("64x"))


def test_folded_cluster_run_equals_the_full_run():
    kw = dict(model="tiny", num_experts=8, world_size=32, batch=1, image_size=64, topology="4x-l40s-roce",
              strategy="dice", steps=3, profile="l40s")
    full = simulate(**kw, fold=False, reuse=False)
    fast = simulate(**kw)
    assert fast.meta["fold"]["simulated_groups"] == 1 and len(gpu_nodes(get_topology("4x-l40s-roce"))) == 32
    assert_same_run(full, fast)


@pytest.mark.parametrize("name", ["2x-dgx-h100-rail", "33x-dgx-h100-rail", "5x-l40s-roce", "dgx-h100"])
def test_topology_gpus_counts_without_building_the_cluster(name):
    from dicesim.topology import topology_gpus

    assert topology_gpus(name) == world_size(get_topology(name))
